"""Missed trades come from trade ids (matches, heartbeats); sequence jumps are normal, decreases are not."""

from __future__ import annotations

import pytest

from rtca.feed.capture import Capture
from rtca.feed.gaps import MAX_GAP, RESYNC_AFTER, GapDetector, TradeGap
from rtca.feed.protocol import Message, parse_frame, parse_message


def match(trade_id: int, sequence: int, product: str = "BTC-USD", kind: str = "match") -> Message:
    return parse_message({"type": kind, "trade_id": trade_id, "sequence": sequence, "product_id": product,
                          "price": "1", "size": "1", "side": "buy", "time": "2024-01-01T00:00:00Z"})


def heartbeat(last_trade_id: int, sequence: int, product: str = "BTC-USD") -> Message:
    return parse_message({"type": "heartbeat", "last_trade_id": last_trade_id, "sequence": sequence,
                          "product_id": product, "time": "2024-01-01T00:00:00Z"})


def ticker(trade_id: int, sequence: int, product: str = "BTC-USD") -> Message:
    return parse_message({"type": "ticker", "trade_id": trade_id, "sequence": sequence, "product_id": product,
                          "price": "1"})


def observe_all(messages: list[Message]) -> tuple[GapDetector, list[TradeGap]]:
    detector = GapDetector()
    gaps = [gap for m in messages if (gap := detector.observe(m)) is not None]
    return detector, gaps


def test_consecutive_trades_have_no_gap() -> None:
    detector, gaps = observe_all([match(10, 100, kind="last_match"), match(11, 105), ticker(11, 105), match(12, 190)])
    assert gaps == [] and detector.missed_trades == 0 and detector.out_of_order == 0


def test_skipped_trade_ids_make_a_gap_with_product_and_count() -> None:
    detector, gaps = observe_all([match(10, 100), match(11, 101), match(15, 102), match(3, 1, "ETH-USD"),
                                  match(5, 2, "ETH-USD")])
    assert gaps == [TradeGap("BTC-USD", 12, 14, "match"), TradeGap("ETH-USD", 4, 4, "match")]
    assert [g.missed for g in gaps] == [3, 1]
    assert (detector.missed_trades, detector.gaps) == (4, 2)


def test_a_heartbeat_ahead_of_the_last_match_reveals_missed_trades() -> None:
    _, gaps = observe_all([match(10, 100), heartbeat(10, 101), heartbeat(13, 120), match(14, 121)])
    assert gaps == [TradeGap("BTC-USD", 11, 13, "heartbeat")]


def test_heartbeats_of_a_product_without_matches_say_nothing() -> None:
    detector, gaps = observe_all([heartbeat(10, 100), heartbeat(50, 200)])
    assert gaps == [] and detector.missed_trades == 0


def test_ticker_trade_ids_may_jump() -> None:
    _, gaps = observe_all([ticker(10, 100), ticker(20, 200)])
    assert gaps == []


def test_repeated_trades_are_not_gaps() -> None:
    detector, gaps = observe_all([match(10, 100), match(11, 101), match(11, 101, kind="last_match")])
    assert gaps == [] and detector.missed_trades == 0 and detector.out_of_order == 0


def test_a_sequence_jump_alone_is_normal() -> None:
    detector, gaps = observe_all([match(10, 100), match(11, 5000), heartbeat(11, 9000), match(12, 9001)])
    assert gaps == [] and detector.out_of_order == 0


def test_a_decreasing_sequence_is_out_of_order() -> None:
    detector, gaps = observe_all([match(10, 100), match(11, 110), match(9, 90), match(12, 120)])
    assert gaps == [] and detector.out_of_order == 1 and detector.missed_trades == 0


def test_state_frames_of_a_resubscription_are_not_out_of_order() -> None:
    # The heartbeat channel is ahead; a resubscription's last_match and ticker carry the older trade's sequence.
    messages = [match(10, 100), heartbeat(10, 150), match(10, 100, kind="last_match"), ticker(10, 100),
                match(11, 160)]
    detector, gaps = observe_all(messages)
    assert gaps == [] and detector.out_of_order == 0


def test_the_shipped_capture_has_no_gaps(shipped: Capture) -> None:
    detector = GapDetector()
    for frame in shipped.frames:
        detector.observe(parse_frame(frame.text))
    assert (detector.missed_trades, detector.gaps, detector.out_of_order) == (0, 0, 0)


def test_a_counter_that_went_back_for_good_is_taken_as_a_new_start() -> None:
    # one bogus match far ahead (or the exchange restarting its numbers): the frames after it look old ...
    bogus = [match(10, 100), match(2**62, 2**62)]
    after = [match(11 + i, 101 + i) for i in range(RESYNC_AFTER + 5)]
    detector, gaps = observe_all([*bogus, *after, match(11 + RESYNC_AFTER + 7, 200)])
    # ... until RESYNC_AFTER of them in a row: then the checks go on from there, and find a real gap again
    assert detector.resyncs == 1 and detector.out_of_order == RESYNC_AFTER - 1
    assert gaps[-1] == TradeGap("BTC-USD", 11 + RESYNC_AFTER + 5, 11 + RESYNC_AFTER + 6, "match")


def test_a_few_old_frames_do_not_move_the_start() -> None:
    old = [match(5, 50) for _ in range(RESYNC_AFTER - 1)]
    detector, gaps = observe_all([match(10, 100), *old, match(11, 101), *old, match(13, 102)])
    assert detector.resyncs == 0 and [g.missed for g in gaps] == [1]


@pytest.mark.parametrize("bogus", [match(2**62, 101), heartbeat(2**63 - 1, 101)])
def test_a_trade_id_implausibly_far_ahead_is_passed_over_not_counted_as_missed(bogus: Message) -> None:
    """One bogus frame made `missed_trades` 4e18 (9e18 from a heartbeat) for good, and the real trades after it
    looked like repeats until a resync."""
    later = [match(11 + i, 102 + i) for i in range(60)]
    detector, gaps = observe_all([match(10, 100), bogus, *later[:30], match(11 + 32, 200)])
    assert (detector.implausible, detector.resyncs, detector.missed_trades) == (1, 0, 2)
    assert gaps == [TradeGap("BTC-USD", 11 + 30, 11 + 31, "match")]  # the real gap after it is still found


def test_trade_ids_that_stay_far_ahead_are_a_new_start() -> None:
    """The numbers really moved on (RESYNC_AFTER frames in a row that far ahead): no trades counted as missed."""
    jumped = [match(10**9 + i, 101 + i) for i in range(RESYNC_AFTER + 5)]
    detector, gaps = observe_all([match(10, 100), *jumped, match(10**9 + RESYNC_AFTER + 7, 300)])
    assert (detector.resyncs, detector.implausible) == (1, RESYNC_AFTER - 1)
    assert gaps == [TradeGap("BTC-USD", 10**9 + RESYNC_AFTER + 5, 10**9 + RESYNC_AFTER + 6, "match")]
    assert detector.missed_trades == 2


def test_a_gap_within_the_plausible_range_is_counted_whole() -> None:
    detector, gaps = observe_all([match(10, 100), match(10 + MAX_GAP + 1, 101)])
    assert detector.missed_trades == MAX_GAP and detector.implausible == 0


def test_per_product_counters_stay_bounded_however_many_products_come(monkeypatch: pytest.MonkeyPatch) -> None:
    """A feed of ever new product ids grew ingest's memory without end (a hostile server: 1.7 GB in 30 s)."""
    import rtca.feed.gaps as gaps

    monkeypatch.setattr(gaps, "MAX_PRODUCTS", 50)
    detector, found = observe_all([match(1, i, f"P{i}-USD") for i in range(500)])
    assert found == [] and len(detector._last_trade) == 50 and len(detector._last_sequence) == 50
    assert "P499-USD" in detector._last_trade and "P0-USD" not in detector._last_trade  # the longest-known go
    assert detector.observe(match(3, 1000, "P499-USD")) == TradeGap("P499-USD", 2, 2, "match")  # still watched
    for i in range(500):  # and those kept only for frames behind or far ahead
        product = f"Q{i}-USD"
        detector.observe(match(5, 10, product))
        detector.observe(match(5 + gaps.MAX_GAP * 2, 11, product))  # far ahead: counted towards a resync
        detector.observe(match(6, 5, product))  # behind: counted towards a resync
    assert detector.out_of_order >= 500 and detector.implausible >= 500
    assert len(detector._behind) == 50 and len(detector._ahead) == 50


def test_a_product_id_longer_than_the_routers_limit_is_malformed_as_the_router_says() -> None:
    from rtca.feed.protocol import MAX_PRODUCT_ID, MalformedFrame
    from rtca.functions.routing import MAX_PRODUCT_ID as ROUTER_MAX_PRODUCT_ID

    assert MAX_PRODUCT_ID == ROUTER_MAX_PRODUCT_ID
    assert match(1, 1, "X" * MAX_PRODUCT_ID).product == "X" * MAX_PRODUCT_ID  # at the limit: like any other
    with pytest.raises(MalformedFrame, match="product_id: not 1 to 64 characters"):
        match(1, 1, "X" * 1_000_000)

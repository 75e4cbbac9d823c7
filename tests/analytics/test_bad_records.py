"""Records the router lets through but a kernel must still refuse or survive: a refused record changes no state
(the function dead-letters it, so its effect must not also be kept), and no single record stops a product's
analytics."""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import pytest

from rtca.analytics.alerts import AlertEngine, parse_rules
from rtca.analytics.book import BookTracker
from rtca.analytics.flow import TradeFlow
from rtca.analytics.volatility import Volatility


def match(t: int, trade_id: int | None, kind: str = "match", **fields: Any) -> dict[str, Any]:
    record = {"type": kind, "product_id": "P", "event_ms": t, "received_ms": t, "side": "sell", "price": 10.0,
              "size": 1.0, **fields}  # fmt: skip
    if trade_id is not None:
        record["trade_id"] = trade_id
    return record


def test_trade_flow_counts_a_trade_sent_again_once() -> None:
    flow = TradeFlow(60_000)
    flow.update(match(1_000, 7, "last_match"))  # what a first subscription gets: counted
    flow.update(match(2_000, 8))
    flow.update(match(3_000, 8, "last_match"))  # a resubscription sends the last trade again
    flow.update(match(4_000, 8))  # and a reconnect may replay it
    flow.update(match(5_000, 9))
    [window] = flow.flush()
    assert window["buy_count"] == 3 and window["buy_volume"] == 3.0


def test_trade_flow_remembers_the_last_trade_across_windows_and_a_restart() -> None:
    flow = TradeFlow(1_000)
    flow.update(match(500, 7))
    assert len(flow.update(match(1_500, 8))) == 1  # closes the first window
    resumed = TradeFlow.from_state(flow.state())
    assert resumed.update(match(1_600, 8, "last_match")) == []
    [window] = resumed.flush()
    assert window["buy_count"] == 1


def test_trade_flow_counts_trades_whose_ids_start_again() -> None:
    flow = TradeFlow(60_000)
    for t, trade_id in ((1_000, 900), (2_000, 901), (3_000, 1), (4_000, 2)):  # a replay restarted, say
        flow.update(match(t, trade_id))
    [window] = flow.flush()
    assert window["buy_count"] == 4


@pytest.mark.parametrize("fields", [
    {"received_ms": "x"}, {"size": float("nan")}, {"size": -3.0}, {"price": float("inf")}, {"price": 0.0},
    {"side": ["buy"]}, {"trade_id": "9"},
])  # fmt: skip
def test_trade_flow_refuses_a_bad_match_before_changing_anything(fields: dict[str, Any]) -> None:
    flow = TradeFlow(60_000)
    flow.update(match(1_000, 1))
    before = copy.deepcopy(flow.state())
    with pytest.raises((TypeError, ValueError)):
        flow.update(match(2_000, 2, **fields))
    assert flow.state() == before


def ticker(t: int, price: float, **fields: Any) -> dict[str, Any]:
    return {"product_id": "P", "event_ms": t, "received_ms": t, "price": price, **fields}


def test_volatility_survives_extreme_prices() -> None:
    vol = Volatility(1_000)
    with pytest.raises(ValueError):  # beyond any market value (`rtca.analytics.checks.MAX_VALUE`)
        vol.update(ticker(0, 1e300))
    for t, price in ((0, 9e99), (100, 1.0), (200, 1e-300)):
        vol.update(ticker(t, price))
    [window] = vol.update(ticker(1_000, 1.0))  # closing it computed log(1e-300 / 1e300) = log(0) before
    assert math.isfinite(window["log_return"]) and math.isfinite(window["realized_vol"])
    assert vol.update(ticker(1_100, 1.1)) == []  # and the product goes on


def test_volatility_refuses_a_bad_receive_time_before_changing_anything() -> None:
    vol = Volatility(60_000)
    vol.update(ticker(0, 100.0))
    before = copy.deepcopy(vol.state())
    with pytest.raises(TypeError):
        vol.update(ticker(100, 101.0, received_ms="x"))
    assert vol.state() == before


def test_book_update_with_one_bad_change_changes_nothing() -> None:
    books = BookTracker(cadence_ms=1)
    books.update({"type": "snapshot", "product_id": "P", "event_ms": 0, "bids": [[9.0, 1.0]], "asks": [[11.0, 1.0]]})
    book = books.state_of("P").book
    before = (dict(book.bids), dict(book.asks))
    for changes in ([["buy", 10.0, 2.0], ["bid", 10.5, 1.0]], [["buy", 10.0, 2.0], ["sell", "nan", 1.0]],
                    [["buy", 10.0, 2.0], ["sell", float("nan"), 1.0]]):
        with pytest.raises((TypeError, ValueError)):
            books.update({"type": "l2update", "product_id": "P", "event_ms": 5, "changes": changes})
        assert (book.bids, book.asks) == before


def test_book_summaries_start_again_after_a_snapshot() -> None:
    books = BookTracker(cadence_ms=1_000)
    snapshot = {"type": "snapshot", "product_id": "P", "bids": [[9.0, 1.0]], "asks": [[11.0, 1.0]]}
    assert len(books.update({**snapshot, "event_ms": 10 * 60_000})) == 1  # a time far ahead, say
    assert books.update({"type": "l2update", "product_id": "P", "event_ms": 1_000,
                         "changes": [["buy", 9.5, 1.0]]}) == []  # older than the last summary: none
    assert len(books.update({**snapshot, "event_ms": 2_000})) == 1  # a resync publishes again


def gap(first: Any, last: Any, missed: Any) -> dict[str, Any]:
    return {"kind": "gap", "ts_ms": 1, "source": "ws", "product_id": "X", "first_missing": first,
            "last_missing": last, "missed": missed, "detected_by": "match"}  # fmt: skip


@pytest.mark.parametrize(("first", "last", "missed"), [(1e30, 1e30, 5), (7.9, 9, 3), (1, 3, 2**70), (-1, 3, 5)])
def test_alerts_refuse_gap_counts_no_long_holds_before_keeping_them(first: Any, last: Any, missed: Any) -> None:
    engine = AlertEngine(parse_rules([{"name": "gaps", "kind": "missed_trades", "threshold": 0}]))
    with pytest.raises(ValueError):
        engine.evaluate(gap(first, last, missed))
    assert engine.state_of("X") == AlertEngine(engine.rules).state_of("X")
    assert len(engine.evaluate(gap(10, 12, 3))) == 1  # the product's alerts go on


def test_a_price_older_than_the_window_neither_fires_nor_grows_the_window() -> None:
    engine = AlertEngine(parse_rules([{"name": "move", "kind": "price_move", "threshold": 1.0, "window_s": 60}]))
    assert engine.evaluate(ticker(600_000, 100.0)) == []
    assert engine.evaluate(ticker(0, 90.0)) == []  # ten minutes late: not a move within 60 s
    for t in range(1, 200):
        engine.evaluate(ticker(600_000 + t * 1_000, 100.0))
    assert len(engine._prices[("move", "P")]) <= 61


def test_a_refused_level2_record_of_a_new_product_keeps_nothing_of_it() -> None:
    books = BookTracker()
    with pytest.raises(TypeError):
        books.update({"type": "snapshot", "product_id": "Q", "event_ms": 0, "bids": [[9.0, "x"]], "asks": []})
    with pytest.raises(ValueError):
        books.update({"type": "l2update", "product_id": "Q", "event_ms": 0, "changes": [["bid", 1.0, 1.0]]})
    assert books.products == {}


@pytest.mark.parametrize("engine, record", [
    (lambda: TradeFlow(1_000), match(0, 1)),
    (lambda: Volatility(1_000), ticker(0, 10.0)),
])  # fmt: skip
@pytest.mark.parametrize("event_ms", [-2**63, -1, 2**53, 1_000 + 5 * 60_000 + 1])
def test_a_window_kernel_refuses_an_event_time_it_cannot_window(engine: Any, record: dict[str, Any],
                                                                event_ms: int) -> None:  # fmt: skip
    """Out of [0, 2**53), or more than 5 minutes after its receipt (as the router allows): a window at such a time
    would not encode (64-bit) or make every later record of its product late. Refused before anything changes."""
    kernel = engine()
    kernel.update({**record, "event_ms": 500, "received_ms": 500})
    before = copy.deepcopy(kernel.state())
    with pytest.raises((TypeError, ValueError)):
        kernel.update({**record, "event_ms": event_ms, "received_ms": 1_000})
    assert kernel.state() == before
    later = {**record, "event_ms": 1_500, "received_ms": 1_500, **({"trade_id": 2} if "trade_id" in record else {})}
    assert len(kernel.update(later)) == 1  # and the product goes on


def test_trade_flow_refuses_prices_and_sizes_whose_notional_overflows() -> None:
    """1e200 x 1e200 is inf, stored as JSON null: the resumed state could then not add to it."""
    flow = TradeFlow(1_000)
    for fields in ({"price": 1e200, "size": 1e200}, {"price": 10.0, "size": 1e100}):
        with pytest.raises(ValueError):
            flow.update(match(0, 1, **fields))
    flow.update(match(0, 1))
    resumed = TradeFlow.from_state(flow.state())
    [window] = resumed.update(match(1_000, 2))
    assert window["buy_notional"] == 10.0


@pytest.mark.parametrize("window", [{"start_ms": 0, "buy_notional": None}, {"start_ms": 0, "buy_volume": "1"},
                                    {"start_ms": 0, "sell_notional": float("inf")}, {"start_ms": None}])
def test_a_window_state_that_is_not_finite_numbers_is_not_resumed(window: dict[str, Any]) -> None:
    flow = TradeFlow(1_000)
    with pytest.raises((TypeError, ValueError)):
        flow.resume_product("P", {"late": 0, "window": window})
    assert "P" not in flow.products
    flow.resume_product("P", {"late": 0, "window": {"start_ms": 0, "last_price": None}})  # None where it starts so


def test_a_book_summary_carries_a_sequence_only_as_pinot_can_store_it() -> None:
    """coinbase_book.sequence is a LONG: Pinot drops a row whose value is a string and mis-stores an object."""
    books = BookTracker(cadence_ms=1)
    books.update({"type": "snapshot", "product_id": "P", "event_ms": 0, "bids": [[9.0, 1.0]], "asks": [[11.0, 1.0]]})
    got = []
    for t, sequence in enumerate((5, "5", {"x": 1}, 2**63, None), start=1):
        [summary] = books.update({"type": "l2update", "product_id": "P", "event_ms": t, "sequence": sequence,
                                  "changes": [["buy", 9.0, float(t)]]})  # fmt: skip
        got.append(summary["sequence"])
    assert got == [5, None, None, None, None]


@pytest.mark.parametrize("received_ms", ["soon", [1, 2], 1.5, -1, 2**63])
def test_a_level2_record_whose_receive_time_no_long_column_holds_is_refused_before_changing_the_book(
        received_ms: Any) -> None:  # fmt: skip
    """Its summary carried it into the book table's LONG column, which Pinot fails on: a summary nobody saw."""
    books = BookTracker(cadence_ms=1)
    books.update({"type": "snapshot", "product_id": "P", "event_ms": 0, "bids": [[9.0, 1.0]], "asks": [[11.0, 1.0]]})
    with pytest.raises((TypeError, ValueError), match="received_ms"):
        books.update({"type": "l2update", "product_id": "P", "event_ms": 5, "received_ms": received_ms,
                      "changes": [["buy", 9.0, 5.0]]})  # fmt: skip
    assert books.state_of("P").book.bids == {9.0: 1.0}


@pytest.mark.parametrize("event_ms", [1_000.0, "1000", None])
def test_a_level2_record_without_an_integer_event_time_is_refused_before_changing_the_book(event_ms: Any) -> None:
    """It was applied without a summary or a dead letter: a change nobody saw."""
    books = BookTracker(cadence_ms=1)
    books.update({"type": "snapshot", "product_id": "P", "event_ms": 0, "bids": [[9.0, 1.0]], "asks": [[11.0, 1.0]]})
    with pytest.raises(TypeError, match="event_ms"):
        books.update({"type": "l2update", "product_id": "P", "event_ms": event_ms, "changes": [["buy", 9.0, 5.0]]})
    assert books.state_of("P").book.bids == {9.0: 1.0}


@pytest.mark.parametrize("fields", [
    {"bids": [[1e308, 1e308]]},  # finite, but its sums are not: a null mid and imbalance, dropped by Pinot
    {"bids": {"12": 1}},  # a dict's keys read as a level "1", "2" before
    {"bids": [["9.0", "1.0"]]},  # text: the router writes numbers
    {"event_ms": -5000},
    {"event_ms": 2**60},
    {"event_ms": "soon"},
])  # fmt: skip
def test_a_snapshot_outside_the_record_contract_is_refused_and_the_book_goes_on(fields: dict[str, object]) -> None:
    books = BookTracker(cadence_ms=1_000)
    snapshot = {"type": "snapshot", "product_id": "P", "event_ms": 1_000, "received_ms": 1_000,
                "bids": [[9.0, 1.0]], "asks": [[11.0, 1.0]]}  # fmt: skip
    with pytest.raises((TypeError, ValueError)):
        books.update({**snapshot, **fields})
    assert books.products == {}
    [summary] = books.update(snapshot)
    assert summary["mid"] == 10.0 and summary["imbalance"] == 0.0


@pytest.mark.parametrize("engine, record", [
    (lambda: TradeFlow(1_000), match(0, None)),
    (lambda: Volatility(1_000), ticker(0, 100.0)),
    (lambda: BookTracker(cadence_ms=1_000), {"type": "snapshot", "product_id": "P", "bids": [[9.0, 1.0]],
                                            "asks": [[11.0, 1.0]]}),
])  # fmt: skip
def test_an_event_far_ahead_of_the_clock_is_refused_without_a_receive_time(engine, record) -> None:  # type: ignore[no-untyped-def]
    """A record published straight to a typed topic, without ``received_ms``: bounded by the clock instead; else
    one record in 2036 would make every later record of its product late, for good."""
    now = time.time_ns() // 1_000_000
    tracker = engine()
    product = record["product_id"]
    ahead = {**record, "event_ms": now + 10 * 365 * 86_400_000}
    ahead.pop("received_ms", None)
    with pytest.raises(ValueError, match="after its receipt"):
        tracker.update(ahead)
    first = tracker.update({**record, "event_ms": now - 5_000, "received_ms": now})
    second = tracker.update({**record, "event_ms": now + 60_000, "received_ms": now + 60_000})
    assert first + second and {r["product_id"] for r in first + second} == {product}  # its windows go on


@pytest.mark.parametrize("engine, record", [
    (lambda: TradeFlow(1_000), match(0, None)),
    (lambda: Volatility(1_000), ticker(0, 100.0)),
    (lambda: BookTracker(cadence_ms=1_000), {"type": "snapshot", "product_id": "P", "bids": [[9.0, 1.0]],
                                            "asks": [[11.0, 1.0]]}),
    (lambda: AlertEngine(parse_rules([{"name": "r", "kind": "price_move", "threshold": 1.0}])), ticker(0, 100.0)),
])  # fmt: skip
def test_an_event_far_ahead_of_the_clock_is_refused_whatever_its_receive_time(engine, record) -> None:  # type: ignore[no-untyped-def]
    """A receive time of 2286 let an event time of 2286 pass as "at most 5 minutes after its receipt": one such
    record made every later record of its product late, for good. The receive time is bounded by the clock."""
    now = time.time_ns() // 1_000_000
    tracker = engine()
    update = tracker.evaluate if isinstance(tracker, AlertEngine) else tracker.update
    far = 10_000_000_000_000  # 2286-11-20
    try:
        update({**record, "event_ms": far, "received_ms": far})
    except ValueError as exc:
        assert "after the clock" in str(exc)
    else:
        assert isinstance(tracker, AlertEngine)  # the alerts pass a price outside the contract over (no state)
    later = [{**record, "event_ms": now + t, "received_ms": now + 4 * 60_000, "price": price}  # a skew it tolerates
             for t, price in ((60_000, 100.0), (61_000, 103.0), (62_000, 100.0))]  # fmt: skip
    out = [r for one in later for r in update(one)]
    assert out and {r["product_id"] for r in out} == {"P"}  # not late: its windows (and price window) go on

"""Alert rules: boundary cases, hysteresis (no repeat while the condition persists), the shipped YAML."""

from __future__ import annotations

import time

import pytest

from rtca.analytics.alerts import AlertEngine, Rule, book_problem_alert, load_rules, parse_rules
from rtca.settings import PROJECT_ROOT


def engine(**rule) -> AlertEngine:
    return AlertEngine(parse_rules([{"name": "r", **rule}]))


def test_shipped_rules_load() -> None:
    rules = load_rules(PROJECT_ROOT / "infra" / "alerts.yaml")
    assert {r.kind for r in rules} == {"price_move", "vol_zscore", "spread_bps", "feed_stalled", "missed_trades"}


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_rules([{"name": "x", "kind": "nope", "threshold": 1}])
    with pytest.raises(ValueError):
        parse_rules([{"name": "x", "kind": "spread_bps", "threshold": 1, "clear": 2}])
    with pytest.raises(ValueError):
        parse_rules([{"name": "x", "kind": "spread_bps", "threshold": 1, "typo": 2}])


def book(spread_bps: float, t: int, product: str = "P", valid: bool = True) -> dict:
    return {"product_id": product, "event_ms": t, "received_ms": t, "spread_bps": spread_bps, "valid": valid}


def test_spread_boundary_and_hysteresis() -> None:
    e = engine(kind="spread_bps", threshold=50.0, clear=40.0)
    assert e.evaluate(book(50.0, 1)) == []  # exactly at the threshold: not over
    [a] = e.evaluate(book(50.01, 2))
    assert (a["rule"], a["product_id"], a["value"], a["threshold"], a["event_ms"]) == ("r", "P", 50.01, 50.0, 2)
    assert a["alert_id"] == "r:P:2" and a["severity"] == "warning" and a["message"]
    assert e.evaluate(book(80.0, 3)) == []  # persists: no repeat
    assert e.evaluate(book(45.0, 4)) == []  # under threshold but above clear: still not re-armed
    assert e.evaluate(book(60.0, 5)) == []
    assert e.evaluate(book(40.0, 6)) == []  # at clear: re-armed
    assert len(e.evaluate(book(51.0, 7))) == 1
    assert len(e.evaluate(book(51.0, 8, product="Q"))) == 1  # per product
    assert e.evaluate(book(99.0, 9, valid=False)) == []  # an invalid book is not a spread


def tick(silence_ms: int | None, t: int) -> dict:
    return {"kind": "tick", "ts_ms": t, "source": "replay", "silence_ms": silence_ms, "last_message_ms": 0}


def test_feed_stalled() -> None:
    e = engine(kind="feed_stalled", threshold=10.0, clear=2.0)
    assert e.evaluate(tick(None, 1)) == []  # no frame yet
    assert e.evaluate(tick(10_000, 2)) == []  # exactly 10 s: not over
    [a] = e.evaluate(tick(10_001, 3))
    assert a["product_id"] == "replay" and a["value"] == 10.001 and a["event_ms"] == 3
    assert e.evaluate(tick(11_000, 4)) == [] and e.evaluate(tick(60_000, 5)) == []  # still stalled
    assert e.evaluate(tick(2_500, 6)) == []  # recovering, above clear
    assert e.evaluate(tick(12_000, 7)) == []  # not re-armed yet
    assert e.evaluate(tick(100, 8)) == []  # cleared
    assert len(e.evaluate(tick(10_500, 9))) == 1


def gap(first: int, last: int, product: str = "P") -> dict:
    return {"kind": "gap", "ts_ms": 5, "source": "ws", "product_id": product, "first_missing": first,
            "last_missing": last, "missed": last - first + 1, "detected_by": "match"}


def test_missed_trades_each_new_gap_once() -> None:
    e = engine(kind="missed_trades", threshold=0)
    [a] = e.evaluate(gap(10, 12))
    assert a["value"] == 3 and a["alert_id"] == "r:P:10"
    assert e.evaluate(gap(10, 12)) == []  # the same gap again (redelivered): not repeated
    assert len(e.evaluate(gap(20, 20))) == 1  # a new gap
    big = engine(kind="missed_trades", threshold=5)
    assert big.evaluate(gap(1, 5)) == []  # 5 missed: not over 5
    assert len(big.evaluate(gap(10, 15))) == 1  # 6 missed


def ticker(price: float, t: int) -> dict:
    return {"type": "ticker", "product_id": "P", "price": price, "event_ms": t, "received_ms": t}


def test_price_move_within_window() -> None:
    e = engine(kind="price_move", threshold=1.0, clear=0.5, window_s=60)
    assert e.evaluate(ticker(100.0, 0)) == []
    assert e.evaluate(ticker(101.0, 30_000)) == []  # exactly +1%: not over
    [a] = e.evaluate(ticker(101.01, 59_000))
    assert a["value"] == pytest.approx(1.01)
    assert e.evaluate(ticker(102.0, 60_000)) == []  # persists
    # 100.0 (t=0) and 101.0 (t=30s) fall out of the 60 s window as time passes
    assert e.evaluate(ticker(101.9, 100_000)) == []  # vs 101.01..102: under 1%, but above clear 0.5%
    assert e.evaluate(ticker(101.9, 125_000)) == []  # window now 101.9, 101.9: 0% -> re-armed
    [b] = e.evaluate(ticker(100.8, 126_000))  # down 1.08% from 101.9
    assert b["value"] == pytest.approx((1 - 100.8 / 101.9) * 100)


def test_a_price_far_ahead_or_outside_the_contract_does_not_pin_the_window() -> None:
    """Sent straight to the ticker topic: a price in 2036 (no receive time) would make every later one "older than
    the window" for good; a price of 1e200 or as text would be compared with real ones."""
    now = time.time_ns() // 1_000_000
    e = engine(kind="price_move", threshold=1.0, window_s=60)
    assert e.evaluate({**ticker(50.0, now + 10 * 365 * 86_400_000), "received_ms": None}) == []
    assert e.evaluate(ticker(1e200, now)) == [] and e.evaluate(ticker("150", now)) == []  # type: ignore[arg-type]
    assert e.evaluate({"type": "ticker", "product_id": "P", "price": 100.0}) == []  # no event time at all
    assert e.evaluate(ticker(100.0, now)) == []
    [alert] = e.evaluate(ticker(102.0, now + 1_000))
    assert alert["value"] == pytest.approx(2.0)


def test_price_move_old_prices_do_not_count() -> None:
    e = engine(kind="price_move", threshold=1.0, window_s=60)
    e.evaluate(ticker(100.0, 0))
    assert e.evaluate(ticker(102.0, 60_001)) == []  # the 100.0 is 60.001 s old: outside the window


def vol(v: float | None, t: int) -> dict:
    return {"product_id": "P", "event_ms": t, "window_ms": 60_000, "realized_vol": v, "price": 1.0}


def test_volatility_zscore() -> None:
    e = engine(kind="vol_zscore", threshold=3.0, clear=1.0, history=5, min_history=3)
    assert e.evaluate(vol(1.0, 0)) == [] and e.evaluate(vol(2.0, 1)) == []
    assert e.evaluate(vol(100.0, 2)) == []  # only 2 values of history: no z-score yet
    e = engine(kind="vol_zscore", threshold=3.0, clear=1.0, history=5, min_history=3)
    for i, v in enumerate([1.0, 2.0, 3.0]):  # mean 2, std 1
        assert e.evaluate(vol(v, i)) == []
    assert e.evaluate(vol(None, 3)) == []  # a window without enough prices is skipped
    # history [1, 2, 3]: z = (5 - 2) / 1 = 3.0 -> not over
    assert e.evaluate(vol(5.0, 4)) == []
    # history [1, 2, 3, 5]: mean 2.75, std 1.7078; z(8.0) = 3.074 -> fires
    [a] = e.evaluate(vol(8.0, 5))
    assert a["value"] == pytest.approx((8.0 - 2.75) / 1.707825127659933)
    assert e.evaluate(vol(50.0, 6)) == []  # still spiking: no repeat


def test_book_problem_alert() -> None:
    a = book_problem_alert({"product_id": "P", "event_ms": 7, "received_ms": 8, "problem": "crossed",
                            "detail": "best bid 2 >= best ask 1", "valid": False})
    assert a["rule"] == "book_crossed" and a["product_id"] == "P" and a["event_ms"] == 7


def test_rule_dataclass_defaults() -> None:
    assert Rule("x", "spread_bps", 5.0).clear_level == 5.0


# --- more boundaries per rule: what fires and what must not -----------------------------------------------------------
def test_spread_without_a_value_or_with_a_non_finite_one_never_fires() -> None:
    e = engine(kind="spread_bps", threshold=50.0)
    assert e.evaluate({"product_id": "P", "event_ms": 1, "spread_bps": None, "valid": True}) == []
    assert e.evaluate(book(float("nan"), 2)) == [] and e.evaluate(book(float("inf"), 3)) == []
    assert len(e.evaluate(book(50.000001, 4))) == 1  # just over: fires (and the bad values armed nothing)


def test_feed_stalled_re_arms_exactly_at_clear_and_is_kept_per_source() -> None:
    e = engine(kind="feed_stalled", threshold=10.0, clear=2.0)
    assert len(e.evaluate(tick(15_000, 1))) == 1
    assert e.evaluate(tick(2_001, 2)) == []  # just above clear: still disarmed
    assert e.evaluate(tick(11_000, 3)) == []
    assert e.evaluate(tick(2_000, 4)) == []  # exactly at clear: re-armed
    assert len(e.evaluate(tick(10_001, 5))) == 1
    other = {**tick(12_000, 6), "source": "coinbase"}  # another feed has its own state
    [a] = e.evaluate(other)
    assert a["product_id"] == "coinbase"
    assert e.evaluate({**tick(None, 7), "source": "coinbase"}) == []  # no frame yet: no value, no change


@pytest.mark.parametrize("source", ["x" * 65, 7, ["replay"]])
def test_a_feed_name_no_key_can_be_is_refused_before_any_state_keeps_it(source: object) -> None:
    """A feed's name is a key of the function's state, kept for good like a product id: 10 KB of text was kept."""
    e = engine(kind="feed_stalled", threshold=10.0, clear=2.0)
    with pytest.raises(ValueError, match="feed name"):
        e.evaluate({**tick(15_000, 1), "source": source})
    with pytest.raises(ValueError, match="feed name"):
        AlertEngine.key_of({**tick(15_000, 1), "source": source})
    assert not e.armed and len(e.evaluate({**tick(15_000, 2), "source": "x" * 64})) == 1


def test_missed_trades_boundaries() -> None:
    e = engine(kind="missed_trades", threshold=0)
    [a] = e.evaluate(gap(7, 7))  # one missed trade is over 0
    assert a["value"] == 1 and a["threshold"] == 0.0
    assert e.evaluate(gap(7, 7)) == [] and e.evaluate(gap(7, 8)) == []  # the same gap seen again
    [b] = e.evaluate(gap(8, 9))  # starts after the reported one: new
    assert b["alert_id"] == "r:P:8"
    assert len(e.evaluate(gap(1, 1, product="Q"))) == 1  # per product
    assert e.changed
    assert e.evaluate(gap(1, 1, product="Q")) == [] and not e.changed


def test_price_move_boundaries() -> None:
    e = engine(kind="price_move", threshold=1.0, clear=0.5, window_s=60)
    assert e.evaluate(ticker(100.0, 0)) == []
    assert e.evaluate(ticker(99.0, 10_000)) == []  # exactly -1% from the high: not over
    [a] = e.evaluate(ticker(98.99, 20_000))  # just over 1% down
    assert a["value"] == pytest.approx(1.01) and "moved" in a["message"]
    assert e.evaluate(ticker(100.4, 70_000)) == []  # window 98.99 (20 s).. : 1.42% up, still disarmed
    e2 = engine(kind="price_move", threshold=1.0, window_s=60)
    assert e2.evaluate(ticker(100.0, 0)) == []
    [b] = e2.evaluate(ticker(101.5, 60_000))  # the 100.0 is exactly 60 s old: still in the window
    assert b["value"] == pytest.approx(1.5)
    other = {**ticker(150.0, 60_001), "product_id": "Q"}
    assert e2.evaluate(other) == []  # per product: Q's first price is no move
    assert e2.evaluate({**ticker(200.0, 60_002), "event_ms": 60_002.5}) == []  # no integer event time
    assert e2.evaluate(ticker(0.0, 60_003)) == [] and e2.evaluate(ticker(float("nan"), 60_004)) == []


def test_price_move_re_arms_exactly_at_clear() -> None:
    def run(after: float) -> list[int]:
        e = engine(kind="price_move", threshold=1.0, clear=0.5, window_s=1)
        fired = []
        for t, price in [(0, 190.0), (100, 200.0), (1_050, after), (1_060, 202.1)]:
            fired += [a["event_ms"] for a in e.evaluate(ticker(price, t))]
        return fired

    # 190 -> 200 fires; at 1.05 s the window holds 200 and `after`; then 202.1 is 1.56% over 199 (or 198.99)
    assert (200 - 199.0) / 200 * 100 == 0.5
    assert run(199.0) == [100, 1_060]  # 0.5% from 200: exactly at clear, re-armed: fires again
    assert run(198.99) == [100]  # 0.505%: over clear, still disarmed: no second alert


def test_volatility_zscore_boundaries() -> None:
    e = engine(kind="vol_zscore", threshold=2.0, clear=1.0, history=10, min_history=3)
    for i, v in enumerate([1.0, 1.0, 1.0]):
        assert e.evaluate(vol(v, i)) == []
    assert e.evaluate(vol(50.0, 3)) == []  # history all equal: std 0, no z-score, no alert
    e = engine(kind="vol_zscore", threshold=2.0, clear=1.0, history=10, min_history=3)
    for i, v in enumerate([1.0, 2.0, 3.0]):  # mean 2, std 1
        e.evaluate(vol(v, i))
    assert e.evaluate(vol(0.0, 3)) == []  # z = -2: a collapse is no spike
    # history [1, 2, 3, 0]: mean 1.5, std 1.29099; z(4.09) = 2.0077 -> fires
    [a] = e.evaluate(vol(4.09, 4))
    assert a["value"] == pytest.approx((4.09 - 1.5) / 1.2909944487358056)
    # history [1, 2, 3, 0, 4.09]: mean 2.018, std 1.6105; z(3.6) = 0.982 <= clear: re-armed, no alert
    assert e.evaluate(vol(3.6, 5)) == []
    assert len(e.evaluate(vol(100.0, 6))) == 1  # fires again
    stays = engine(kind="vol_zscore", threshold=2.0, clear=1.0, history=10, min_history=3)
    for i, v in enumerate([1.0, 2.0, 3.0, 0.0, 4.09]):
        stays.evaluate(vol(v, i))
    assert stays.evaluate(vol(3.7, 5)) == []  # z = 1.044: over clear, still disarmed...
    assert stays.evaluate(vol(100.0, 6)) == []  # ... so no second alert


def test_engine_reports_whether_an_input_changed_its_state() -> None:
    e = engine(kind="spread_bps", threshold=50.0, clear=40.0)
    e.evaluate(book(10.0, 1))
    assert not e.changed  # armed and below: nothing to remember
    e.evaluate(book(60.0, 2))
    assert e.changed and e.state_of("P") == {"armed": {"r": False}, "prices": {}, "vols": {}, "gaps": {}}
    e.evaluate(book(45.0, 3))
    assert not e.changed
    e.evaluate(book(30.0, 4))
    assert e.changed and e.state_of("P")["armed"] == {"r": True}
    assert e.evaluate({"product_id": "P", "unrelated": 1}) == [] and not e.changed


def test_a_gap_after_the_detector_started_again_is_reported_even_inside_an_earlier_one() -> None:
    """One bogus trade id far ahead makes a huge gap; once ingest's detector takes the ids as they come again
    (`rtca.feed.gaps.RESYNC_AFTER`), the real gaps it finds lie inside that one and must still fire."""
    e = engine(kind="missed_trades", threshold=0)
    assert len(e.evaluate(gap(110, 10**12 - 1))) == 1
    [real] = e.evaluate(gap(170, 174))
    assert real["value"] == 5 and real["alert_id"] == "r:P:170"
    assert len(e.evaluate(gap(5, 6))) == 1  # the exchange's ids started again, lower


def test_records_are_taken_for_what_their_topic_says_not_for_their_fields() -> None:
    """The router passes a frame's unknown fields through: a ticker may carry `spread_bps`, `kind` or
    `realized_vol` and is still a ticker (its price move counts; no spread, stall or volatility alert)."""
    rules = [{"name": "move", "kind": "price_move", "threshold": 1.0}, {"name": "wide", "kind": "spread_bps",
             "threshold": 50.0}, {"name": "stall", "kind": "feed_stalled", "threshold": 10.0},
             {"name": "vol", "kind": "vol_zscore", "threshold": 2.0, "history": 5, "min_history": 2},
             {"name": "gaps", "kind": "missed_trades", "threshold": 0}]  # fmt: skip
    e = AlertEngine(parse_rules(rules))
    extra = {"spread_bps": 999.0, "kind": "tick", "silence_ms": 10**9, "source": "coinbase", "realized_vol": 1e200}
    assert e.evaluate({**ticker(100.0, 0), **extra}, "ticker") == []
    assert e.key_of({**ticker(100.0, 0), **extra}, "ticker") == "P"
    [move] = e.evaluate({**ticker(103.0, 1_000), **extra}, "ticker")
    assert move["rule"] == "move"
    gap_like = {**ticker(103.0, 2_000), "kind": "gap", "first_missing": 1, "last_missing": 9, "missed": 9}
    assert e.evaluate(gap_like, "ticker") == []
    assert e.evaluate({**book(10.0, 3), "price": 1.0, "realized_vol": 5.0}, "book") == []
    assert [a["rule"] for a in e.evaluate({**book(60.0, 4), "realized_vol": 5.0}, "book")] == ["wide"]


def test_a_huge_volatility_never_poisons_the_history() -> None:
    """(v - mean) ** 2 raised OverflowError for 1e200 once the history was long enough: the value stayed in the
    history and every later record of the product failed."""
    e = engine(kind="vol_zscore", threshold=2.0, clear=1.0, history=5, min_history=3)
    for i, v in enumerate([1.0, 2.0, 3.0, 1e200, 2.0]):
        assert e.evaluate(vol(v, i)) == [] or v == 1e200
    for i in range(5, 10):  # 1e200 leaves the 5-value history
        e.evaluate(vol(1.0 + i % 2, i))
    assert [a["rule"] for a in e.evaluate(vol(50.0, 10))] == ["r"]


@pytest.mark.parametrize("product", ["ODD{0}", "ODD{x}", "ODD{", "ODD}"])
def test_a_product_id_with_braces_gets_its_alert(product: str) -> None:
    e = engine(kind="price_move", threshold=1.0)
    e.evaluate({**ticker(100.0, 0), "product_id": product})
    [a] = e.evaluate({**ticker(103.0, 1_000), "product_id": product})
    assert a["product_id"] == product and a["message"].startswith(f"{product} moved 3.000%")
    assert e.evaluate({**ticker(104.0, 2_000), "product_id": product}) == []  # disarmed by the alert


@pytest.mark.parametrize("rule", [
    {"kind": "vol_zscore", "threshold": 3, "history": 30.0},  # a float: "an integer is required" on every record
    {"kind": "vol_zscore", "threshold": 3, "min_history": 0},
    {"kind": "price_move", "threshold": 1, "window_s": -60},  # every ticker a dead letter
    {"kind": "price_move", "threshold": float("nan"), "window_s": 60},  # never fires, says nothing
    {"kind": "spread_bps", "threshold": 20, "clear": float("inf")},
    {"kind": "vol_zscore", "threshold": 3, "history": True},
])  # fmt: skip
def test_rules_that_parse_but_cannot_work_are_refused(rule: dict) -> None:
    """Refused by `parse_rules`, so by deploy's check too, instead of failing or silencing the rule on every
    record (each then blamed on the record)."""
    with pytest.raises(ValueError, match="rule 'r'"):
        parse_rules([{"name": "r", **rule}])

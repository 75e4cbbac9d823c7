"""Alert rules: boundary cases, hysteresis (no repeat while the condition persists), the shipped YAML."""

from __future__ import annotations

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

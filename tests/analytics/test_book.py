"""Order book: the shipped capture against a plain dict reference, cadence, and crossed/unsynced books."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from rtca.analytics.book import BookTracker, OrderBook
from rtca.feed.capture import SHIPPED_CAPTURE, read_capture
from rtca.functions.routing import convert


def _typed_level2() -> list[tuple[dict, dict]]:
    """(raw frame with the exchange's strings, typed record as the router makes it) for every level2 frame."""
    out = []
    for frame in read_capture(SHIPPED_CAPTURE).frames:
        raw = orjson.loads(frame.text)
        if raw.get("type") not in ("snapshot", "l2update"):
            continue
        typed = convert(orjson.loads(frame.text), int(frame.at * 1000)).record
        out.append((raw, typed))
    return out


class PlainBook:
    """The reference: a dict of price -> size per side, from the raw strings (Decimal, no production code)."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}

    def snapshot(self, frame: dict) -> None:
        self.bids = {Decimal(p): Decimal(s) for p, s in frame["bids"] if Decimal(s) != 0}
        self.asks = {Decimal(p): Decimal(s) for p, s in frame["asks"] if Decimal(s) != 0}

    def update(self, frame: dict) -> None:
        for side, price, size in frame["changes"]:
            levels = self.bids if side == "buy" else self.asks
            if Decimal(size) == 0:
                levels.pop(Decimal(price), None)
            else:
                levels[Decimal(price)] = Decimal(size)

    def floats(self, levels: dict[Decimal, Decimal]) -> dict[float, float]:
        return {float(p): float(s) for p, s in levels.items()}

    def summary(self) -> dict:
        bid, ask = max(self.bids), min(self.asks)
        mid = (bid + ask) / 2
        bid_depth = sum((s for p, s in self.bids.items() if p >= mid * (1 - Decimal("0.005"))), Decimal(0))
        ask_depth = sum((s for p, s in self.asks.items() if p <= mid * (1 + Decimal("0.005"))), Decimal(0))
        near_bid = sum((s for p, s in self.bids.items() if p >= mid * (1 - Decimal("0.001"))), Decimal(0))
        near_ask = sum((s for p, s in self.asks.items() if p <= mid * (1 + Decimal("0.001"))), Decimal(0))
        return {k: float(v) for k, v in {
            "best_bid": bid, "best_bid_size": self.bids[bid], "best_ask": ask, "best_ask_size": self.asks[ask],
            "mid": mid, "spread": ask - bid, "spread_bps": (ask - bid) / mid * 10_000,
            "bid_depth": bid_depth, "ask_depth": ask_depth,
            "imbalance": (bid_depth - ask_depth) / (bid_depth + ask_depth),
            "bid_depth_10bps": near_bid, "ask_depth_10bps": near_ask,
        }.items()}


def test_capture_book_equals_plain_reference() -> None:
    frames = _typed_level2()
    assert len(frames) > 1000
    tracker = BookTracker(cadence_ms=1000)
    refs: dict[str, PlainBook] = {}
    last_bucket: dict[str, int] = {}
    emitted = 0
    for raw, typed in frames:
        product = raw["product_id"]
        ref = refs.setdefault(product, PlainBook())
        if raw["type"] == "snapshot":
            ref.snapshot(raw)
        else:
            ref.update(raw)
        out = tracker.update(typed)
        assert all(r["valid"] for r in out), out  # the real capture never crosses
        bucket = typed["event_ms"] // 1000
        if bucket > last_bucket.get(product, -1):  # the reference cadence: first message of each new second
            last_bucket[product] = bucket
            assert len(out) == 1
            record = out[0]
            assert record["product_id"] == product and record["event_ms"] == typed["event_ms"]
            expected = ref.summary()
            for key, value in expected.items():
                assert record[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (product, key)
            emitted += 1
        else:
            assert out == []
    assert emitted > 100
    assert set(tracker.products) == set(refs)
    for product, ref in refs.items():
        book = tracker.products[product].book
        assert book.bids == ref.floats(ref.bids), product
        assert book.asks == ref.floats(ref.asks), product
        assert book.best_bid() == float(max(ref.bids)) and book.best_ask() == float(min(ref.asks))


def _snap(product: str = "P", event_ms: int = 1_000, bids=((99.0, 1.0),), asks=((101.0, 2.0),)) -> dict:
    return {"type": "snapshot", "product_id": product, "event_ms": event_ms, "received_ms": event_ms,
            "bids": [list(x) for x in bids], "asks": [list(x) for x in asks]}


def _upd(changes, event_ms: int, product: str = "P") -> dict:
    return {"type": "l2update", "product_id": product, "event_ms": event_ms, "received_ms": event_ms + 5,
            "changes": [list(c) for c in changes]}


def test_zero_size_removes_level_and_best_is_recomputed() -> None:
    book = OrderBook()
    book.reset([[99.0, 1.0], [98.0, 3.0]], [[101.0, 2.0], [102.0, 1.0]])
    assert (book.best_bid(), book.best_ask()) == (99.0, 101.0)
    book.apply("buy", 99.0, 0.0)
    book.apply("sell", 100.5, 4.0)
    assert (book.best_bid(), book.best_ask()) == (98.0, 100.5)
    book.apply("sell", 100.5, 0.0)
    book.apply("buy", 98.0, 5.0)  # absolute size, not a delta
    assert book.asks == {101.0: 2.0, 102.0: 1.0} and book.bids == {98.0: 5.0}


def test_cadence_is_event_time_first_update_after_each_boundary() -> None:
    t = BookTracker(cadence_ms=1000)
    assert len(t.update(_snap(event_ms=10_000))) == 1  # bucket 10
    assert t.update(_upd([("buy", 99.5, 1.0)], 10_999)) == []  # same bucket
    out = t.update(_upd([("buy", 99.6, 1.0)], 11_000))  # first after the boundary
    assert len(out) == 1 and out[0]["best_bid"] == 99.6 and out[0]["event_ms"] == 11_000
    assert t.update(_upd([("buy", 99.7, 1.0)], 11_500)) == []
    assert len(t.update(_upd([("buy", 99.8, 1.0)], 15_200))) == 1  # gaps: one record, no back-fill


def test_metrics_of_a_small_book() -> None:
    t = BookTracker()
    [r] = t.update(_snap(bids=[(99.9, 2.0), (99.0, 7.0)], asks=[(100.1, 1.0), (100.4, 3.0), (101.0, 9.0)]))
    assert r["mid"] == pytest.approx(100.0) and r["spread"] == pytest.approx(0.2)
    assert r["spread_bps"] == pytest.approx(20.0)
    assert r["bid_depth"] == 2.0 and r["ask_depth"] == 4.0  # 99.0 and 101.0 are beyond 50 bps
    assert r["bid_depth_10bps"] == 2.0 and r["ask_depth_10bps"] == 1.0
    assert r["imbalance"] == pytest.approx((2 - 4) / 6)


def test_a_spread_wider_than_the_band_has_no_depth_and_a_zero_imbalance_never_null() -> None:
    """Pinot 0.11's per-minute SUM(imbalance) (the book-minute table) fails on a null and drops the row: an
    illiquid product's wide spreads, the moments its spread chart is about, would be missing."""
    t = BookTracker(depth_bps=50.0)
    [r] = t.update(_snap(bids=[(98.0, 2.0)], asks=[(102.0, 1.0)]))  # 400 bps: both best levels beyond 50 bps
    assert r["bid_depth"] == r["ask_depth"] == 0.0 and r["imbalance"] == 0.0 and r["spread_bps"] > 100


def test_update_before_snapshot_is_reported_once_and_ignored() -> None:
    t = BookTracker()
    [p] = t.update(_upd([("buy", 99.0, 1.0)], 1_000))
    assert p["valid"] is False and p["problem"] == "no_snapshot"
    assert t.update(_upd([("buy", 99.0, 1.0)], 2_000)) == []
    assert t.products["P"].ignored == 2 and t.products["P"].book.bids == {}
    [r] = t.update(_snap(event_ms=3_000))
    assert r["valid"] is True


def test_crossed_book_is_reported_never_published_and_resynchronised() -> None:
    t = BookTracker()
    t.update(_snap(event_ms=1_000))
    [p] = t.update(_upd([("buy", 101.0, 1.0)], 2_000))  # bid == ask: crossed
    assert p["valid"] is False and p["problem"] == "crossed" and p["best_bid"] == 101.0
    # until a snapshot: everything ignored, nothing published, not reported again
    assert t.update(_upd([("buy", 101.0, 0.0)], 3_000)) == []
    assert t.update(_upd([("sell", 105.0, 1.0)], 4_000)) == []
    [r] = t.update(_snap(event_ms=5_000, bids=[(100.0, 1.0)], asks=[(100.5, 1.0)]))
    assert r["valid"] is True and r["best_bid"] == 100.0
    assert t.update(_upd([("sell", 99.0, 1.0)], 6_000))[0]["problem"] == "crossed"  # ask under the bid


def test_crossed_snapshot_is_not_published() -> None:
    t = BookTracker()
    [p] = t.update(_snap(bids=[(101.0, 1.0)], asks=[(100.0, 1.0)]))
    assert p["valid"] is False and p["problem"] == "crossed"

"""Level2 order books per product, summarised at a fixed event-time cadence.

Input: typed `coinbase-level2` records (the record contract): ``snapshot`` (``bids``/``asks`` = [[price, size], ...])
and ``l2update`` (``changes`` = [[side, price, size], ...], size = the new absolute size at that price, 0 removes
the level), numbers as floats, plus ``product_id``, ``event_ms``, ``received_ms``.

Cadence: a product's book is summarised on the first message whose ``event_ms`` falls in a later cadence bucket
(``event_ms // cadence_ms``) than the last summary's: functions only run on messages, so "every second" means
"on the first update after each boundary", and the summary reflects the book after that update. A snapshot starts
the count again (its book is summarised whatever the last summary's time: one more in that second, at most).

Summary (the ``coinbase_book`` columns): best bid/ask and their sizes, ``mid``, ``spread`` (ask - bid),
``spread_bps`` (spread / mid * 1e4), ``bid_depth``/``ask_depth`` = total size (base units) at prices within
``depth_bps`` (default 50) of mid on each side (inclusive), ``imbalance`` = (bid_depth - ask_depth) / (bid_depth +
ask_depth), 0 when neither side has size within the band (a spread wider than twice ``depth_bps``: no measurable
imbalance; never null, since Pinot 0.11's per-minute SUM of the book-minute table fails on a null and drops the
row), ``sequence`` (the frame's, when it has one: Coinbase's level2 frames do not), ``valid`` = True; plus
``bid_depth_10bps``/``ask_depth_10bps`` (within 10 bps), on the topic for readers of it, not Pinot columns.

Integrity: an ``l2update`` before any snapshot, or a book whose best bid >= best ask after a message, is reported
once as a `BookProblem` (``no_snapshot`` / ``crossed``), the product's book is dropped and every further update is
ignored (counted in ``ignored``) until the next snapshot resynchronises it. A crossed book is never summarised.
Nothing here asks for that snapshot: the book function publishes the problem as an alert, and ingest, which reads
the alerts topic, resubscribes the product's level2 channel, which brings one (`rtca.feed.resync`).

`feed.book.L2Book` is not reused: it keeps the exchange's strings keyed by Decimal (what a server must repeat);
here the typed records carry floats and the hot path is a float dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rtca.analytics.checks import event_time, number

DEFAULT_CADENCE_MS = 1000
DEFAULT_DEPTH_BPS = 50.0
NEAR_DEPTH_BPS = 10.0


@dataclass(slots=True)
class BookProblem:
    """An inconsistency found in one product's stream; the book waits for the next snapshot."""

    product_id: str
    event_ms: int | None
    received_ms: int | None
    problem: str  # "no_snapshot" | "crossed"
    detail: str
    best_bid: float | None = None
    best_ask: float | None = None

    def record(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id, "event_ms": self.event_ms, "received_ms": self.received_ms,
            "valid": False, "problem": self.problem, "detail": self.detail,
            "best_bid": self.best_bid, "best_ask": self.best_ask,
        }  # fmt: skip


class OrderBook:
    """One product's level2 book: price -> size per side, with lazily maintained best prices."""

    __slots__ = ("_best_ask", "_best_bid", "asks", "bids")

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._best_bid: float | None = None  # None = unknown (recompute); NaN never used
        self._best_ask: float | None = None

    def reset(self, bids: Iterable[Any], asks: Iterable[Any]) -> None:
        """Replace the book with a snapshot's levels (levels of size 0 are skipped)."""
        self.bids = {float(p): float(s) for p, s in bids if float(s) > 0}
        self.asks = {float(p): float(s) for p, s in asks if float(s) > 0}
        self._best_bid = self._best_ask = None

    def apply(self, side: str, price: float, size: float) -> None:
        """One change: the new absolute size at `price` on `side` ("buy" = bids, "sell" = asks); 0 removes it."""
        if side == "buy":
            levels, best = self.bids, self._best_bid
            if size > 0:
                levels[price] = size
                if best is not None and price > best:
                    self._best_bid = price
            elif levels.pop(price, None) is not None and best == price:
                self._best_bid = None
        elif side == "sell":
            levels, best = self.asks, self._best_ask
            if size > 0:
                levels[price] = size
                if best is not None and price < best:
                    self._best_ask = price
            elif levels.pop(price, None) is not None and best == price:
                self._best_ask = None
        else:
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")

    def best_bid(self) -> float | None:
        if self._best_bid is None and self.bids:
            self._best_bid = max(self.bids)
        return self._best_bid

    def best_ask(self) -> float | None:
        if self._best_ask is None and self.asks:
            self._best_ask = min(self.asks)
        return self._best_ask

    def crossed(self) -> bool:
        bid, ask = self.best_bid(), self.best_ask()
        return bid is not None and ask is not None and bid >= ask

    def summary(self, depth_bps: float = DEFAULT_DEPTH_BPS) -> dict[str, Any] | None:
        """Top of book, spread, depth and imbalance; None while a side is empty or the book is crossed."""
        bid, ask = self.best_bid(), self.best_ask()
        if bid is None or ask is None or bid >= ask:
            return None
        mid = (bid + ask) / 2.0
        spread = ask - bid
        bid_depth = depth(self.bids, mid, depth_bps, "buy")
        ask_depth = depth(self.asks, mid, depth_bps, "sell")
        total = bid_depth + ask_depth
        return {
            "best_bid": bid, "best_bid_size": self.bids[bid], "best_ask": ask, "best_ask_size": self.asks[ask],
            "mid": mid, "spread": spread, "spread_bps": spread / mid * 1e4,
            "bid_depth": bid_depth, "ask_depth": ask_depth,
            "imbalance": (bid_depth - ask_depth) / total if total > 0 else 0.0,
            "bid_depth_10bps": depth(self.bids, mid, NEAR_DEPTH_BPS, "buy"),
            "ask_depth_10bps": depth(self.asks, mid, NEAR_DEPTH_BPS, "sell"),
        }  # fmt: skip


def depth(levels: Mapping[float, float], mid: float, bps: float, side: str) -> float:
    """Total size at prices within `bps` of `mid` on one side (bids >= mid*(1-bps/1e4), asks <= mid*(1+bps/1e4))."""
    if side == "buy":
        floor = mid * (1.0 - bps / 1e4)
        return sum(size for price, size in levels.items() if price >= floor)
    cap = mid * (1.0 + bps / 1e4)
    return sum(size for price, size in levels.items() if price <= cap)


def _levels(levels: Any, name: str) -> list[tuple[float, float]]:
    """A snapshot side's [price, size] pairs as numbers; ValueError / TypeError for any bad one."""
    if type(levels) is not list:
        raise TypeError(f"{name} must be a list of [price, size], not {type(levels).__name__}")
    out = []
    for level in levels:
        if type(level) is not list or len(level) != 2:
            raise TypeError(f"{name}: a level must be [price, size], not {level!r:.40}")
        out.append((number(level[0], f"{name} price", positive=True), number(level[1], f"{name} size")))
    return out


def _changes(changes: Iterable[Any]) -> list[tuple[str, float, float]]:
    """An l2update's [side, price, size] changes, every one checked, so a bad one changes nothing."""
    if type(changes) is not list:
        raise TypeError(f"changes must be a list of [side, price, size], not {type(changes).__name__}")
    out = []
    for side, price, size in changes:
        if type(side) is not str or side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r:.40}")
        out.append((side, number(price, "price", positive=True), number(size, "size")))
    return out


@dataclass(slots=True)
class ProductState:
    book: OrderBook = field(default_factory=OrderBook)
    synced: bool = False
    last_bucket: int | None = None
    reported: bool = False
    ignored: int = 0
    problems: int = 0


class BookTracker:
    """All products' books; `update(record)` gives the records to publish (summaries and problems)."""

    def __init__(self, cadence_ms: int = DEFAULT_CADENCE_MS, depth_bps: float = DEFAULT_DEPTH_BPS) -> None:
        if cadence_ms <= 0:
            raise ValueError(f"cadence_ms must be > 0, not {cadence_ms}")
        self.cadence_ms = int(cadence_ms)
        self.depth_bps = float(depth_bps)
        self.products: dict[str, ProductState] = {}

    def state_of(self, product: str) -> ProductState:
        state = self.products.get(product)
        if state is None:
            state = self.products[product] = ProductState()
        return state

    def update(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Apply one typed level2 record; returns [] or one summary record or one problem record."""
        product = record["product_id"]
        kind = record.get("type")
        event_ms = event_time(record)  # the cadence runs on it (`rtca.analytics.checks`)
        received_ms = record.get("received_ms")
        if kind == "snapshot":  # every level checked before any state changes
            bids, asks = _levels(record["bids"], "bids"), _levels(record["asks"], "asks")
        elif kind == "l2update":
            changes = _changes(record["changes"])
        else:
            raise ValueError(f"not a level2 record: type {kind!r}")
        state = self.state_of(product)
        book = state.book
        if kind == "snapshot":
            book.reset(bids, asks)
            state.synced = True
            state.reported = False
            state.last_bucket = None  # a new start: its first summary is published whatever the time before
        else:
            if not state.synced:
                state.ignored += 1
                if state.reported:  # reported once per desynchronisation
                    return []
                state.reported = True
                return [self._problem(state, product, event_ms, received_ms, "no_snapshot",
                                      "l2update before a snapshot: waiting for the next snapshot")]  # fmt: skip
            for side, price, size in changes:
                book.apply(side, price, size)
        if book.crossed():
            bid, ask = book.best_bid(), book.best_ask()
            state.synced = False
            state.book = OrderBook()
            state.reported = True  # the updates ignored until the next snapshot are not reported again
            problem = self._problem(state, product, event_ms, received_ms, "crossed",
                                    f"best bid {bid} >= best ask {ask}: waiting for the next snapshot")  # fmt: skip
            problem["best_bid"], problem["best_ask"] = bid, ask
            return [problem]
        bucket = event_ms // self.cadence_ms
        if state.last_bucket is not None and bucket <= state.last_bucket:
            return []
        summary = book.summary(self.depth_bps)
        if summary is None:
            return []  # a side is empty: nothing valid to publish yet
        state.last_bucket = bucket
        sequence = record.get("sequence")
        if type(sequence) is not int or not 0 <= sequence < 2**63:
            sequence = None  # a LONG column: Pinot drops a row whose value it cannot convert (or mis-stores it)
        return [{"product_id": product, "event_ms": event_ms, "received_ms": received_ms,
                 "sequence": sequence, **summary, "valid": True}]  # fmt: skip

    def _problem(self, state: ProductState, product: str, event_ms: Any, received_ms: Any, problem: str,
                 detail: str) -> dict[str, Any]:  # fmt: skip
        state.problems += 1
        return BookProblem(product, event_ms, received_ms, problem, detail).record()

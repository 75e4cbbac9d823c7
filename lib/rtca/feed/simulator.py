"""A seeded market that emits protocol-valid frames, served with the exchange's websocket protocol.

For load tests and benchmarks: any number of products at a chosen rate, deterministic for a seed (and a clock).
Each product has a level2 book around a random price; a step is either a book change (`l2update`) or a trade
(`match` with the maker's side, `ticker` with the taker's side and the best bid/ask after it, and the `l2update`
of the level it consumed). Every event takes the product's next `sequence` (shared across channels, as on the
exchange), trade ids are consecutive, the book never crosses, and each product sends a `heartbeat` once a second
of the clock. A subscriber first gets a snapshot, the last ticker and the last match, like on the exchange.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from rtca.errors import ConfigError
from rtca.feed.book import L2Book
from rtca.feed.protocol import LIVE_PRODUCTS, Side, dumps, format_time_us
from rtca.feed.server import FeedServer, Outgoing, ServerStats, serve_foreground

_LOT = Decimal("0.00000001")
_DEPTH = 20
_FAR_LEVELS = 10
_FAR_BPS = (1.0, 100.0)
"""Besides `_DEPTH` levels a tick apart at the top (a tick is 0.01-0.1 bps of the price, so they span under 2 bps),
each side starts with `_FAR_LEVELS` resting orders 1 to 100 bps from the mid (log-uniform), as a real book has: the
book function's depth within 10 and 50 bps then measures parts of the book, not all of it."""
_LEVELS = _DEPTH + _FAR_LEVELS
_TRADE_SHARE = 0.12
PACING_SLACK = 0.02
"""Seconds a frame may go before its time: the frames due within it go out together, one wake-up of the event loop
for several (a wake-up per frame cost more than making the frame). Each frame is stamped when it goes out, so its
time stays true; the feed comes in bursts of up to 20 ms."""


def _other(side: Side) -> Side:
    return "sell" if side == "buy" else "buy"


class _Product:
    """One product's book, counters and 24 h statistics."""

    def __init__(self, product_id: str, rng: random.Random) -> None:
        self.id = product_id
        price = Decimal(repr(round(10 ** rng.uniform(-1.0, 4.7), 6)))
        self.tick = Decimal(1).scaleb(math.floor(math.log10(price)) - 5)
        mid = price.quantize(self.tick)
        self.book = L2Book()
        for level in range(1, _DEPTH + 1):
            self.set_level("buy", mid - self.tick * level, self.random_size(rng))
            self.set_level("sell", mid + self.tick * level, self.random_size(rng))
        for _ in range(_FAR_LEVELS):
            for side, sign in (("buy", -1), ("sell", 1)):
                away = Decimal(repr(round(10 ** rng.uniform(*map(math.log10, _FAR_BPS)), 4))) / 10_000
                self.set_level(side, mid * (1 + sign * away), self.random_size(rng))
        self.sequence = rng.randrange(10**6, 10**9)
        self.trade_id = rng.randrange(10**5, 10**8)
        self.open = mid
        self.high = self.low = mid
        self.volume = Decimal(0)
        self.last_ticker: dict[str, Any] | None = None
        self.last_match: dict[str, Any] | None = None
        self.next_heartbeat = 0.0

    def random_size(self, rng: random.Random) -> Decimal:
        return Decimal(repr(round(rng.lognormvariate(0.0, 1.2), 8))).quantize(_LOT) or _LOT

    def set_level(self, side: Side, price: Decimal, size: Decimal) -> list[str]:
        """Change one level; returns the l2update change."""
        change = [side, f"{price.quantize(self.tick):f}", f"{size.quantize(_LOT):f}"]
        self.book.apply(side, change[1], change[2])
        return change

    def level_size(self, side: Side, price: Decimal) -> Decimal:
        return Decimal(self.book.side(side)[price][1])


class SimulatedMarket:
    """The pure market model: `step(now_us)` -> the frames (as dicts) of the next event. `start_us` is the time of
    the last trade each product starts with (what a first subscriber gets as ticker and last_match); `trade_share`
    is the share of steps that are trades (the rest are book changes; the query benchmark uses a busier market)."""

    def __init__(self, products: Sequence[str], *, seed: int = 0, start_us: int = 0,
                 trade_share: float = _TRADE_SHARE) -> None:
        if not products:
            raise ConfigError("the simulator needs at least one product")
        if not 0.0 <= trade_share <= 1.0:
            raise ConfigError(f"invalid trade share {trade_share!r}", hint="a fraction of the steps, 0..1")
        self.trade_share = trade_share
        self.rng = random.Random(seed)
        self.products = {name: _Product(name, self.rng) for name in dict.fromkeys(products)}
        self._order = list(self.products)
        for product in self.products.values():
            self._trade(product, start_us)

    def step(self, now_us: int) -> list[dict[str, Any]]:
        product = self.products[self._order[self.rng.randrange(len(self._order))]]
        frames = self._heartbeat(product, now_us)
        if self.rng.random() < self.trade_share:
            return frames + self._trade(product, now_us)
        return frames + [self._book_change(product, now_us)]

    def snapshot(self, product: str) -> dict[str, Any]:
        return self.products[product].book.snapshot(product)

    def status(self) -> dict[str, Any]:
        return {
            "type": "status",
            "currencies": [],
            "products": [
                {"id": p.id, "base_currency": p.id.split("-")[0], "quote_currency": p.id.split("-")[-1],
                 "quote_increment": f"{p.tick:f}", "base_increment": f"{_LOT:f}", "status": "online",
                 "status_message": "", "trading_disabled": False}
                for p in self.products.values()
            ],
        }

    # --- events ------------------------------------------------------------------------------------------------
    def _heartbeat(self, product: _Product, now_us: int) -> list[dict[str, Any]]:
        if now_us < product.next_heartbeat:
            return []
        product.next_heartbeat = now_us + 1_000_000
        return [{"type": "heartbeat", "last_trade_id": product.trade_id, "product_id": product.id,
                 "sequence": product.sequence, "time": format_time_us(now_us)}]

    def _book_change(self, product: _Product, now_us: int) -> dict[str, Any]:
        """Narrow a wide spread, or resize, add or remove a level near the top; the book never crosses and keeps
        about `_LEVELS` levels a side."""
        rng, side = self.rng, self.rng.choice(("buy", "sell"))
        levels = product.book.side(side)
        bid, ask = product.book.best("buy"), product.book.best("sell")
        assert bid is not None and ask is not None
        best = bid if side == "buy" else ask
        outward = product.tick if side == "sell" else -product.tick
        if ask - bid > product.tick and rng.random() < 0.5:
            price = best - outward
        else:
            price = best + outward * min(int(rng.expovariate(0.3)), 3 * _DEPTH)
        remove = price in levels and len(levels) > 1 and rng.random() < min(0.9, 0.5 * len(levels) / _LEVELS)
        size = Decimal(0) if remove else product.random_size(rng)
        product.sequence += 1
        change = product.set_level(side, price, size)
        return {"type": "l2update", "product_id": product.id, "changes": [change], "time": format_time_us(now_us)}

    def _trade(self, product: _Product, now_us: int) -> list[dict[str, Any]]:
        """A taker order meets the best maker level."""
        rng, taker = self.rng, self.rng.choice(("buy", "sell"))
        maker: Side = _other(taker)
        price = product.book.best(maker)
        assert price is not None
        available = product.level_size(maker, price)
        size = min(available, product.random_size(rng))
        product.sequence += 1
        product.trade_id += 1
        left = available - size
        changes = []
        if not left and len(product.book.side(maker)) == 1:  # keep the side alive: refill further out (sent first,
            step = product.tick if maker == "sell" else -product.tick  # so a subscriber's side is never empty)
            changes.append(product.set_level(maker, price + step, product.random_size(rng)))
        changes.append(product.set_level(maker, price, left))
        product.volume += size
        product.high, product.low = max(product.high, price), min(product.low, price)
        bid, ask = product.book.best("buy"), product.book.best("sell")
        assert bid is not None and ask is not None
        when = format_time_us(now_us)
        text_price, text_size = f"{price:f}", f"{size:f}"
        product.last_match = {
            "type": "match", "trade_id": product.trade_id, "maker_order_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "taker_order_id": str(uuid.UUID(int=rng.getrandbits(128))), "side": maker, "size": text_size,
            "price": text_price, "product_id": product.id, "sequence": product.sequence, "time": when,
        }
        product.last_ticker = {
            "type": "ticker", "sequence": product.sequence, "product_id": product.id, "price": text_price,
            "open_24h": f"{product.open:f}", "volume_24h": f"{product.volume:f}", "low_24h": f"{product.low:f}",
            "high_24h": f"{product.high:f}", "volume_30d": f"{product.volume:f}", "best_bid": f"{bid:f}",
            "best_bid_size": f"{product.level_size('buy', bid):f}", "best_ask": f"{ask:f}",
            "best_ask_size": f"{product.level_size('sell', ask):f}", "side": taker, "time": when,
            "trade_id": product.trade_id, "last_size": text_size,
        }
        update = {"type": "l2update", "product_id": product.id, "changes": changes, "time": when}
        return [product.last_match, product.last_ticker, update]


_CHANNEL = {"l2update": "level2", "match": "matches", "ticker": "ticker", "heartbeat": "heartbeat"}


class SimulatorSource:
    """A `FrameSource` pacing a `SimulatedMarket` at `rate` frames per second (None: as fast as read)."""

    def __init__(
        self,
        products: Sequence[str] = LIVE_PRODUCTS,
        *,
        rate: float | None = 100.0,
        seed: int = 0,
        limit: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if rate is not None and not rate > 0:
            raise ConfigError(f"invalid simulator rate {rate!r}", hint="frames per second, > 0")
        self.market = SimulatedMarket(products, seed=seed, start_us=int(clock() * 1e6))
        self.products = frozenset(self.market.products)
        self.rate = rate
        self.limit = limit
        self.emitted = 0
        self._clock = clock
        self._queue: list[Outgoing] = []
        self._base = 0.0

    async def next(self) -> Outgoing | None:
        if self.limit is not None and self.emitted >= self.limit:
            return None
        if self.rate is not None:
            delay = self._base + self.emitted / self.rate - asyncio.get_running_loop().time()
            if delay > PACING_SLACK:
                await asyncio.sleep(delay)
        if not self._queue:
            frames = self.market.step(int(self._clock() * 1e6))
            self._queue = [Outgoing(dumps(f), f["type"], _CHANNEL[f["type"]], f["product_id"]) for f in frames]
            self._queue.reverse()
        self.emitted += 1
        return self._queue.pop()

    def state(self, channel: str, product: str | None) -> list[Outgoing]:
        if channel == "status":
            return [Outgoing(dumps(self.market.status()), "status", "status")]
        if product not in self.market.products:
            return []
        state = self.market.products[product]
        if channel == "level2":
            return [Outgoing(dumps(self.market.snapshot(product)), "snapshot", channel, product)]
        if channel == "ticker" and state.last_ticker:
            return [Outgoing(dumps(state.last_ticker), "ticker", channel, product)]
        if channel == "matches" and state.last_match:
            return [Outgoing(dumps({**state.last_match, "type": "last_match"}), "last_match", channel, product)]
        return []

    def resume(self) -> None:
        if self.rate is not None:
            self._base = asyncio.get_running_loop().time() - self.emitted / self.rate


def simulator_server(
    products: Sequence[str] = LIVE_PRODUCTS,
    *,
    rate: float | None = 100.0,
    seed: int = 0,
    limit: int | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> FeedServer:
    """A simulator `FeedServer` (not started: `async with simulator_server(...) as server: server.url`)."""
    return FeedServer(SimulatorSource(products, rate=rate, seed=seed, limit=limit), host=host, port=port)


def serve_simulator(
    *,
    products: Sequence[str] | None = None,
    rate: float | None = 100.0,
    seed: int = 0,
    host: str = "127.0.0.1",
    port: int = 0,
    announce: Callable[[str], None] = print,
) -> ServerStats:
    """`rtca simulator serve`: serve a simulated market until SIGINT / SIGTERM."""
    server = simulator_server(products or LIVE_PRODUCTS, rate=rate, seed=seed, host=host, port=port)
    return serve_foreground(server, announce=announce)

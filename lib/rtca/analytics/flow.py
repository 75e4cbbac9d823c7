"""Trade flow per product and tumbling event-time window, from typed `coinbase-matches` records.

A match's ``side`` is the MAKER's order side, so the taker (the aggressor, whose direction is the sentiment) is
the opposite: ``side == "sell"`` = a taker BUY (buy volume), ``side == "buy"`` = a taker SELL (sell volume).

Windows: ``[start, start + window_ms)`` with ``start = event_ms // window_ms * window_ms`` (epoch-aligned). A
window is emitted exactly once, when the product's first match of a later window arrives (functions only run on
messages); windows without trades are not emitted. Late data: a match whose window is before the product's open
window (already emitted) is dropped and counted in ``late``.

Record (the ``coinbase_trade_flow`` columns): ``event_ms`` = window start, ``window_ms`` = window LENGTH,
``window_end_ms``, ``received_ms`` (latest receive time in the window), buy/sell volume (base units), counts,
notional (sum of price * size), ``imbalance`` = (buy - sell) / (buy + sell) by volume, ``vwap`` = notional /
volume, and the window's candle: ``open_price`` / ``last_price`` = price of the first / last match by event order
(ties: arrival order), ``high_price`` / ``low_price``. The candle is here, not computed from the matches table at
query time, so that a candle chart reads one row per product and minute instead of every trade (docs/performance.md).

The last trade sent again (Coinbase's ``last_match`` on a resubscription repeats the newest trade) is counted once.

State is a few numbers per product (`rtca.analytics.windows`: round-trips through JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from rtca.analytics.checks import event_time, number
from rtca.analytics.windows import DEFAULT_WINDOW_MS, WindowsByProduct

__all__ = ["DEFAULT_WINDOW_MS", "FlowWindow", "TradeFlow"]


@dataclass(slots=True)
class FlowWindow:
    start_ms: int
    buy_volume: float = 0.0
    sell_volume: float = 0.0
    buy_count: int = 0
    sell_count: int = 0
    buy_notional: float = 0.0
    sell_notional: float = 0.0
    last_price: float | None = None
    last_event_ms: int = 0
    received_ms: int | None = None
    open_price: float | None = None
    first_event_ms: int = 0
    high_price: float | None = None
    low_price: float | None = None
    last_trade_id: int | None = None
    """The product's last trade id (carried into the next window): the last trade sent again, as Coinbase's
    `last_match` on every (re)subscription, is not counted twice."""

    def add(self, taker_buy: bool, price: float, size: float, event_ms: int, received_ms: int | None) -> None:
        if taker_buy:
            self.buy_volume += size
            self.buy_count += 1
            self.buy_notional += price * size
        else:
            self.sell_volume += size
            self.sell_count += 1
            self.sell_notional += price * size
        if self.last_price is None or event_ms >= self.last_event_ms:
            self.last_price, self.last_event_ms = price, event_ms
        if self.open_price is None or event_ms < self.first_event_ms:
            self.open_price, self.first_event_ms = price, event_ms
        if self.high_price is None or price > self.high_price:
            self.high_price = price
        if self.low_price is None or price < self.low_price:
            self.low_price = price
        if received_ms is not None and (self.received_ms is None or received_ms > self.received_ms):
            self.received_ms = received_ms

    def record(self, product: str, window_ms: int) -> dict[str, Any]:
        volume = self.buy_volume + self.sell_volume
        notional = self.buy_notional + self.sell_notional
        return {
            "product_id": product, "event_ms": self.start_ms, "window_ms": window_ms,
            "window_end_ms": self.start_ms + window_ms, "received_ms": self.received_ms,
            "buy_volume": self.buy_volume, "sell_volume": self.sell_volume,
            "buy_count": self.buy_count, "sell_count": self.sell_count,
            "buy_notional": self.buy_notional, "sell_notional": self.sell_notional,
            "imbalance": (self.buy_volume - self.sell_volume) / volume if volume > 0 else None,
            "vwap": notional / volume if volume > 0 else None,
            "open_price": self.open_price, "high_price": self.high_price, "low_price": self.low_price,
            "last_price": self.last_price,
        }  # fmt: skip


@dataclass
class TradeFlow(WindowsByProduct):
    """All products' open windows; `update(match)` gives the records of the windows it closes (0 or 1)."""

    window_class: ClassVar[type] = FlowWindow

    def update(self, match: Mapping[str, Any]) -> list[dict[str, Any]]:
        product = match["product_id"]
        event_ms = event_time(match)
        side = match["side"]
        if type(side) is not str or side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r:.40}")
        price, size = number(match["price"], "price", positive=True), number(match["size"], "size")
        received_ms, trade_id = match.get("received_ms"), match.get("trade_id")  # received_ms: `event_time` checked it
        if trade_id is not None and type(trade_id) is not int:
            raise TypeError("trade_id must be an int")
        flow = self.product(product)
        start = event_ms // self.window_ms * self.window_ms
        out: list[dict[str, Any]] = []
        current = flow.window
        if trade_id is not None and current is not None and trade_id == current.last_trade_id:
            return out  # the trade just counted, sent again (not any lower id: a restarted replay starts again)
        if current is not None and start < current.start_ms:
            flow.late += 1
            return out
        if current is None or start > current.start_ms:
            if current is not None:
                out.append(current.record(product, self.window_ms))
            current = flow.window = FlowWindow(start, last_trade_id=current.last_trade_id if current else None)
        current.add(side == "sell", price, size, event_ms, received_ms)
        if trade_id is not None:
            current.last_trade_id = trade_id
        return out

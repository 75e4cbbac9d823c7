"""Realized volatility per product and closed tumbling event-time window, from ticker prices.

Windows: ``[start, start + window_ms)``, ``start = event_ms // window_ms * window_ms``. A window is emitted EXACTLY
ONCE, when the product's first price of a later window arrives (functions only run on messages).

Within a window, prices are taken in arrival order; the log returns are ``log(p[i] / p[i-1])`` between consecutive
prices OF THE SAME WINDOW (the first price of a window has no return), i.e. pandas
``np.log(prices).diff()`` per window group. Convention:

- ``return_std`` = standard deviation of those log returns, ``ddof=1`` (None with fewer than 2 returns);
- ``realized_vol`` = annualised: ``return_std * sqrt(SECONDS_PER_YEAR / mean_interval_s)`` with
  ``mean_interval_s = window_s / n_returns`` (the average time between returns over the window), i.e.
  ``return_std * sqrt(n_returns * SECONDS_PER_YEAR / window_s)``; SECONDS_PER_YEAR = 365 * 24 * 3600
  (crypto trades every day);
- ``price`` = the window's last price; ``log_return`` = log(last / first) of the window (the sum of its returns).

Record (the ``coinbase_volatility`` columns): ``event_ms`` = window start, ``window_ms`` = window LENGTH, plus
``window_end_ms``, ``received_ms`` (latest in the window), ``n_prices``, ``n_returns``, ``return_std``.

Late-data policy: a price whose window is before the product's open window (already emitted) is DROPPED and
counted (``late`` per product, `Volatility.late`); it never changes or re-emits a closed window. A record outside
the contract (a price not a number, <= 0 or >= 1e100, an event time out of range: `rtca.analytics.checks`) raises
TypeError / ValueError before any state changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from rtca.analytics.checks import event_time, number
from rtca.analytics.windows import DEFAULT_WINDOW_MS, WindowsByProduct

__all__ = ["DEFAULT_WINDOW_MS", "SECONDS_PER_YEAR", "Volatility", "VolWindow"]
SECONDS_PER_YEAR = 365 * 24 * 3600


@dataclass(slots=True)
class VolWindow:
    """Welford accumulators of one window's log returns."""

    start_ms: int
    first_price: float
    last_price: float
    n_prices: int = 1
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    received_ms: int | None = None

    def add(self, price: float, received_ms: int | None) -> None:
        r = math.log(price) - math.log(self.last_price)  # not log(ratio): a ratio of extreme prices underflows
        self.n += 1
        delta = r - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (r - self.mean)
        self.last_price = price
        self.n_prices += 1
        if received_ms is not None and (self.received_ms is None or received_ms > self.received_ms):
            self.received_ms = received_ms

    def record(self, product: str, window_ms: int) -> dict[str, Any]:
        std = math.sqrt(max(self.m2, 0.0) / (self.n - 1)) if self.n >= 2 else None
        vol = std * math.sqrt(self.n * SECONDS_PER_YEAR / (window_ms / 1000.0)) if std is not None else None
        return {
            "product_id": product, "event_ms": self.start_ms, "window_ms": window_ms,
            "window_end_ms": self.start_ms + window_ms, "received_ms": self.received_ms,
            "price": self.last_price, "log_return": math.log(self.last_price) - math.log(self.first_price),
            "return_std": std, "realized_vol": vol, "n_prices": self.n_prices, "n_returns": self.n,
        }  # fmt: skip


@dataclass
class Volatility(WindowsByProduct):
    """All products' open windows; `update(ticker)` gives the records of the windows it closes (0 or 1)."""

    window_class: ClassVar[type] = VolWindow

    def update(self, ticker: Mapping[str, Any]) -> list[dict[str, Any]]:
        product = ticker["product_id"]
        event_ms = event_time(ticker)
        price = number(ticker["price"], "price", positive=True)
        received_ms = ticker.get("received_ms")  # an int or None: `event_time` checked it
        pv = self.product(product)
        start = event_ms // self.window_ms * self.window_ms
        window = pv.window
        if window is not None and start < window.start_ms:
            pv.late += 1
            return []
        out: list[dict[str, Any]] = []
        if window is None or start > window.start_ms:
            if window is not None:
                out.append(window.record(product, self.window_ms))
            pv.window = VolWindow(start, price, price, received_ms=received_ms)
        else:
            window.add(price, received_ms)
        return out

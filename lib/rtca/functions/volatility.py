"""Volatility Pulsar Function: typed tickers -> one realized-volatility record per product and closed window.

Late prices (event time in an already emitted window) are dropped and counted (metric ``late``).

Restart (exactly one record per product and window, none missing): each window record carries its product's
state after the price that closed it (the next window's accumulators and the late count: ``state``), with
``sources`` (that price's message id) and ``version``; a product's prices stay unacknowledged until such a record
holds their effect. A restarted instance takes the last record per product of its output topic and skips
redelivered prices by message id, so the window open at the restart gets all of its prices once
(`rtca.functions.resume`). userConfig: ``dead_letter``, optional ``window_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rtca.analytics.volatility import DEFAULT_WINDOW_MS, Volatility
from rtca.functions.resume import Output, WindowedFunction
from rtca.functions.runtime import Context


class VolatilityFunction(WindowedFunction):
    """Per product: std (ddof=1) of log returns per closed tumbling window, annualised (rtca.analytics.volatility)."""

    name = "volatility"

    def setup(self, context: Context, config: Mapping[str, Any]) -> Volatility:
        return Volatility(int(config.get("window_ms", DEFAULT_WINDOW_MS)))

    def compute(self, record: dict[str, Any], context: Context) -> list[Output]:
        products = self.engine.products
        before = products.get(record.get("product_id"))
        late = before.late if before is not None else 0
        outputs = super().compute(record, context)
        if products[record["product_id"]].late != late:
            context.record_metric("late", 1)
        return outputs

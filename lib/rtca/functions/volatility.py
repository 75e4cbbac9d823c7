"""Volatility Pulsar Function: typed tickers -> one realized-volatility record per product and closed window.

Late prices (event time in an already emitted window) are dropped and counted (metric ``late``). State is in
memory only (see `rtca.functions.flow`). userConfig: ``dead_letter``, optional ``window_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rtca.analytics.volatility import DEFAULT_WINDOW_MS, Volatility
from rtca.functions.flow import DerivedFunction
from rtca.functions.runtime import Context


class VolatilityFunction(DerivedFunction):
    """Per product: std (ddof=1) of log returns per closed tumbling window, annualised (rtca.analytics.volatility)."""

    name = "volatility"

    def setup(self, context: Context, config: Mapping[str, Any]) -> Volatility:
        return Volatility(int(config.get("window_ms", DEFAULT_WINDOW_MS)))

    def compute(self, record: dict[str, Any], context: Context) -> list[tuple[str, dict[str, Any]]]:
        late = self.engine.late
        outputs = super().compute(record, context)
        if self.engine.late != late:
            context.record_metric("late", 1)
        return outputs

"""Trade-flow Pulsar Function: typed matches -> one trade-flow record per product and closed window.

Restart: each window record carries its product's state after the match that closed it (the next window's sums
and the late count: ``state``), with ``sources`` (that match's id) and ``version``; a product's matches stay
unacknowledged until such a record holds their effect. A restarted instance takes the last record per product of
its output topic and skips redelivered matches by message id (`rtca.functions.resume`): a window open at the
restart is emitted once, complete. userConfig: ``dead_letter``, optional ``window_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rtca.analytics.flow import DEFAULT_WINDOW_MS, TradeFlow
from rtca.functions.resume import WindowedFunction
from rtca.functions.runtime import Context


class TradeFlowFunction(WindowedFunction):
    """Per product and tumbling event-time window: taker buy/sell volume, counts, notional, imbalance, VWAP."""

    name = "trade flow"

    def setup(self, context: Context, config: Mapping[str, Any]) -> TradeFlow:
        return TradeFlow(int(config.get("window_ms", DEFAULT_WINDOW_MS)))

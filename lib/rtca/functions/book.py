"""Order-book Pulsar Function: typed level2 (snapshot, l2update) -> book summaries at an event-time cadence.

Valid summaries go to the output topic (``coinbase-book``); a crossed book or an update before a snapshot goes, as
an alert record (rule ``book_crossed`` / ``book_no_snapshot``), to the ``alerts`` topic, and the product's book
waits for the next snapshot. State is in memory only: after a restart a product's book waits for a snapshot
(the exchange sends one per subscription, so until ingest resubscribes that product publishes nothing).
userConfig: ``dead_letter``, ``alerts``, optional ``cadence_ms`` (1000) and ``depth_bps`` (50).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rtca.analytics.alerts import book_problem_alert
from rtca.analytics.book import DEFAULT_CADENCE_MS, DEFAULT_DEPTH_BPS, BookTracker
from rtca.functions.flow import DerivedFunction
from rtca.functions.runtime import Context, user_config


class OrderBookFunction(DerivedFunction):
    name = "book"

    def setup(self, context: Context, config: Mapping[str, Any]) -> BookTracker:
        self._alerts = user_config(context, "alerts")
        return BookTracker(int(config.get("cadence_ms", DEFAULT_CADENCE_MS)),
                           float(config.get("depth_bps", DEFAULT_DEPTH_BPS)))  # fmt: skip

    def compute(self, record: dict[str, Any], context: Context) -> list[tuple[str, dict[str, Any]]]:
        outputs = []
        for out in self.engine.update(record):
            if out.get("valid"):
                outputs.append((self._output, out))
            else:
                context.record_metric("book_problems", 1)
                outputs.append((self._alerts, book_problem_alert(out)))
        return outputs

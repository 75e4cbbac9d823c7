"""Alerts Pulsar Function: ticker, book, volatility and feed-health records -> alert records.

Inputs are told apart by their shape (`rtca.analytics.alerts.AlertEngine.evaluate`), so one instance takes all
four topics. Rules: userConfig ``rules`` (the list under ``rules:`` in ``infra/alerts.yaml``, rendered by
deploy), else the file ``rules_file``, else ``infra/alerts.yaml`` of the checkout. Hysteresis state is in memory:
after a restart an alert whose condition still holds fires once more. userConfig: ``dead_letter``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rtca.analytics.alerts import AlertEngine, load_rules, parse_rules
from rtca.functions.flow import DerivedFunction
from rtca.functions.runtime import Context


class AlertsFunction(DerivedFunction):
    name = "alerts"

    def setup(self, context: Context, config: Mapping[str, Any]) -> AlertEngine:
        rules = config.get("rules")
        if rules is not None:
            return AlertEngine(parse_rules(rules))
        path = config.get("rules_file")
        if path is None:
            from rtca.settings import PROJECT_ROOT

            path = PROJECT_ROOT / "infra" / "alerts.yaml"
        return AlertEngine(load_rules(path))

    def compute(self, record: dict[str, Any], context: Context) -> list[tuple[str, dict[str, Any]]]:
        return [(self._output, alert) for alert in self.engine.evaluate(record)]

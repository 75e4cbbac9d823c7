"""Alerts Pulsar Function: ticker, book, volatility and feed-health records -> alert records.

One instance takes all four topics; userConfig ``inputs`` maps each input topic to what its records are
(`rtca.analytics.alerts.SOURCES`), so a record is never taken for another kind because of a field the router
passed through (a topic not in the map: its records' shape decides). Rules: userConfig ``rules`` (the list under
``rules:`` in ``infra/alerts.yaml``, rendered by deploy), else the file ``rules_file``, else ``infra/alerts.yaml``
of the checkout.

Restart: state is per key (product; feed source for ``feed_stalled``): armed flags (hysteresis), the prices of
the price-move window, the volatility history, the last reported gap (`AlertEngine.state_of`). Every alert record
carries its key's state after the input that fired it (``state``, ``sources``, ``version``), and a key whose state
changed without an alert gets a ``state`` record on the companion topic ``state_topic`` after ``checkpoint_every``
(256) such inputs; those inputs stay unacknowledged until then, and an input that changes no state (most book and
feed-health records) is acknowledged at once. A restarted instance takes per key the checkpoint with the highest
version from both topics and skips redelivered inputs by message id (`rtca.functions.resume`), so an alert whose
condition persists across a restart does not fire again, and one that re-armed before it can fire.
userConfig: ``dead_letter``, ``state_topic``, ``inputs``, optional ``checkpoint_every``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rtca.analytics.alerts import AlertEngine, load_rules, parse_rules
from rtca.functions.resume import CheckpointedFunction, Output
from rtca.functions.runtime import Context, topic_of_partition


class AlertsFunction(CheckpointedFunction):
    name = "alerts"
    _sources: Mapping[str, str] = {}
    _source: str | None = None

    def process(self, input: Any, context: Context) -> None:  # noqa: A002 - the runtime's parameter name
        self.ensure_started(context)  # reads `inputs`
        self._source = self._sources.get(topic_of_partition(context.get_current_message_topic_name() or ""))
        super().process(input, context)

    def setup(self, context: Context, config: Mapping[str, Any]) -> AlertEngine:
        self._sources = dict(config.get("inputs") or {})
        rules = config.get("rules")
        if rules is not None:
            return AlertEngine(parse_rules(rules))
        path = config.get("rules_file")
        if path is None:
            from rtca.settings import PROJECT_ROOT

            path = PROJECT_ROOT / "infra" / "alerts.yaml"
        return AlertEngine(load_rules(path))

    def key_of(self, record: Mapping[str, Any]) -> str | None:
        return self.engine.key_of(record, self._source)  # type: ignore[no-any-return]

    def compute(self, record: dict[str, Any], context: Context) -> list[Output]:
        return [(self._output, alert) for alert in self.engine.evaluate(record, self._source)]

    def changed(self) -> bool:
        return self.engine.changed  # type: ignore[no-any-return]

    def state_of(self, key: str) -> dict[str, Any]:
        return self.engine.state_of(key)  # type: ignore[no-any-return]

    def resume_key(self, key: str, state: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
        self.engine.resume(key, state)
        return True

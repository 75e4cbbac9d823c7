"""Trade-flow Pulsar Function: typed matches -> one trade-flow record per product and closed window.

Also home of `DerivedFunction`, the thin pattern the book, flow, volatility and alerts functions share: decode
JSON, call one `rtca.analytics` object, publish its records (keyed by product) then acknowledge the input; an input
that gives no record is acknowledged at once; one it cannot use goes to the dead letter.

State is in memory only: after a restart the open windows start afresh (a window open at the restart may be
emitted partially, from the messages after it). userConfig: ``dead_letter``, optional ``window_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pulsar

from rtca.analytics.flow import DEFAULT_WINDOW_MS, TradeFlow
from rtca.functions.routing import Reason, dead_letter_record, encode_dead_letter
from rtca.functions.runtime import Context, Publisher, message_id_text, received_ms_of, user_config


class DerivedFunction(pulsar.Function):
    """Records in, `self.compute(record, context)` -> [(topic, record)] out; subclasses set up `self.engine`."""

    name = "derived"

    def __init__(self) -> None:
        self._publisher: Publisher | None = None
        self._output = ""
        self._dead_letter = ""
        self.engine: Any = None

    def setup(self, context: Context, config: Mapping[str, Any]) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def compute(self, record: dict[str, Any], context: Context) -> list[tuple[str, dict[str, Any]]]:
        return [(self._output, out) for out in self.engine.update(record)]

    def process(self, input: Any, context: Context) -> None:  # noqa: A002 - the runtime's parameter name
        if self._publisher is None:
            self._output = context.get_output_topic()
            self._dead_letter = user_config(context, "dead_letter")
            self.engine = self.setup(context, context.get_user_config_map())
            self._publisher = Publisher(context)
        try:
            record = orjson.loads(input)
            if not isinstance(record, dict):
                raise TypeError("not a JSON object")
            outputs = self.compute(record, context)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self._reject(context, input, f"{type(exc).__name__}: {exc}")
            return
        # The input is acknowledged once every record it produced is stored (none: at once).
        self._publisher.publish_all_then_ack(context, [
            (output_topic, orjson.dumps(out), out.get("product_id"),
             out["event_ms"] if type(out.get("event_ms")) is int else None)
            for output_topic, out in outputs
        ])
        context.record_metric("records", len(outputs))

    def _reject(self, context: Context, payload: Any, detail: str) -> None:
        data = payload if isinstance(payload, bytes) else str(payload).encode("utf-8", "backslashreplace")
        record = dead_letter_record(
            Reason.INVALID_FIELD, f"{self.name}: {detail}", data,
            source_topic=context.get_current_message_topic_name(),
            source_message_id=message_id_text(context.get_message_id()),
            received_ms=received_ms_of(context.get_message_properties()),
        )  # fmt: skip
        context.record_metric("dead_letters", 1)
        self._publisher.publish_then_ack(context, self._dead_letter, encode_dead_letter(record))  # type: ignore[union-attr]


class TradeFlowFunction(DerivedFunction):
    """Per product and tumbling event-time window: taker buy/sell volume, counts, notional, imbalance, VWAP."""

    name = "trade flow"

    def setup(self, context: Context, config: Mapping[str, Any]) -> TradeFlow:
        return TradeFlow(int(config.get("window_ms", DEFAULT_WINDOW_MS)))

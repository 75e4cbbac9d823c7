"""Router Pulsar Function: raw Coinbase frames -> one typed topic per channel, control topic, dead letters.

userConfig (rendered from settings by `rtca functions deploy`): ``topics``, a map from each channel name of
`rtca.functions.routing.CHANNELS` and ``dead_letter`` to a full topic name.

Exactly once across restarts: inputs not yet acknowledged when an instance dies or the broker restarts are
redelivered and routed again; their records carry sequence ids derived from the input's position under stable
producer names, so the broker's deduplication drops the second copy (`runtime.Publisher(dedup=True)`).
"""

from __future__ import annotations

from typing import Any

import pulsar

from rtca.functions import routing
from rtca.functions.runtime import (
    Context,
    Publisher,
    freeze_startup_objects,
    message_id_text,
    received_ms_of,
    user_config,
)


def cut_from(properties: dict[str, str]) -> int | None:
    """The full size of a frame ingest published only the start of (properties ``error`` = ``oversized``,
    ``payload_bytes``), else None."""
    size = properties.get("payload_bytes", "")
    if properties.get("error") != "oversized" or not (size.isascii() and size.isdigit() and len(size) <= 18):
        return None  # not a cut frame, or a size no ingest wrote ("²" is a digit int() refuses): routed as it is
    return int(size)


class Router(pulsar.Function):
    """Decode, validate, convert (`routing.route`), publish; never raises on input."""

    def __init__(self) -> None:
        self._topics: dict[str, str] = {}
        self._publisher: Publisher | None = None

    def _setup(self, context: Context) -> Publisher:
        freeze_startup_objects()
        topics = dict(user_config(context, "topics"))
        missing = [c for c in (*routing.CHANNELS, routing.DEAD_LETTER) if not topics.get(c)]
        if missing:
            raise KeyError(f"userConfig topics lacks {missing}")
        self._topics = topics
        self._publisher = Publisher(context, dedup=True)  # one record per input: re-publishes are dropped
        return self._publisher

    def process(self, input: Any, context: Context) -> None:  # noqa: A002 - the runtime's parameter name
        publisher = self._publisher or self._setup(context)
        properties = context.get_message_properties()
        source = context.get_current_message_topic_name()
        routed = routing.route(
            input if isinstance(input, (bytes, str)) else str(input),
            received_ms=received_ms_of(properties),
            source_topic=source,
            product_hint=properties.get("product"),
            cut_from=cut_from(properties) if "error" in properties else None,
        )
        data = routed.data
        if routed.channel == routing.DEAD_LETTER:  # only a dead letter needs the message id as text
            routed.record["source_message_id"] = message_id_text(context.get_message_id())
            data = routing.encode_dead_letter(routed.record)
            context.record_metric("dead_letters", 1)
        publisher.publish_then_ack(context, self._topics[routed.channel], data, key=routed.key,
                                   event_ms=routed.event_ms, source=source)  # fmt: skip

"""Identity Pulsar Functions: the baselines of the end-to-end benchmark (`rtca.bench.functions_e2e`).

`Identity` is the Functions runtime's own cost with no work of ours: it returns its input, which the runtime
publishes and acknowledges. `PublishingIdentity` adds our way of publishing (`runtime.Publisher`: our own producer,
``MANUAL`` acknowledgement once the record is stored, acknowledgements in batches) and still no processing, so the
benchmark can tell the cost of our processing from that of our publishing.
"""

from __future__ import annotations

from typing import Any

import pulsar

from rtca.functions.runtime import Context, Publisher, freeze_startup_objects


class Identity(pulsar.Function):
    """Returns its input: the runtime publishes it to the output topic and acknowledges the input."""

    def process(self, input: Any, context: Any) -> Any:  # noqa: A002 - the runtime's parameter name
        return input


class PublishingIdentity(pulsar.Function):
    """Publishes its input unchanged to the output topic through `Publisher`, as the router and the statistics
    publish their records (deploy it with the ``MANUAL`` guarantee)."""

    def __init__(self) -> None:
        self._publisher: Publisher | None = None
        self._output = ""

    def process(self, input: Any, context: Context) -> None:  # noqa: A002 - the runtime's parameter name
        publisher = self._publisher
        if publisher is None:
            freeze_startup_objects()
            self._output = context.get_output_topic()
            publisher = self._publisher = Publisher(context)
        publisher.publish_then_ack(context, self._output, input)

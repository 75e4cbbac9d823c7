"""Identity Pulsar Function: the baseline of the end-to-end benchmark (the runtime's own cost, no work of ours)."""

from __future__ import annotations

from typing import Any

import pulsar


class Identity(pulsar.Function):
    """Returns its input: the runtime publishes it to the output topic and acknowledges the input."""

    def process(self, input: Any, context: Any) -> Any:  # noqa: A002 - the runtime's parameter name
        return input

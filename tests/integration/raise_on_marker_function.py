"""A Pulsar Function for tests/integration/test_function_exceptions.py: it raises on a marker input, so the test
knows which exception `rtca functions status` must show. Deployed as a file of its own (not part of `rtca`)."""

from __future__ import annotations

from typing import Any

import pulsar

MARKER = b"rtca-test-raise:"


class RaiseOnMarker(pulsar.Function):
    """Returns its input, except an input starting with MARKER: a ValueError naming the rest of it."""

    def process(self, input: Any, context: Any) -> Any:  # noqa: A002 - the runtime's parameter name
        data = bytes(input)
        if data.startswith(MARKER):
            raise ValueError(f"marker input seen: {data[len(MARKER):].decode()}")
        return data

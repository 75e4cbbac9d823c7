"""Loopback ports in a known state, for checks of what answers and what refuses."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def open_and_refusing_ports() -> Iterator[tuple[int, int]]:
    """(a port that accepts connections, a port that refuses them: bound, not listening), while the block runs."""
    with socket.socket() as listening, socket.socket() as refusing:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        refusing.bind(("127.0.0.1", 0))
        yield listening.getsockname()[1], refusing.getsockname()[1]

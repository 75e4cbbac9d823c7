"""Concise user-facing progress for long steps: one line when a step starts, one when it ends."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def step(message: str) -> Iterator[None]:
    """Print `message ...`, run the block, then `done (12.3 s)` or `failed (..)` so waits are never silent."""
    say(f"- {message} ...")
    started = time.monotonic()
    try:
        yield
    except BaseException:
        say(f"  failed after {time.monotonic() - started:.1f} s")
        raise
    say(f"  done ({time.monotonic() - started:.1f} s)")

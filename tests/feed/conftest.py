"""Shared helpers of the feed unit tests (no Pulsar: in-process servers and in-memory sinks)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from rtca.feed.capture import SHIPPED_CAPTURE, Capture, read_capture

T = TypeVar("T")


@pytest.fixture
def run() -> Callable[..., Any]:
    """Run a coroutine to completion in a fresh loop, failing the test if it takes longer than `timeout`."""

    def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(timeout):
                return await coro

        return asyncio.run(bounded())

    return run


@pytest.fixture(scope="session")
def shipped() -> Capture:
    return read_capture(SHIPPED_CAPTURE)


@pytest.fixture(scope="session")
def small(shipped: Capture) -> Capture:
    """The shipped capture's first 1,500 frames (snapshots, tickers and matches included): for tests where the
    whole 10,000 frames add only time."""
    return Capture(shipped.events[:4 + 1500], shipped.path)


class FakeLoopClock:
    """Stands in for the `asyncio` module of a paced source (`rtca.feed.simulator`, `rtca.feed.replay`): the loop's
    time is `now`, and `sleep` advances it, so a test reads the pacing off `now` with no wall clock involved."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def get_running_loop(self) -> FakeLoopClock:
        return self

    def time(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += delay

    async def send_times(self, source: Any) -> list[float]:
        """When `source` (its module's `asyncio` being this clock) hands out each frame, in seconds after it resumed."""
        start = self.now
        source.resume()
        out = []
        while await source.next() is not None:
            out.append(self.now - start)
        return out


@pytest.fixture
def loop_clock() -> FakeLoopClock:
    return FakeLoopClock()

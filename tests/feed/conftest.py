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

"""Finite and graceful runs: SIGINT / SIGTERM set an event; a run ends at a deadline or that event, then flushes."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


@contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """Inside a running loop: an event that SIGINT / SIGTERM set (only in the main thread; elsewhere it is only
    set by whoever holds it)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def run_until(
    work: Coroutine[Any, Any, str], *, duration: float | None = None,
    stop: asyncio.Event | Sequence[asyncio.Event] | None = None,
) -> str:  # fmt: skip
    """Await `work`, which returns why it ended, unless `duration` seconds pass first ("duration") or `stop` (or
    one of several) is set ("stopped"): then it is cancelled. An exception of `work` propagates."""
    events = [stop] if isinstance(stop, asyncio.Event) else list(stop or [])
    task = asyncio.create_task(work)
    stoppers = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait({task, *stoppers}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, *stoppers):
            pending.cancel()
        await asyncio.gather(task, *stoppers, return_exceptions=True)
    if not task.cancelled():
        return task.result()
    return "stopped" if any(not s.cancelled() for s in stoppers) else "duration"

"""Finite and graceful runs: SIGINT / SIGTERM set an event; a run ends at a deadline or that event, then flushes."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine, Iterator
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
    work: Coroutine[Any, Any, str], *, duration: float | None = None, stop: asyncio.Event | None = None
) -> str:
    """Await `work`, which returns why it ended, unless `duration` seconds pass first ("duration") or `stop` is
    set ("stopped"): then it is cancelled. An exception of `work` propagates."""
    task = asyncio.create_task(work)
    stopper = asyncio.create_task((stop or asyncio.Event()).wait())
    try:
        await asyncio.wait({task, stopper}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopper):
            pending.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
    if not task.cancelled():
        return task.result()
    return "stopped" if not stopper.cancelled() else "duration"

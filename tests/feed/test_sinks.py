"""Publisher: a record counts as acked only once the sink confirmed it; retries; back-pressure; drain."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

from rtca.errors import ServiceError
from rtca.feed.sinks import Done, MemorySink, PermanentSendError, Publisher, Record, require_reachable

Run = Callable[..., Any]


class HeldSink:
    """Confirms nothing until `release()`, then confirms from another thread (as Pulsar's callbacks do)."""

    def __init__(self) -> None:
        self.held: list[tuple[Record, Done]] = []

    def send(self, record: Record, done: Done) -> None:
        self.held.append((record, done))

    async def flush(self) -> None:
        pass

    def release(self) -> None:
        held, self.held = self.held, []
        thread = threading.Thread(target=lambda: [done(None) for _, done in held])
        thread.start()
        thread.join()


def record(number: int) -> Record:
    return Record(f'{{"n":{number}}}'.encode(), "test")


def test_acked_only_after_the_sink_confirms(run: Run) -> None:
    async def scenario() -> tuple[int, int, int, bool]:
        sink = HeldSink()
        publisher = Publisher(sink)
        for number in range(100):
            publisher.publish(record(number))
        acked_before = publisher.acked
        sink.release()
        drained = await publisher.drain(5.0)
        return acked_before, publisher.acked, publisher.pending, drained

    assert run(scenario()) == (0, 100, 0, True)


def test_in_flight_records_are_bounded(run: Run) -> None:
    async def scenario() -> tuple[bool, bool]:
        sink = HeldSink()
        publisher = Publisher(sink, max_in_flight=10)
        for number in range(10):
            publisher.publish(record(number))
        waiter = asyncio.create_task(publisher.wait_capacity())
        await asyncio.sleep(0.05)
        blocked = not waiter.done()
        sink.release()
        await asyncio.wait_for(waiter, 1.0)
        return blocked, waiter.done()

    assert run(scenario()) == (True, True)


def test_failures_are_retried_and_finite_retries_give_up(run: Run) -> None:
    async def scenario(retries: int | None) -> tuple[int, int, int, int]:
        sink = MemorySink(fail_first=6)
        publisher = Publisher(sink, retries=retries, retry_delay=0.01)
        for number in range(3):
            publisher.publish(record(number))
        await publisher.drain(5.0)
        return len(sink.records), publisher.acked, publisher.failed, publisher.retried

    assert run(scenario(None)) == (3, 3, 0, 6)  # each record failed twice, then was stored
    assert run(scenario(1)) == (0, 0, 3, 3)  # one retry each, both failed


def test_drain_times_out_and_reports_pending(run: Run) -> None:
    async def scenario() -> tuple[bool, int]:
        publisher = Publisher(HeldSink())
        publisher.publish(record(1))
        return await publisher.drain(0.1), publisher.pending

    assert run(scenario()) == (False, 1)


def test_permanent_errors_are_not_retried(run: Run) -> None:
    class RefusingSink(MemorySink):
        def send(self, record: Record, done: Done) -> None:
            done(PermanentSendError("pulsar: MessageTooBig"))

    async def scenario() -> tuple[int, int, int]:
        publisher = Publisher(RefusingSink())
        publisher.publish(record(1))
        await publisher.drain(1.0)
        return publisher.failed, publisher.retried, publisher.pending

    assert run(scenario()) == (1, 0, 0)


def test_a_broker_is_reachable_if_any_host_of_the_url_accepts() -> None:
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        up, down = listening.getsockname()[1], closed.getsockname()[1]
        require_reachable(f"pulsar://127.0.0.1:{down},127.0.0.1:{up}")
        require_reachable(f"pulsar://127.0.0.1:{up}/")
        for url in (f"pulsar://127.0.0.1:{down}", "pulsar://127.0.0.1:notaport", "pulsar://"):
            with pytest.raises(ServiceError, match="no broker answers"):
                require_reachable(url, timeout=1)

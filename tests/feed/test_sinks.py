"""Publisher: a record counts as acked only once the sink confirmed it; retries; back-pressure; drain."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pulsar
import pytest

from rtca.errors import ServiceError
from rtca.settings import Settings, load_settings
from rtca.feed.sinks import Done, MemorySink, PermanentSendError, Publisher, PulsarSink, Record, require_reachable
from fake_pulsar import pulsar_broker, silent, tcp_serving
from ports import open_and_refusing_ports

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


def test_in_flight_bytes_are_bounded(run: Run) -> None:
    """Large frames (a hostile server's, or full snapshots) while the broker confirms nothing: the reader must
    wait long before the records held reach 10,000 x a few MB."""

    async def scenario() -> tuple[int, bool]:
        sink = HeldSink()
        publisher = Publisher(sink, max_in_flight_bytes=8 * 1024 * 1024)
        big = Record(b"x" * (1024 * 1024), "test")
        published = 0
        while published < 100:
            try:
                await asyncio.wait_for(publisher.wait_capacity(), 0.05)
            except TimeoutError:
                break
            publisher.publish(big)
            published += 1
        sink.release()
        await asyncio.wait_for(publisher.wait_capacity(), 1.0)
        return published, await publisher.drain(5.0)

    assert run(scenario()) == (8, True)


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


def test_ingest_starts_when_a_broker_of_the_url_answers_and_names_the_setting_when_none_does() -> None:
    def at(url: str) -> Settings:
        return load_settings(pulsar={"service_url_override": url})

    with open_and_refusing_ports() as (_, down), tcp_serving(pulsar_broker([])) as up, tcp_serving(silent) as mute:
        require_reachable(at(f"pulsar://127.0.0.1:{down},127.0.0.1:{up}"))
        require_reachable(at(f"pulsar://127.0.0.1:{up}/"))
        with pytest.raises(ServiceError, match="did not answer: .*refused"):  # refused: at once, as before
            require_reachable(at(f"pulsar://127.0.0.1:{down}"), timeout=1)
        # a port that accepts TCP but is not a broker (the admin API's, Superset's): the client would wait a minute
        with pytest.raises(ServiceError, match="not answer as a Pulsar broker.*RTCA_PULSAR__SERVICE_URL_OVERRIDE"):
            require_reachable(at(f"pulsar://127.0.0.1:{mute}"), timeout=1)
    with tcp_serving(silent) as mute:
        with pytest.raises(ServiceError, match="RTCA_PULSAR__BROKER_PORT"):
            require_reachable(load_settings(pulsar={"broker_port": mute}), timeout=1)


class StrandedProducer:
    """The C++ producer's surface as `PulsarSink` uses it. Unless `confirms`, sends are held (no callback runs) and
    a flush waits, until closed, which fails them as the client does; confirming, sends are stored in order."""

    def __init__(self, *, connected: bool, confirms: bool | None = None) -> None:
        self.connected = connected
        self.confirms = connected if confirms is None else confirms
        self.stored: list[bytes] = []
        self.held: list[tuple[bytes, Any]] = []
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def topic(self) -> str:
        return "persistent://t/n/raw"

    def is_connected(self) -> bool:
        return self.connected and not self.closed

    def send_async(self, value: bytes, callback: Any, **_: Any) -> None:
        if self.closed:
            raise pulsar.PulsarException("AlreadyClosed")  # type: ignore[call-arg]
        if not self.confirms:
            self.held.append((value, callback))
            return
        self.stored.append(value)
        if callback is not None:
            callback(pulsar.Result.Ok, None)

    def flush(self) -> None:
        if not self.confirms:
            self._closed.wait()
            raise pulsar.PulsarException("AlreadyClosed")  # type: ignore[call-arg]

    def close(self) -> None:
        self._closed.set()
        held, self.held = self.held, []
        for _, callback in held:
            if callback is not None:
                callback(pulsar.Result.AlreadyClosed, None)


def test_a_stranded_producer_is_replaced_and_its_records_resent(run: Run) -> None:
    """Disconnected while the broker answers, past `stranded_after`: every record it held, in a confirmed group or
    still waiting for one, is stored by the new producer."""
    stranded, fresh = StrandedProducer(connected=False), StrandedProducer(connected=True)

    async def reopen() -> StrandedProducer:
        return fresh

    async def scenario() -> tuple[int, int, int]:
        sink = PulsarSink(stranded, confirm_every=8, reopen=reopen,  # type: ignore[arg-type]
                          stranded_after=0.2, check_every=0.02)
        publisher = Publisher(sink, retry_delay=0.01)
        for number in range(20):  # two confirmed groups of 8 held by the old producer, 4 waiting for a third
            publisher.publish(record(number))
        assert await publisher.drain(5.0)
        await sink.close()
        return sink.replaced, publisher.acked, publisher.failed

    assert run(scenario()) == (1, 20, 0)
    assert stranded.closed and not stranded.stored
    assert sorted(fresh.stored) == sorted(record(n).value for n in range(20))


def test_a_group_swept_just_before_a_replacement_is_not_confirmed_by_the_new_producer(run: Run) -> None:
    """The sweep's flush task starts a loop iteration after the sweep: a replacement in between must not let the new
    producer's flush confirm records the old one held (they were never stored)."""
    import time

    stranded, fresh = StrandedProducer(connected=False), StrandedProducer(connected=True)

    async def reopen() -> StrandedProducer:
        return fresh

    async def scenario() -> tuple[int, int]:
        sink = PulsarSink(stranded, reopen=reopen, stranded_after=3600)  # type: ignore[arg-type]
        publisher = Publisher(sink, retry_delay=0.01)
        for number in range(4):
            publisher.publish(record(number))  # all waiting for the sweep
        time.sleep(sink.confirm_after * 1.5)
        sink._sweep()  # its flush task is created, not started ...
        await sink.replace_producer()  # ... when the watchdog's reopen returns
        assert await publisher.drain(2.0)
        await sink.close()
        return publisher.acked, len(fresh.stored)

    assert run(scenario()) == (4, 4)


@pytest.mark.parametrize("connected, broker_answers", [(True, True), (False, False)])
def test_a_producer_is_kept_while_connected_or_while_the_broker_is_away(run: Run, connected: bool,
                                                                        broker_answers: bool) -> None:  # fmt: skip
    """Slow confirmations from a connected producer, or a broker that refuses connections (an outage the client
    rides out by itself): no replacement, the records stay in flight."""
    producer = StrandedProducer(connected=connected, confirms=False)
    reopened: list[bool] = []

    async def reopen() -> StrandedProducer:
        reopened.append(True)
        return StrandedProducer(connected=True)

    async def scenario() -> tuple[int, int, bool]:
        sink = PulsarSink(producer, reopen=reopen, broker_answers=lambda: broker_answers,  # type: ignore[arg-type]
                          stranded_after=0.05, check_every=0.01)
        publisher = Publisher(sink)
        for number in range(5):
            publisher.publish(record(number))
        await asyncio.sleep(0.3)
        await sink.close()
        outcome = publisher.pending, sink.replaced, producer.closed
        producer.close()  # ends the sweep's flush, waiting in a worker thread
        return outcome

    assert run(scenario()) == (5, 0, False)
    assert not reopened


def test_a_quiet_feed_on_a_stranded_producer_leaves_the_watchdog_worker_threads(run: Run) -> None:
    """Each sweep's flush waits while the producer is disconnected: one per sweep would take every worker thread of
    the loop's executor, and the watchdog (which needs one to ask the broker) would never replace the producer."""
    from concurrent.futures import ThreadPoolExecutor

    stranded, fresh = StrandedProducer(connected=False), StrandedProducer(connected=True)

    async def reopen() -> StrandedProducer:
        return fresh

    async def scenario() -> tuple[int, int]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(4))
        sink = PulsarSink(stranded, reopen=reopen, stranded_after=0.3, check_every=0.05)  # type: ignore[arg-type]
        publisher = Publisher(sink, retry_delay=0.01)
        for number in range(12):  # pairs: the second of each waits for a sweep
            publisher.publish(record(2 * number))
            publisher.publish(record(2 * number + 1))
            await asyncio.sleep(0.05)
        drained = await publisher.drain(3.0)
        stranded.close()  # ends any flush still waiting
        await sink.close()
        return sink.replaced, publisher.acked if drained else -1

    assert run(scenario()) == (1, 24)

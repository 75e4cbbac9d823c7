"""Where ingest's records go, with at-least-once accounting.

A `Sink` takes a record without blocking and reports, once per record and from any thread, whether it is stored.
`PulsarSink` is a batching Pulsar producer; `MemorySink` keeps records in a list (unit tests, dry runs).
`Publisher` sits in front of a sink: a record only counts as acked when the sink confirmed it, failed sends are
retried, in-flight records are bounded in number and in bytes (back-pressure on the websocket reader), and
`drain()` waits for all of them (flush on exit).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import pulsar

from rtca.errors import ServiceError
from rtca.settings import Settings
from rtca.stack.broker_check import broker_not_answering, broker_setting
from rtca.stack.remote import pulsar_client_options

log = logging.getLogger(__name__)

Done = Callable[[BaseException | None], None]


@dataclass(frozen=True, slots=True)
class Record:
    value: bytes
    key: str
    properties: dict[str, str] = field(default_factory=dict)
    event_ms: int | None = None


class Sink(Protocol):
    def send(self, record: Record, done: Done) -> None:
        """Hand the record over without blocking; call `done(None)` once stored, `done(error)` if not."""

    async def flush(self) -> None:
        """Send what the sink buffers now (acks still arrive through `done`)."""


class MemorySink:
    """Records in a list; the first `fail_first` sends fail (to exercise retries)."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.records: list[Record] = []
        self._fail = fail_first

    def send(self, record: Record, done: Done) -> None:
        if self._fail > 0:
            self._fail -= 1
            done(ConnectionError("injected send failure"))
            return
        self.records.append(record)
        done(None)

    async def flush(self) -> None:
        pass


class PermanentSendError(Exception):
    """A send that no retry can fix (the record itself is refused); the publisher counts it as failed at once."""


_PERMANENT = frozenset({pulsar.Result.MessageTooBig, pulsar.Result.InvalidMessage, pulsar.Result.TopicTerminated,
                        pulsar.Result.AuthorizationError, pulsar.Result.InvalidTopicName})


#: Long enough for a restarted broker to answer a producer's reconnection: it replays the topic's deduplication
#: state first (11 s for the raw topic on a loaded machine). A reconnection that times out is retried by the C++
#: client while the broker creates the first one late; the retry is refused ("already connected") and the producer
#: stays disconnected for good, its records pending (seen in the broker-restart test at 15 s).
OPERATION_TIMEOUT_S = 60

#: A producer disconnected this long while its broker accepts connections is taken as stranded (the C++ client
#: gave up reconnecting it, see `OPERATION_TIMEOUT_S`) and replaced (`PulsarSink`).
STRANDED_AFTER_S = 2 * OPERATION_TIMEOUT_S


def pulsar_client(settings: Settings, *, operation_timeout_s: int = OPERATION_TIMEOUT_S) -> pulsar.Client:
    """A client for the configured cluster, token and TLS included (C++ logs warnings and up, to stdout)."""
    return pulsar.Client(
        settings.pulsar.service_url,
        operation_timeout_seconds=operation_timeout_s,
        logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn),
        **pulsar_client_options(settings),
    )


class PulsarSink:
    """A batching producer on one topic; `open()` it from a running loop.

    Its sends never time out: while the broker is away (a restart), the client keeps every pending record and, once
    reconnected, resends them in order under the same producer name and sequence ids, so the broker's deduplication
    (enabled on the namespace) drops any it had already stored. A send timeout would instead fail them after 30 s,
    and the publisher's retries would put them on the topic again behind newer records: out of order, and twice
    when the broker had stored one whose receipt was lost. The publisher's bound on records in flight (below the
    producer's queue) still applies back-pressure to the feed, and `drain` still bounds a shutdown.

    Confirmations come in groups: only every `confirm_every`-th record (or the first one `confirm_after` seconds
    after the last confirmation) carries a callback. The client completes a producer's sends in order, so once that
    record is stored, every record sent before it is too, and its callback settles the whole group: one hand-over of
    the GIL from the client's thread per group instead of per record (the publish path alone went from about 7,000
    to 17,000 msg/s). A timer settles a group that waits longer (a quiet feed) by flushing the producer. Records
    large enough to be refused on their own (`_SOLO_BYTES`; ingest cuts frames well below Pulsar's limit) carry a
    callback of their own, so a refusal can never hide in a group.

    A watchdog replaces a stranded producer: one disconnected for `stranded_after` seconds while `broker_answers()`
    (the C++ client can give up reconnecting for good, `OPERATION_TIMEOUT_S`). The old producer is closed, which
    fails its pending records; the publisher resends them on the new one (at least once: a record the broker had
    stored before the disconnection, its receipt lost, is stored twice, as the new producer has a new name).
    """

    def __init__(
        self,
        producer: pulsar.Producer,
        *,
        confirm_every: int = 64,
        confirm_after: float = 0.02,
        reopen: Callable[[], Awaitable[pulsar.Producer]] | None = None,
        broker_answers: Callable[[], bool] = lambda: True,
        stranded_after: float = STRANDED_AFTER_S,
        check_every: float = 5.0,
    ) -> None:
        self._producer = producer
        self.confirm_every = confirm_every
        self.confirm_after = confirm_after
        self.replaced = 0
        self._loop = asyncio.get_running_loop()
        self._waiting: list[Done] = []
        self._marked = time.monotonic()
        self._sweep_at: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._reopen = reopen
        self._watchdog = None if reopen is None else self._loop.create_task(
            self._watch(broker_answers, stranded_after, check_every), name="pulsar-producer-watchdog")

    @classmethod
    async def open(cls, client: pulsar.Client, topic: str, *, max_pending: int = 20_000,
                   broker_answers: Callable[[], bool] = lambda: True) -> PulsarSink:  # fmt: skip
        async def create() -> pulsar.Producer:
            return await asyncio.to_thread(
                client.create_producer,
                topic,
                batching_enabled=True,
                batching_max_publish_delay_ms=5,
                max_pending_messages=max_pending,
                block_if_queue_full=False,
                send_timeout_millis=0,
            )

        try:
            producer = await create()
        except Exception as exc:
            raise ServiceError(
                "pulsar", f"cannot create a producer on {topic}: {exc}", hint="is the stack up? `rtca up`"
            ) from exc
        return cls(producer, reopen=create, broker_answers=broker_answers)

    async def close(self) -> None:
        """Stop the watchdog (the client's close closes the producer)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)

    async def _watch(self, broker_answers: Callable[[], bool], stranded_after: float, check_every: float) -> None:
        disconnected_since: float | None = None
        while True:
            await asyncio.sleep(check_every)
            if self._producer.is_connected():
                disconnected_since = None
                continue
            now = time.monotonic()
            disconnected_since = disconnected_since or now
            if now - disconnected_since < stranded_after or not await asyncio.to_thread(broker_answers):
                continue
            try:
                await self.replace_producer()
            except Exception as exc:  # noqa: BLE001 - the old producer stays; tried again at the next check
                log.warning("cannot replace the disconnected producer on %s: %s", self._producer.topic(), exc)
            disconnected_since = None

    async def replace_producer(self) -> None:
        """Send on a new producer from now on; what the old one had not confirmed fails, so the publisher resends
        it. The records waiting for a group's confirmation belong to the old producer: they fail with it."""
        if self._reopen is None:
            raise RuntimeError("this sink cannot open a producer")
        new = await self._reopen()
        old, self._producer = self._producer, new
        orphans, self._waiting, self._marked = self._waiting, [], time.monotonic()
        self.replaced += 1
        log.warning("replaced the producer on %s, disconnected while its broker answers; resending what it held",
                    new.topic())
        try:
            await asyncio.to_thread(old.close)  # fails its pending sends (their callbacks: AlreadyClosed)
        except Exception as exc:  # noqa: BLE001 - closed or not, its records are resent below and by callbacks
            log.info("closing the replaced producer: %s", exc)
        _settle_group(orphans, pulsar.Result.AlreadyClosed, None)

    def send(self, record: Record, done: Done) -> None:
        """Runs on the loop's thread (the publisher's); `done` may be called from the client's thread."""
        if len(record.value) > _SOLO_BYTES:
            self._send(record, done, [done])
            return
        self._waiting.append(done)
        now = time.monotonic()
        group = None
        if len(self._waiting) >= self.confirm_every or now - self._marked >= self.confirm_after:
            group, self._waiting, self._marked = self._waiting, [], now
        elif self._sweep_at is None:
            self._sweep_at = self._loop.call_later(self.confirm_after, self._sweep)
        self._send(record, done, group)

    def _send(self, record: Record, done: Done, group: list[Done] | None) -> None:
        """Send `record`, with a callback settling `group` when given (the record's own `done` is its last)."""
        callback = None if group is None else functools.partial(_settle_group, group)
        try:
            self._producer.send_async(record.value, callback, properties=record.properties,
                                      partition_key=record.key, event_timestamp=record.event_ms)  # fmt: skip
        except Exception as exc:
            # Refused before it was sent: this record fails alone; the rest of its group waits for the next
            # confirmation (or the sweep).
            for waiting in (group, self._waiting):
                if waiting and waiting[-1] is done:
                    waiting.pop()
            if group:
                self._waiting[:0] = group
                if self._sweep_at is None:
                    self._sweep_at = self._loop.call_later(self.confirm_after, self._sweep)
            refused = isinstance(exc, (TypeError, ValueError, OverflowError))
            done(PermanentSendError(f"pulsar refused the record: {exc}") if refused else exc)

    def _sweep(self) -> None:
        """Settle the records that waited `confirm_after` without a confirmation (a quiet feed): flush, then ack."""
        self._sweep_at = None
        if not self._waiting:
            return
        if time.monotonic() - self._marked < self.confirm_after or self._flushes:
            # One sweep's flush at a time: a flush waits while the producer is disconnected, and one worker thread
            # held per sweep would exhaust the default executor the watchdog needs (`_watch`); the next flush
            # covers these records too.
            self._sweep_at = self._loop.call_later(self.confirm_after, self._sweep)
            return
        group, self._waiting, self._marked = self._waiting, [], time.monotonic()
        # the producer these records went to, taken now: the task starts later, perhaps after a replacement
        task = self._loop.create_task(self._flush_group(group, self._producer))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_group(self, group: list[Done], producer: pulsar.Producer) -> None:
        """Flush returns once everything sent before it is stored (or raises): the group's outcome. A flush that
        ends after its producer was replaced proves nothing (the records may have failed with it): resent."""
        try:
            await asyncio.to_thread(producer.flush)
            if producer is not self._producer:
                raise ConnectionError("the producer was replaced")
        except Exception as exc:  # noqa: BLE001 - reported per record; the publisher retries them
            _settle_group(group, pulsar.Result.UnknownError, None, error=ConnectionError(f"pulsar flush: {exc}"))
            return
        _settle_group(group, pulsar.Result.Ok, None)

    async def flush(self) -> None:
        group, self._waiting, self._marked = self._waiting, [], time.monotonic()
        await self._flush_group(group, self._producer)


_SOLO_BYTES = 256 * 1024
"""Records above this get a confirmation of their own (`PulsarSink`)."""


def _settle_group(group: list[Done], result: pulsar.Result, _message_id: object, *,
                  error: BaseException | None = None) -> None:  # fmt: skip
    """Report one outcome for every record of a group. Runs on a Pulsar thread, where an exception would terminate
    the process."""
    if error is None and result != pulsar.Result.Ok:
        error = (PermanentSendError if result in _PERMANENT else ConnectionError)(f"pulsar: {result}")
    for done in group:
        try:
            done(error)
        except Exception:
            log.exception("ack callback failed")


def require_reachable(settings: Settings, *, timeout: float = 5.0) -> None:
    """A ServiceError within `timeout` when no Pulsar broker answers at the service URL: the client would only fail
    after its whole operation timeout (a minute, `OPERATION_TIMEOUT_S`), also on a port of another service."""
    reason = broker_not_answering(settings, settings.pulsar.service_url, broker_setting(settings), timeout=timeout)
    if reason is not None:
        raise ServiceError("pulsar", reason, hint="is Pulsar up? `rtca status` (`rtca up` starts the stack)")


@asynccontextmanager
async def pulsar_sinks(settings: Settings, *topics: str) -> AsyncIterator[list[PulsarSink]]:
    """One sink per topic on one client, closed (with its producers) on exit."""
    await asyncio.to_thread(require_reachable, settings)
    client = pulsar_client(settings)

    def broker_answers() -> bool:
        return broker_not_answering(settings, settings.pulsar.service_url, broker_setting(settings)) is None

    sinks: list[PulsarSink] = []
    try:
        for topic in topics:
            sinks.append(await PulsarSink.open(client, topic, broker_answers=broker_answers))
        yield sinks
    finally:
        for sink in sinks:
            await sink.close()
        await asyncio.to_thread(client.close)


class Publisher:
    """At-least-once accounting in front of a sink; create it inside the running loop.

    A failed send is retried (after `retry_delay` x attempt, at most `max_retry_delay`) until it is stored, or
    `retries` times when set, unless the error is a `PermanentSendError`; what is still unsettled when `drain`
    times out is reported as `pending`.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        max_in_flight: int = 10_000,
        max_in_flight_bytes: int = 256 * 1024 * 1024,
        retries: int | None = None,
        retry_delay: float = 1.0,
        max_retry_delay: float = 10.0,
    ) -> None:
        self.sink = sink
        self.max_in_flight = max_in_flight
        self.max_in_flight_bytes = max_in_flight_bytes
        self.retries = retries
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.sent = 0
        self.acked = 0
        self.retried = 0
        self.failed = 0
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._settled = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._outcomes: deque[tuple[Record, int, BaseException | None]] = deque()
        self._wakeup_scheduled = False

    @property
    def pending(self) -> int:
        return self._in_flight

    def publish(self, record: Record) -> None:
        """Hand a record over now (never waits: a cancelled caller loses nothing it received)."""
        self.sent += 1
        self._in_flight += 1
        self._in_flight_bytes += len(record.value)
        self._send(record, 0)

    async def wait_capacity(self) -> None:
        # in bytes too: 10,000 frames of a few MB each (a hostile server, a stalled broker) are tens of GB
        while self._in_flight >= self.max_in_flight or self._in_flight_bytes >= self.max_in_flight_bytes:
            await self._next_settlement()

    async def drain(self, timeout: float) -> bool:
        """Flush the sink and wait until every record is settled; False (and a log) on timeout."""
        try:
            async with asyncio.timeout(timeout):
                try:
                    await self.sink.flush()
                except Exception as exc:  # the records stay in flight: their callbacks still settle them
                    log.warning("flush failed: %s", exc)
                while self._in_flight:
                    await self._next_settlement()
        except TimeoutError:
            log.error("%d records still unacknowledged after %g s", self._in_flight, timeout)
            return False
        return True

    async def _next_settlement(self) -> None:
        self._settled.clear()
        await self._settled.wait()

    def _send(self, record: Record, attempt: int) -> None:
        self.sink.send(record, functools.partial(self._from_any_thread, record, attempt))

    def _from_any_thread(self, record: Record, attempt: int, error: BaseException | None) -> None:
        """Queue the outcome; wake the loop once per burst of acks, not once per record."""
        self._outcomes.append((record, attempt, error))
        if not self._wakeup_scheduled:
            self._wakeup_scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._settle_queued)
            except RuntimeError:  # the loop is closed: the run is over and reported these records as pending
                pass

    def _settle_queued(self) -> None:
        self._wakeup_scheduled = False  # before draining: an outcome queued from now on schedules another wakeup
        while self._outcomes:
            self._settle(*self._outcomes.popleft())

    def _settle(self, record: Record, attempt: int, error: BaseException | None) -> None:
        retry = self.retries is None or attempt < self.retries
        if error is not None and retry and not isinstance(error, PermanentSendError):
            self.retried += 1
            if self.retried == 1 or self.retried % 1000 == 0:
                log.warning("send failed (%s): %d retries so far", error, self.retried)
            delay = min(self.max_retry_delay, self.retry_delay * (attempt + 1))
            self._loop.call_later(delay, self._send, record, attempt + 1)
            return
        if error is None:
            self.acked += 1
        else:
            self.failed += 1
            log.error("record with key %s lost after %d attempts: %s", record.key, attempt + 1, error)
        self._in_flight -= 1
        self._in_flight_bytes -= len(record.value)
        self._settled.set()

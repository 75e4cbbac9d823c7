"""What every rtca Pulsar Function shares: raw bytes in, publish-then-ack out, settings from `userConfig`.

Acknowledgement: our functions publish themselves (to several topics, with a partition key) and run with the
``MANUAL`` processing guarantee, so an input message is acknowledged only once its output is stored
(`Publisher`). The runtime's default (ATLEAST_ONCE with auto-ack) acknowledges right after ``process`` returns
when the function returns nothing, before such publishes complete: a crash could lose them.
"""

from __future__ import annotations

import gc
import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any, Protocol, TypeVar

import pulsar

from rtca.analytics.checks import now_ms, receipt_time

_T = TypeVar("_T")

MessageIdKey = tuple[int, int, int]
"""(ledger, entry, batch index): orders the messages of one topic partition."""


class RawSerDe:
    """Input/output serde that passes bytes through untouched.

    The runtime's default `IdentitySerDe` turns a payload that looks like a number into an int/float and tries three
    conversions per message; the router must see exactly the bytes that arrived.
    """

    def serialize(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        raise TypeError(f"RawSerDe cannot serialize {type(value).__name__}")

    def deserialize(self, input_bytes: bytes) -> bytes:
        return input_bytes


RAW_SERDE = f"{RawSerDe.__module__}.{RawSerDe.__qualname__}"


class Context(Protocol):
    """The part of `pulsar.Context` our functions use (a fake implements it in the unit tests)."""

    def get_message_id(self) -> Any: ...
    def get_current_message_topic_name(self) -> str: ...
    def get_message_properties(self) -> Mapping[str, str]: ...
    def get_message_key(self) -> str | None: ...
    def get_user_config_map(self) -> Mapping[str, Any]: ...
    def get_input_topics(self) -> list[str]: ...
    def get_output_topic(self) -> str: ...
    def get_logger(self) -> Any: ...
    def get_pulsar_client(self) -> Any: ...
    def publish(self, topic_name: str, message: bytes, serde_class_name: str = ..., properties: Any = ...,
                compression_type: Any = ..., callback: Any = ..., message_conf: Any = ...) -> None: ...  # fmt: skip
    def ack(self, msgid: Any, topic: str) -> None: ...
    def record_metric(self, metric_name: str, metric_value: float) -> None: ...
    def get_function_tenant(self) -> str: ...
    def get_function_namespace(self) -> str: ...
    def get_function_name(self) -> str: ...


def freeze_startup_objects() -> None:
    """Move everything allocated so far (the runtime, pulsar, grpc, our modules) out of the garbage collector's
    reach: a function instance is a long-running process whose full collections would otherwise rescan those
    hundred thousand objects again and again (measured: several microseconds per message). Once per process."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


_frozen = False


_PARTITION = re.compile(r"-partition-\d+$")


def topic_of_partition(topic: str) -> str:
    """The topic a partition topic (``...-partition-N``) belongs to; any other topic itself."""
    return _PARTITION.sub("", topic)


def message_id_key(message_id: Any) -> MessageIdKey:
    return (message_id.ledger_id(), message_id.entry_id(), message_id.batch_index())


def message_id_text(message_id: Any) -> str:
    """`ledger:entry:partition:batch`, the form the dead-letter records and Pinot plugin use."""
    return f"{message_id.ledger_id()}:{message_id.entry_id()}:{message_id.partition()}:{message_id.batch_index()}"


def user_config(context: Context, key: str) -> Any:
    """A required `userConfig` entry (rendered from settings at deploy); a clear error if deploy did not set it."""
    value = context.get_user_config_map().get(key)
    if value is None:
        raise KeyError(f"userConfig has no {key!r}: deploy the function with `rtca functions deploy`")
    return value


def received_ms_of(properties: Mapping[str, str]) -> int:
    """The ingest receive time from the `received_ms` message property, else now: also for one more than
    `rtca.analytics.checks.MAX_AHEAD_MS` after this clock (`receipt_time`), which would let an event time far ahead
    pass the router's check."""
    try:
        value = int(properties.get("received_ms", ""))
        return receipt_time(value) if value > 0 else now_ms()
    except (TypeError, ValueError):
        return now_ms()


class _Countdown:
    """Inputs answered by several records: acknowledged when the last of them is stored."""

    __slots__ = ("inputs", "_left", "_lock")

    def __init__(self, inputs: list[tuple[Any, str]], records: int) -> None:
        self.inputs, self._left = inputs, records
        self._lock = threading.Lock()  # confirmations arrive on the client's threads and the sweeper's

    def stored(self) -> bool:
        """One more of its records is stored; True when that was the last."""
        with self._lock:
            self._left -= 1
            return self._left == 0


_Entry = tuple[Any, str] | list[tuple[Any, str]] | _Countdown
"""Input(s) waiting for their record(s): (message id, source topic); a list of them (a checkpoint settles every
input its state took in); or a countdown over several records."""


@dataclass
class _Output:
    """One output topic: its producer and the inputs whose records were sent but are not acknowledged yet."""

    producer: Any
    pending: list[_Entry] = field(default_factory=list)
    marked_ns: int = 0
    #: Deduplicated outputs only: the highest sequence id handed to the producer (or stored under its name before).
    last_sequence_id: int | None = None


# Sequence ids of deduplicated records: the input's (ledger, entry, batch index + 1) packed into 63 bits, + 1 (the
# client treats 0 as "none"). Ledger ids grow over a topic's life, entries within a ledger, batch indexes within an
# entry: the packed ids grow with the input's position, as the broker's deduplication requires.
_ENTRY_BITS, _BATCH_BITS = 20, 14
_LEDGER_LIMIT, _ENTRY_LIMIT, _BATCH_LIMIT = 1 << (63 - _ENTRY_BITS - _BATCH_BITS), 1 << _ENTRY_BITS, 1 << _BATCH_BITS


def input_sequence_id(message_id: Any) -> int | None:
    """The sequence id of the record answering the input `message_id`, or None when the position does not fit
    (more than a million entries in one ledger or 16,382 messages in one batch: far beyond Pulsar's defaults)."""
    ledger, entry, batch = message_id.ledger_id(), message_id.entry_id(), message_id.batch_index() + 1
    if not (0 <= ledger < _LEDGER_LIMIT - 1 and 0 <= entry < _ENTRY_LIMIT and 0 <= batch < _BATCH_LIMIT):
        return None
    return ((ledger << _ENTRY_BITS | entry) << _BATCH_BITS | batch) + 1


SEQUENCE_PROPERTY = "rtca-seq"
"""Message property of a deduplicated record: its sequence id (see `Publisher`)."""

#: How far before the topic's last record `highest_stored` looks for a producer's last batch, widening in turn.
TAIL_WINDOWS_MS = (10_000, 300_000, 6 * 3_600_000)


def highest_stored(client: Any, topic: str, producer_name: str, first_of_last_batch: int) -> int:
    """The highest sequence id stored under `producer_name` on `topic`, given the first id of its last stored batch
    (what the broker tells a new producer): the highest `SEQUENCE_PROPERTY` of that producer's records from that
    one on. Reads the records published up to 10 s, then 5 min, then 6 h before the topic's last one, then the whole
    topic, until it finds that batch; without it (records from before the property existed), the broker's mark."""
    reader = client.create_reader(topic, pulsar.MessageId.latest, start_message_id_inclusive=True)
    try:
        if not reader.has_message_available():
            return first_of_last_batch
        last_published = reader.read_next(10_000).publish_timestamp()
        for window in (*TAIL_WINDOWS_MS, None):
            reader.seek(pulsar.MessageId.earliest if window is None else max(0, last_published - window))
            found, highest = False, first_of_last_batch
            while _has_message_available(reader):
                message = reader.read_next(10_000)
                if message.producer_name() != producer_name:
                    continue
                try:
                    sequence_id = int(message.properties().get(SEQUENCE_PROPERTY, ""))
                except ValueError:
                    continue
                found = found or sequence_id == first_of_last_batch
                if found:
                    highest = max(highest, sequence_id)
            if found:
                return highest
        return first_of_last_batch
    finally:
        reader.close()


def key_partition(key: str | None, partitions: int) -> int:
    """The partition (0 to `partitions` - 1) a deduplicated record with `key` goes to.

    Deterministic, because deduplication is per partition: a redelivered input must meet the mark of the partition
    its first record went to, and a product's records must share one partition (its order, Pinot's upsert by
    product). The hash is Java's `String.hashCode`, the Java client's default (``JavaStringHash``); the Python
    client's own (Boost's hash) cannot be computed from Python. A record without a key goes to partition 0 rather
    than round robin, which would send a redelivered input to another partition than its first copy."""
    return _java_string_hash(key) % partitions if key and partitions > 1 else 0


@lru_cache(maxsize=4096)  # a few products, looked up once per record
def _java_string_hash(key: str) -> int:
    """Java's `key.hashCode() & Integer.MAX_VALUE` (over UTF-16 code units, as Java counts them)."""
    units, value = key.encode("utf-16-be"), 0
    for i in range(0, len(units), 2):
        value = (31 * value + (units[i] << 8 | units[i + 1])) & 0xFFFFFFFF
    return value & 0x7FFFFFFF


def _has_message_available(reader: Any, patience_s: float = 30.0) -> bool:
    """`has_message_available`, retried while the reader reconnects (a seek closes it on the broker's side)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return bool(reader.has_message_available())
        except pulsar.PulsarException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def retry_until_done(what: str, call: Callable[[], _T], log: Any,
                     on_failure: Callable[[], None] | None = None) -> _T:  # fmt: skip
    """`call()`, retried with a growing delay (0.5 s up to 10 s) until it works; each failure is logged as a warning
    (and `on_failure()` called). For steps a function cannot go on without, which giving up would not make work."""
    delay = 0.5
    while True:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - retried; a lasting cause shows in the instance's log
            if on_failure is not None:
                on_failure()
            log.warning("%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


class Publisher:
    """Publishes our records and acknowledges each input once its record is stored, in batches.

    Why not one callback per message (as the runtime does for a function's return value): every callback makes the
    client's I/O thread take the GIL from the function's thread, and with Python in the loop that hand-over, not
    our code, dominates the cost of a message. So only every `ack_every`-th record (or the first after `ack_after_ms`)
    carries a callback; the broker stores a producer's messages in order, so when it confirms that one, it has
    stored every record sent before it on that topic, and their inputs are acknowledged together. A sweeper thread
    flushes and acknowledges what waits longer than `ack_after_ms` (a stream that pauses), so nothing stays
    unacknowledged. A failed publish leaves its inputs unacknowledged: Pulsar redelivers them after a restart.

    Its own producers (not ``context.publish``, which adds a serde lookup, a copy and a callback layer per message)
    batch for 10 ms and never time a send out (as the runtime's output producer), so a broker outage delays records
    instead of losing them.

    ``dedup=True`` (a function answering each input with at most one record per output topic, e.g. the router)
    makes a republished input no duplicate. Pulsar redelivers every input not yet acknowledged when an instance dies
    or the broker restarts, and a function processes it again: without this, its record would be stored twice. Each
    record gets a sequence id derived from its input's position (`input_sequence_id`), and each (input topic, output
    topic) pair a producer name derived from the function and the two topics, the same in every instance and after
    every restart: the broker's deduplication (on for the namespace) then drops a record whose sequence id is not
    above the highest it stored under that name. A record at or below that mark, or below what this instance already
    handed to its producer, is not sent again: its input is acknowledged with the records sent after it.

    These producers batch too, which takes one care: the broker keeps a batch's first sequence id only (checked: a
    batch of ids 10, 20, 30 stored, a new producer of that name is told 10), so after a restart the mark it reports
    is the first record of the last stored batch, not the last. Each record also carries its sequence id as the
    property `SEQUENCE_PROPERTY`, and a new producer reads the tail of its topic back (`highest_stored`) to find the
    rest of that batch. (Pulsar's Java runtime gives up batching for effectively-once instead: a message per entry
    halves the router's rate here.)

    On a partitioned output the broker keeps that mark per partition, but a producer on the partitioned topic
    reports the highest of them: a record for a partition that had stored less would be skipped, lost. So a
    deduplicated record goes through a producer of its own partition (`key_partition`), which knows that
    partition's mark.
    """

    def __init__(self, context: Context, *, dedup: bool = False) -> None:
        config = context.get_user_config_map()
        self.ack_every = max(1, int(config.get("ack_every", 64)))
        self.ack_after_ns = int(float(config.get("ack_after_ms", 50)) * 1e6)
        self._client = context.get_pulsar_client()
        self._context = context
        self._log = context.get_logger()
        self._outputs: dict[str, _Output] = {}
        self._dedup = dedup
        #: Deduplicated outputs: each topic's partition topics (the topic itself when it is not partitioned).
        self._partitions: dict[str, list[str]] = {}
        self._lock = threading.Lock()  # the sweeper and the function's thread share the pending lists
        sweep_ms = float(config.get("ack_sweep_ms", 200))
        if sweep_ms > 0:
            threading.Thread(target=self._sweep_forever, args=(sweep_ms / 1000,), name="rtca-ack-sweeper",
                             daemon=True).start()  # fmt: skip

    def _output(self, topic: str) -> _Output:
        output = self._outputs.get(topic)
        if output is None:
            producer = self._client.create_producer(
                topic, block_if_queue_full=True, batching_enabled=True, batching_max_publish_delay_ms=10,
                send_timeout_millis=0,
            )  # fmt: skip
            output = self._outputs[topic] = _Output(producer)
        return output

    def _dedup_output(self, topic: str, source: str, key: str | None) -> _Output:
        """The deduplicating producer of (input topic `source`, output `topic`) for a record with `key`, created
        under its stable name: on a partitioned `topic`, a producer of the key's partition only.

        Each partition's producer takes the name of the whole topic's: the one a producer on the partitioned topic
        gave its partitions, so the marks the broker keeps under it stay valid. Creating it waits as long as it
        takes (a broker restarting, or the previous instance's producer of the same name still registered): going
        on with later inputs meanwhile would put their records before this one's."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = self._retrying(
                f"looking up the partitions of {topic}", lambda: list(self._client.get_topic_partitions(topic)))
        target = partitions[key_partition(key, len(partitions))] if len(partitions) > 1 else topic
        output = self._outputs.get(f"{source}>{target}")
        if output is not None:
            return output
        context = self._context
        function = f"{context.get_function_tenant()}/{context.get_function_namespace()}/{context.get_function_name()}"
        name = f"rtca:{function}:{hashlib.sha256(f'{source}>{topic}'.encode()).hexdigest()[:16]}"
        producer = self._retrying(f"creating producer {name} on {target}", lambda: self._client.create_producer(
            target, producer_name=name, block_if_queue_full=True, batching_enabled=True,
            batching_max_publish_delay_ms=10, send_timeout_millis=0,
        ))  # fmt: skip
        first = int(producer.last_sequence_id())
        last = highest_stored(self._client, target, name, first) if first >= 0 else first
        self._log.info("producer %s on %s (input %s): broker has stored up to sequence id %d (its last batch from %d)",
                       name, target, source, last, first)  # fmt: skip
        output = self._outputs[f"{source}>{target}"] = _Output(producer, last_sequence_id=last)
        return output

    def _retrying(self, what: str, call: Callable[[], _T]) -> _T:
        """`call()`, retried until it works (e.g. ProducerBusy until the broker drops the old connection)."""
        return retry_until_done(what, call, self._log)

    def publish_then_ack(self, context: Context, topic: str, data: bytes, *, key: str | None = None,
                         event_ms: int | None = None, source: str | None = None,
                         message_id: Any = None) -> None:  # fmt: skip
        """Publish `data` to `topic`; the current input (`message_id` from topic `source`: looked up when not
        given) is acknowledged once the broker has stored it."""
        entry = (context.get_message_id() if message_id is None else message_id,
                 source or context.get_current_message_topic_name())
        self._send(topic, data, key, event_ms, entry)

    def publish_all_then_ack(self, context: Context, records: Sequence[tuple[str, bytes, str | None, int | None]],
                             *, source: str | None = None, inputs: Sequence[tuple[Any, str]] | None = None
                             ) -> None:  # fmt: skip
        """Several (topic, data, key, event_ms) records answering the current input: the input is acknowledged
        once every one of them is stored, whatever topics they go to. None at all: acknowledged now.

        `inputs`, (message id, topic) pairs, are acknowledged instead of the current input: a checkpoint record
        settles every input whose effect its state holds; an empty list acknowledges nothing (records rebuilt at
        start, whose inputs the subscription settles)."""
        if inputs is None:
            pairs = [(context.get_message_id(), source or context.get_current_message_topic_name())]
            entry: _Entry = pairs[0]
        else:
            entry = pairs = list(inputs)
        if len(records) <= 1:
            if not records:
                for message_id, topic in pairs:
                    context.ack(message_id, topic)
            for topic, data, key, event_ms in records:
                self._send(topic, data, key, event_ms, entry)
            return
        countdown = _Countdown(pairs, len(records))
        for topic, data, key, event_ms in records:
            self._send(topic, data, key, event_ms, countdown)

    def _send(self, topic: str, data: bytes, key: str | None, event_ms: int | None, entry: _Entry) -> None:
        if self._dedup and type(entry) is tuple:
            self._send_once(topic, data, key, event_ms, entry)  # type: ignore[arg-type]
            return
        output = self._output(topic)
        now = time.monotonic_ns()
        with self._lock:  # held across the send: a sweep must only see inputs whose records were sent
            pending = output.pending
            pending.append(entry)
            callback = None
            if len(pending) >= self.ack_every or now - output.marked_ns >= self.ack_after_ns:
                output.pending, output.marked_ns = [], now
                callback = partial(self._stored, pending, topic)
            if event_ms is not None and event_ms > 0:
                output.producer.send_async(data, callback, partition_key=key, event_timestamp=event_ms)
            else:
                output.producer.send_async(data, callback, partition_key=key)

    def _send_once(self, topic: str, data: bytes, key: str | None, event_ms: int | None,
                   entry: tuple[Any, str]) -> None:  # fmt: skip
        """`_send` of a deduplicated record: with the sequence id of its input, unless it was sent before."""
        output = self._dedup_output(topic, entry[1], key)
        sequence_id = input_sequence_id(entry[0])
        now = time.monotonic_ns()
        with self._lock:
            pending = output.pending
            pending.append(entry)
            last = output.last_sequence_id
            if sequence_id is None:  # beyond the packing: sent on (never lost), only not deduplicated
                sequence_id = (last or 0) + 1
            elif last is not None and sequence_id <= last:
                return  # sent (or stored) already: acknowledged with the next confirmation or sweep
            output.last_sequence_id = sequence_id
            callback = None
            if len(pending) >= self.ack_every or now - output.marked_ns >= self.ack_after_ns:
                output.pending, output.marked_ns = [], now
                callback = partial(self._stored, pending, topic)
            output.producer.send_async(data, callback, partition_key=key, sequence_id=sequence_id,
                                       properties={SEQUENCE_PROPERTY: str(sequence_id)},
                                       event_timestamp=event_ms if event_ms is not None and event_ms > 0 else None)

    def _stored(self, inputs: list[_Entry], topic: str, result: Any, _message_id: Any) -> None:
        # Runs on the client's thread: an exception escaping here would kill the instance.
        try:
            if result == _OK:
                self._ack(inputs)
            else:
                self._log.error("publish to %s failed (%s): %d inputs left unacknowledged", topic, result,
                                len(inputs))  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            self._log.error("acknowledging %d inputs failed: %s", len(inputs), exc)

    def _ack(self, inputs: list[_Entry]) -> None:
        ack = self._context.ack
        for entry in inputs:
            if type(entry) is tuple:
                ack(*entry)
            elif type(entry) is list:
                for pair in entry:
                    ack(*pair)
            elif entry.stored():  # type: ignore[union-attr]
                for pair in entry.inputs:  # type: ignore[union-attr]
                    ack(*pair)

    def sweep(self, *, older_than_ns: int | None = None) -> int:
        """Flush and acknowledge the inputs waiting longer than `older_than_ns` (default `ack_after_ms`); returns
        how many waiting entries it settled (an input with several records counts once per record)."""
        limit = self.ack_after_ns if older_than_ns is None else older_than_ns
        now = time.monotonic_ns()
        done = 0
        for topic, output in list(self._outputs.items()):
            with self._lock:
                if not output.pending or now - output.marked_ns < limit:
                    continue
                inputs, output.pending, output.marked_ns = output.pending, [], now
            try:
                output.producer.flush()  # returns once everything sent so far is stored
            except Exception as exc:  # noqa: BLE001 - left unacknowledged, redelivered after a restart
                self._log.error("flushing %s failed (%s): %d inputs left unacknowledged", topic, exc, len(inputs))
                continue
            self._ack(inputs)
            done += len(inputs)
        return done

    def _sweep_forever(self, interval: float) -> None:
        while True:
            time.sleep(interval)
            try:
                self.sweep()
            except Exception as exc:  # noqa: BLE001 - e.g. the client closed at shutdown
                self._log.warning("ack sweeper stopped: %s", exc)
                return


_OK = pulsar.Result.Ok


def ack_now(context: Context) -> None:
    """Acknowledge the current input without output (e.g. a duplicate after a restart)."""
    context.ack(context.get_message_id(), context.get_current_message_topic_name())

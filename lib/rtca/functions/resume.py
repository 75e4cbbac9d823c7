"""What the stateful functions share: state carried by their own records, rebuilt from topics after a restart.

Pulsar runs here without stream storage (no Functions state API), so what a function has published is all that
survives a restart. `StatefulFunction` is the common frame (start, decode, skip what is redelivered, dead letters,
publish); `CheckpointedFunction` adds the contract of the ticker statistics, trade flow, volatility and alerts:

- State is per key (a product; for feed alerts the feed source). A *checkpoint* is a published record that carries
  one key's whole state (``state``), per input topic the id of the last input that state has taken in
  (``sources``: topic -> [ledger, entry, batch, partition]) and a ``version`` that grows with each checkpoint of
  the key. A function's output records are its checkpoints where it has one per input or per window (statistics,
  volatility, trade flow); the alerts function, whose output is rare, also writes ``state`` records to a
  companion topic every ``checkpoint_every`` inputs of a key.
- An input is acknowledged only once a checkpoint holding its effect is stored (`Progress.pending`, then
  `runtime.Publisher`), so a dead instance loses nothing that Pulsar does not redeliver: e.g. the prices of a
  volatility window still open stay unacknowledged until its record (which carries the next window's start) is
  stored. An input that changes no state is acknowledged at once.
- At start an instance reads its checkpoint topics (their compacted view: one record per key plus the
  not-yet-compacted tail) and takes, per key, the checkpoint with the highest version.
- A redelivered input whose id is at or below its key's progress on its topic is acknowledged and skipped; the
  others are processed as the first time. The output is then that of a run without a restart: no record twice,
  none missing.

The order book cannot carry its book in each record (thousands of levels); it re-reads its input from the last
snapshot instead (`rtca.functions.book`), with the same frame and the same message-id skip.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pulsar

from rtca.analytics.checks import product_id
from rtca.functions.routing import MAX_PRODUCT_ID, Reason, dead_letter_record, encode_dead_letter
from rtca.functions.runtime import (
    Context,
    MessageIdKey,
    Publisher,
    ack_now,
    freeze_startup_objects,
    message_id_key,
    message_id_text,
    received_ms_of,
    retry_until_done,
    user_config,
)

log = logging.getLogger(__name__)

Output = tuple[str, dict[str, Any]]
"""(topic, record) to publish."""

DECODE_ERRORS = (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError)
"""What a record that is not one of ours raises when read (`OverflowError`: a number too large for its use, e.g. a
window of 2**64 or an infinite float made an int)."""


# --- reading topics ---------------------------------------------------------------------------------------------------
def read_topic(client: Any, topic: str, *, timeout_ms: int = 10_000) -> Iterator[bytes]:
    """Every payload of `topic` from the earliest to the last one stored now (compacted view if there is one)."""
    reader = client.create_reader(topic, pulsar.MessageId.earliest, is_read_compacted=True)
    try:
        while reader.has_message_available():
            yield reader.read_next(timeout_ms).data()
    finally:
        reader.close()


def read_from(client: Any, topic: str, start: Sequence[int], *, timeout_ms: int = 10_000
              ) -> Iterator[tuple[MessageIdKey, bytes]]:  # fmt: skip
    """(id, payload) of every message of `topic` from the id `start` ([ledger, entry, batch, partition]) on,
    inclusive, to the last one stored now."""
    ledger, entry, batch, *rest = start
    first = pulsar.MessageId(rest[0] if rest else -1, ledger, entry, batch)
    reader = client.create_reader(topic, first, start_message_id_inclusive=True)
    try:
        while reader.has_message_available():
            message = reader.read_next(timeout_ms)
            yield message_id_key(message.message_id()), message.data()
    finally:
        reader.close()


def json_records(payloads: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON objects among `payloads` (anything else cannot be one of our records and is passed over)."""
    for payload in payloads:
        try:
            record = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield record


def product_of(payload: bytes) -> str | None:
    """The product a rejected record names, if it names one (the dead letter's ``product_id``), else None."""
    try:
        product = orjson.loads(payload).get("product_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return product if isinstance(product, str) and 0 < len(product) <= MAX_PRODUCT_ID else None


def id_list(message_id: Any) -> list[int]:
    """A message id as a record carries it: [ledger, entry, batch, partition]."""
    return [message_id.ledger_id(), message_id.entry_id(), message_id.batch_index(), message_id.partition()]


def id_key(value: Sequence[int]) -> MessageIdKey:
    """The ordering key of an id from a record ([ledger, entry, batch, ...]); ValueError (a `DECODE_ERRORS`) for
    anything else, so that a corrupt or foreign record read back at start is passed over instead of failing the
    start, which `ensure_started` would retry for ever."""
    if not isinstance(value, (list, tuple)) or len(value) < 3:
        raise ValueError(f"not a message id: {str(value)[:40]}")
    key = (int(value[0]), int(value[1]), int(value[2]))
    partition = int(value[3]) if len(value) > 3 else -1
    if not (-1 <= key[0] < _INT64 and -1 <= key[1] < _INT64 and -1 <= key[2] < _INT32 and -1 <= partition < _INT32):
        raise ValueError(f"not a message id (out of range): {str(value)[:60]}")  # the client would refuse it
    return key


_INT64, _INT32 = 1 << 63, 1 << 31
"""Bounds of a Pulsar message id's ledger and entry (int64), batch index and partition (int32)."""


# --- per-key progress ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Progress:
    """What one key's state has taken in: per input topic the last input's id; the inputs since its last stored
    checkpoint (unacknowledged until the next one is stored); the version of that checkpoint."""

    done: dict[str, MessageIdKey] = field(default_factory=dict)
    pending: list[tuple[Any, str]] = field(default_factory=list)
    version: int = 0
    #: Per input topic the last input's message id (as a record carries it once restored: a list).
    ids: dict[str, Any] = field(default_factory=dict)

    def already_done(self, topic: str, key: MessageIdKey) -> bool:
        last = self.done.get(topic)
        return last is not None and key <= last

    def take(self, topic: str, key: MessageIdKey, message_id: Any) -> None:
        self.done[topic] = key
        self.ids[topic] = message_id

    def checkpoint(self) -> dict[str, Any]:
        """The fields of the key's next checkpoint besides its state (advances the version)."""
        self.version += 1
        sources = {topic: i if type(i) is list else id_list(i) for topic, i in self.ids.items()}
        return {"sources": sources, "version": self.version}

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> Progress:
        """The progress a checkpoint record carries (``sources`` and ``version``)."""
        progress = cls(version=int(record["version"]))
        for topic, value in record["sources"].items():
            if not isinstance(topic, str):
                raise TypeError("sources: topic names must be strings")
            progress.done[topic] = id_key(value)
            progress.ids[topic] = [int(v) for v in value]
        return progress


# --- the functions ---------------------------------------------------------------------------------------------------
class StatefulFunction(pulsar.Function):
    """Records in, `compute(record, context)` -> [(topic, record)] out, published keyed by product, then the input
    acknowledged; a record it cannot use goes to the dead letter. Subclasses set up `self.engine` (`setup`), may
    rebuild state at start (`restore`) and say which inputs are redelivered ones to skip (`already_done`)."""

    name = "function"

    def __init__(self) -> None:
        self._publisher: Publisher | None = None
        #: Dead letters go out deduplicated (one per input, in input order): an input dead-lettered before a crash
        #: and redelivered after it (its acknowledgement lost) is not dead-lettered twice.
        self._dead_letters: Publisher | None = None
        self._ready = False
        self._output = ""
        self._dead_letter = ""
        self.engine: Any = None
        self.progress: dict[str, Progress] = {}

    # --- hooks -------------------------------------------------------------------------------------------------------
    def setup(self, context: Context, config: Mapping[str, Any]) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def restore(self, context: Context) -> None:
        """Rebuild state from topics (once, before the first input)."""

    def key_of(self, record: Mapping[str, Any]) -> str | None:
        return product_id(record)

    def already_done(self, key: str | None, topic: str, message_id: MessageIdKey) -> bool:
        """True for an input whose effect the state already holds (redelivered after a restart)."""
        progress = self.progress.get(key) if key is not None else None
        return progress is not None and progress.already_done(topic, message_id)

    def still_pending(self, key: str | None, topic: str, message_id: MessageIdKey) -> bool:
        """True for an input this instance took in whose effect no stored checkpoint holds yet: redelivered to the
        running instance (a broker restart or topic unload redelivers what is unacknowledged), acknowledging it
        now would lose it should the instance die before that checkpoint is stored."""
        return False

    def compute(self, record: dict[str, Any], context: Context) -> list[Output]:
        return [(self._output, out) for out in self.engine.update(record)]

    def message_key(self, topic: str, record: Mapping[str, Any]) -> str | None:
        """The key a record is published with (compaction keeps the last record per key)."""
        return record.get("product_id")

    # --- the frame ---------------------------------------------------------------------------------------------------
    def _start(self, context: Context) -> None:
        """Settings, engine, publisher and restored state; an error propagates (`ensure_started` retries)."""
        freeze_startup_objects()
        self._output = context.get_output_topic()
        self._dead_letter = user_config(context, "dead_letter")
        self.engine = self.setup(context, context.get_user_config_map())
        self.progress = {}
        if self._publisher is None:
            self._publisher = Publisher(context)
            self._dead_letters = Publisher(context, dedup=True)
        self.restore(context)
        self._ready = True

    def ensure_started(self, context: Context) -> None:
        """Start before the first input, retrying until it works (a checkpoint topic's reader timing out while a
        broker restarts). Raising would hand the input back to the runtime as failed: it would come again after
        later inputs of its key, and be skipped then as already done, lost."""
        if not self._ready:
            retry_until_done(f"{self.name}: start", lambda: self._start(context), context.get_logger(),
                             on_failure=lambda: context.record_metric("start_failures", 1))  # fmt: skip

    def process(self, input: Any, context: Context) -> None:  # noqa: A002 - the runtime's parameter name
        self.ensure_started(context)
        message_id = context.get_message_id()
        topic = context.get_current_message_topic_name()
        id_ = message_id_key(message_id)
        try:
            record = orjson.loads(input)
            if not isinstance(record, dict):
                raise TypeError("not a JSON object")
            key = self.key_of(record)
            if self.already_done(key, topic, id_):
                if not self.still_pending(key, topic, id_):
                    ack_now(context)  # else it is acknowledged with the checkpoint that will hold it
                context.record_metric("redelivered_skipped", 1)
                return
            outputs = self.compute(record, context)
        except DECODE_ERRORS as exc:
            self._reject(context, input, f"{type(exc).__name__}: {exc}")
            return
        except Exception as exc:  # a record the kernel does not foresee: dead-lettered, the stream goes on
            log.exception("%s: a record broke the kernel; dead-lettered", self.name)
            self._reject(context, input, f"{type(exc).__name__}: {exc}", reason=Reason.INTERNAL_ERROR)
            return
        self.settle(context, key, outputs, message_id, topic, id_)

    def settle(self, context: Context, key: str | None, outputs: list[Output], message_id: Any, topic: str,
               id_: MessageIdKey) -> None:  # fmt: skip
        """Publish `outputs`; the input is acknowledged once all are stored (none: at once)."""
        self.publish(context, outputs)

    def publish(self, context: Context, outputs: list[Output], inputs: Sequence[tuple[Any, str]] | None = None
                ) -> None:  # fmt: skip
        self._publisher.publish_all_then_ack(context, [  # type: ignore[union-attr]
            (topic, orjson.dumps(out), self.message_key(topic, out),
             out["event_ms"] if type(out.get("event_ms")) is int else None)
            for topic, out in outputs
        ], inputs=inputs)  # fmt: skip
        if outputs:
            context.record_metric("records", len(outputs))

    def _reject(self, context: Context, payload: Any, detail: str, *, reason: Reason = Reason.INVALID_FIELD) -> None:
        data = payload if isinstance(payload, bytes) else str(payload).encode("utf-8", "backslashreplace")
        record = dead_letter_record(
            reason, f"{self.name}: {detail}", data,
            source_topic=context.get_current_message_topic_name(),
            source_message_id=message_id_text(context.get_message_id()),
            received_ms=received_ms_of(context.get_message_properties()), product_id=product_of(data),
        )  # fmt: skip
        context.record_metric("dead_letters", 1)
        dead_letters: Publisher = self._dead_letters  # type: ignore[assignment]
        dead_letters.publish_then_ack(context, self._dead_letter, encode_dead_letter(record))


class CheckpointedFunction(StatefulFunction):
    """A `StatefulFunction` whose records carry their key's state (see the module docstring).

    Subclasses give one key's state (`state_of`) and take it back (`resume_key`); `changed` says whether the last
    input changed any state. With a ``state_topic`` in userConfig, a key with ``checkpoint_every`` (default 256)
    inputs waiting gets a ``state`` record there, so that few inputs wait for a rare output.
    """

    checkpoint_every_default = 256

    def _start(self, context: Context) -> None:
        config = context.get_user_config_map()
        self._state_topic: str | None = config.get("state_topic") or None
        self._checkpoint_every = max(1, int(config.get("checkpoint_every", self.checkpoint_every_default)))
        super()._start(context)

    def state_of(self, key: str) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def resume_key(self, key: str, state: Mapping[str, Any], record: Mapping[str, Any]) -> bool:  # pragma: no cover
        """Take a checkpoint's state for `key`; False when it cannot (other parameters): the key starts afresh."""
        raise NotImplementedError

    def changed(self) -> bool:
        return True

    def still_pending(self, key: str | None, topic: str, message_id: MessageIdKey) -> bool:
        progress = self.progress.get(key) if key is not None else None
        return progress is not None and any(t == topic and message_id_key(m) == message_id
                                            for m, t in progress.pending)  # fmt: skip

    def checkpoint_topics(self) -> list[str]:
        """Where its checkpoints are: the output topic (all of its records go there) and the state topic."""
        return [self._output, *([self._state_topic] if self._state_topic else [])]

    def restore(self, context: Context) -> None:
        client = context.get_pulsar_client()
        used = 0
        for topic in self.checkpoint_topics():
            for record in json_records(read_topic(client, topic)):
                key, state = record.get("product_id"), record.get("state")
                if not isinstance(key, str) or not isinstance(state, dict):
                    continue  # not a checkpoint (e.g. an alert of the order book)
                try:
                    progress = Progress.of_record(record)
                    current = self.progress.get(key)
                    if current is not None and progress.version <= current.version:
                        continue
                    if not self.resume_key(key, state, record):
                        continue
                except DECODE_ERRORS + (AttributeError,):
                    continue  # an older format: it cannot define a state
                self.progress[key] = progress
                used += 1
        context.get_logger().info("%s: resumed %d keys from %d checkpoints of %s", self.name, len(self.progress),
                                  used, ", ".join(self.checkpoint_topics()))  # fmt: skip

    def settle(self, context: Context, key: str | None, outputs: list[Output], message_id: Any, topic: str,
               id_: MessageIdKey) -> None:  # fmt: skip
        if key is None:
            self.publish(context, outputs)
            return
        progress = self.progress.get(key)
        if progress is None:
            progress = self.progress[key] = Progress()
        changed = self.changed()
        if changed:
            progress.take(topic, id_, message_id)
        if outputs:
            # The last record carries the state: records of one producer are stored in order, so once it is stored
            # every record of this input is, and so is the effect of every input the key has taken in.
            outputs[-1][1].update(state=self.state_of(key), **progress.checkpoint())
            inputs, progress.pending = [*progress.pending, (message_id, topic)], []
            self.publish(context, outputs, inputs)
        elif not changed:
            ack_now(context)
        else:
            progress.pending.append((message_id, topic))
            if self._state_topic and len(progress.pending) >= self._checkpoint_every:
                record = {"product_id": key, "state": self.state_of(key), **progress.checkpoint()}
                inputs, progress.pending = progress.pending, []
                self.publish(context, [(self._state_topic, record)], inputs)


class WindowedFunction(CheckpointedFunction):
    """Tumbling event-time windows per product (trade flow, volatility): each window record is its product's
    checkpoint. The engine has ``window_ms``, ``update(record)``, ``product_state(product)`` and
    ``resume_product(product, state)``."""

    def state_of(self, key: str) -> dict[str, Any]:
        return self.engine.product_state(key)  # type: ignore[no-any-return]

    def resume_key(self, key: str, state: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
        if record.get("window_ms") != self.engine.window_ms:
            return False  # emitted with other windows: that product starts afresh
        self.engine.resume_product(key, state)
        return True

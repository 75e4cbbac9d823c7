"""A tiny stand-in for the Pulsar Functions context (unit tests only; the integration tests use the real runtime)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pulsar
import pytest


@dataclass(frozen=True)
class FakeMessageId:
    ledger: int
    entry: int
    batch: int = -1
    part: int = -1

    def ledger_id(self) -> int:
        return self.ledger

    def entry_id(self) -> int:
        return self.entry

    def batch_index(self) -> int:
        return self.batch

    def partition(self) -> int:
        return self.part


@dataclass
class Published:
    topic: str
    data: bytes
    conf: dict[str, Any]
    acked: bool = False


class FakeLogger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str, *args: Any) -> None:
        self.lines.append(msg % args if args else msg)

    error = warning = debug = info


@dataclass(frozen=True)
class FakeMessage:
    payload: bytes
    id: Any
    producer: str = ""
    props: dict[str, str] = field(default_factory=dict)

    def data(self) -> bytes:
        return self.payload

    def producer_name(self) -> str:
        return self.producer

    def properties(self) -> dict[str, str]:
        return self.props

    def publish_timestamp(self) -> int:
        return 0

    def message_id(self) -> Any:
        return self.id


class FakeReader:
    def __init__(self, messages: list[FakeMessage], everything: list[FakeMessage]) -> None:
        self._messages, self._all = list(messages), everything

    def has_message_available(self) -> bool:
        return bool(self._messages)

    def read_next(self, timeout_millis: int | None = None) -> FakeMessage:
        return self._messages.pop(0)

    def seek(self, _position: Any) -> None:
        """Back to the whole topic (the fake keeps no publish times)."""
        self._messages = list(self._all)

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self, context: FakeContext, topic: str, name: str | None = None) -> None:
        self.context, self.topic, self.name = context, topic, name

    def send_async(self, data: bytes, callback: Callable[..., None] | None, **conf: Any) -> None:
        """Stores and completes at once (or fails, when the context says so). Refuses a key, time or sequence id of
        another type with ValueError, as the real client does before sending."""
        for name, kind in (("partition_key", str), ("event_timestamp", int), ("sequence_id", int)):
            if conf.get(name) is not None and not isinstance(conf[name], kind):
                raise ValueError(f"{name} must be a {kind.__name__}, not {type(conf[name]).__name__}")
        if self.context.fail_publish:
            if callback is not None:
                callback(pulsar.Result.Timeout, None)
            return
        self.context.published.append(Published(self.topic, bytes(data), conf))
        self.context.topics.setdefault(self.topic, []).append(bytes(data))
        self.context.producers.setdefault(self.topic, []).append((self.name or "", conf.get("properties") or {}))
        if callback is not None:
            callback(pulsar.Result.Ok, None)

    def flush(self) -> None:
        if self.context.fail_publish:
            raise pulsar.Timeout()

    def last_sequence_id(self) -> int:
        """What the broker stored under this producer's name before (deduplicating publishers), else -1: given for
        (topic, name), or for the name on every topic."""
        stored = self.context.stored_sequence_ids
        return stored.get((self.topic, self.name), stored.get(self.name, -1)) if self.name else -1


class FakeClient:
    """Readers serve what a topic holds in the context's `topics` (what earlier instances published)."""

    def __init__(self, context: FakeContext) -> None:
        self.context = context

    def create_reader(self, topic: str, start: Any, start_message_id_inclusive: bool = False, **_: Any
                      ) -> FakeReader:  # fmt: skip
        """From the earliest, or from `start` (a message id of that topic's `message_ids`)."""
        payloads = self.context.topics.get(topic, [])
        ids = self.context.message_ids.get(topic) or [FakeMessageId(1, i + 1) for i in range(len(payloads))]
        meta = self.context.producers.get(topic) or [("", {})] * len(payloads)
        everything = messages = [FakeMessage(p, i, *m) for p, i, m in zip(payloads, ids, meta)]
        if start is pulsar.MessageId.latest:
            messages = messages[-1:] if start_message_id_inclusive else []
        elif start is not pulsar.MessageId.earliest:
            first = (start.ledger_id(), start.entry_id(), start.batch_index())
            key = lambda m: (m.id.ledger, m.id.entry, m.id.batch)  # noqa: E731
            messages = [m for m in messages if key(m) > first or (start_message_id_inclusive and key(m) == first)]
        return FakeReader(messages, everything)

    def get_topic_partitions(self, topic: str) -> list[str]:
        """The partition topics of a topic the context's `partitions` gives a count for, else the topic itself."""
        count = self.context.partitions.get(topic, 0)
        return [f"{topic}-partition-{i}" for i in range(count)] if count else [topic]

    def create_producer(self, topic: str, producer_name: str | None = None, **_: Any) -> FakeProducer:
        return FakeProducer(self.context, topic, producer_name)


@dataclass
class FakeContext:
    """Feeds messages one at a time; its client's producers store and complete at once (or fail on request)."""

    user_config: dict[str, Any]
    output_topic: str = ""
    input_topic: str = "persistent://t/n/in"
    topics: dict[str, list[bytes]] = field(default_factory=dict)
    #: Message ids of a topic's payloads where a test gives them (an input topic read back); else (1, 1), (1, 2)...
    message_ids: dict[str, list[FakeMessageId]] = field(default_factory=dict)
    published: list[Published] = field(default_factory=list)
    #: Per topic, (producer name, properties) of each record our producers stored there (beside `topics`).
    producers: dict[str, list[tuple[str, dict[str, str]]]] = field(default_factory=dict)
    acked: list[Any] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    fail_publish: bool = False
    #: Producer name, or (topic, producer name) -> what the broker tells a new producer of that name (on that topic):
    #: the first sequence id of its last batch.
    stored_sequence_ids: dict[str | tuple[str, str], int] = field(default_factory=dict)
    #: Topic -> its number of partitions (a partitioned topic); topics not named here are not partitioned.
    partitions: dict[str, int] = field(default_factory=dict)
    logger: FakeLogger = field(default_factory=FakeLogger)
    _message_id: Any = None
    _properties: dict[str, str] = field(default_factory=dict)
    _topic: str = ""
    _input_topics: set[str] = field(default_factory=set)

    def run(self, function: Any, payload: bytes, message_id: FakeMessageId, properties: dict[str, str] | None = None,
            *, topic: str | None = None) -> None:  # fmt: skip
        """Process one message (from `topic`, default `input_topic`)."""
        self._message_id, self._properties = message_id, properties or {}
        self._topic = topic or self.input_topic
        self._input_topics.add(self._topic)
        function.process(payload, self)

    # --- the Context API our functions use -----------------------------------------------------------------------
    def get_message_id(self) -> Any:
        return self._message_id

    def get_current_message_topic_name(self) -> str:
        return self._topic or self.input_topic

    def get_message_properties(self) -> dict[str, str]:
        return self._properties

    def get_message_key(self) -> str | None:
        return None

    def get_user_config_map(self) -> dict[str, Any]:
        return self.user_config

    def get_input_topics(self) -> list[str]:
        return sorted({self.input_topic, *self._input_topics})

    def get_output_topic(self) -> str:
        return self.output_topic

    def get_logger(self) -> FakeLogger:
        return self.logger

    def get_pulsar_client(self) -> FakeClient:
        return FakeClient(self)

    def get_function_tenant(self) -> str:
        return "t"

    def get_function_namespace(self) -> str:
        return "n"

    def get_function_name(self) -> str:
        return "fn"

    def record_metric(self, name: str, value: float) -> None:
        self.metrics[name] = self.metrics.get(name, 0) + value

    def ack(self, msgid: Any, topic: str) -> None:
        assert topic in self._input_topics or topic == self.input_topic, topic
        self.acked.append(msgid)


#: Acknowledge every input at once and start no sweeper thread, so tests see acks synchronously.
IMMEDIATE_ACKS = {"ack_every": 1, "ack_sweep_ms": 0}


@pytest.fixture
def fake_context() -> Callable[..., FakeContext]:
    """`fake_context(user_config, ...)`: a FakeContext whose Publisher acknowledges synchronously (unless the
    user config says otherwise)."""

    def make(user_config: dict[str, Any], **kwargs: Any) -> FakeContext:
        return FakeContext({**IMMEDIATE_ACKS, **user_config}, **kwargs)

    return make


@pytest.fixture
def message_ids() -> Iterator[FakeMessageId]:
    """Increasing message ids, as one topic partition hands them out."""

    def generate() -> Iterator[FakeMessageId]:
        entry = 0
        while True:
            entry += 1
            yield FakeMessageId(7, entry)

    return generate()


@pytest.fixture
def message_id_class() -> type[FakeMessageId]:
    return FakeMessageId

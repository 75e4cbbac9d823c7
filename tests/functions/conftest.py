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


class FakeReader:
    def __init__(self, payloads: list[bytes]) -> None:
        self._payloads = list(payloads)

    def has_message_available(self) -> bool:
        return bool(self._payloads)

    def read_next(self, timeout_millis: int | None = None) -> Any:
        data = self._payloads.pop(0)
        return type("Msg", (), {"data": lambda self: data})()

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self, context: FakeContext, topic: str) -> None:
        self.context, self.topic = context, topic

    def send_async(self, data: bytes, callback: Callable[..., None] | None, **conf: Any) -> None:
        """Stores and completes at once (or fails, when the context says so)."""
        if self.context.fail_publish:
            if callback is not None:
                callback(pulsar.Result.Timeout, None)
            return
        self.context.published.append(Published(self.topic, bytes(data), conf))
        self.context.topics.setdefault(self.topic, []).append(bytes(data))
        if callback is not None:
            callback(pulsar.Result.Ok, None)

    def flush(self) -> None:
        if self.context.fail_publish:
            raise pulsar.Timeout()


class FakeClient:
    """Readers serve what a topic holds in the context's `topics` (what earlier instances published)."""

    def __init__(self, context: FakeContext) -> None:
        self.context = context

    def create_reader(self, topic: str, start: Any, **_: Any) -> FakeReader:
        return FakeReader(self.context.topics.get(topic, []))

    def create_producer(self, topic: str, **_: Any) -> FakeProducer:
        return FakeProducer(self.context, topic)


@dataclass
class FakeContext:
    """Feeds messages one at a time; its client's producers store and complete at once (or fail on request)."""

    user_config: dict[str, Any]
    output_topic: str = ""
    input_topic: str = "persistent://t/n/in"
    topics: dict[str, list[bytes]] = field(default_factory=dict)
    published: list[Published] = field(default_factory=list)
    acked: list[Any] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    fail_publish: bool = False
    logger: FakeLogger = field(default_factory=FakeLogger)
    _message_id: Any = None
    _properties: dict[str, str] = field(default_factory=dict)

    def run(self, function: Any, payload: bytes, message_id: FakeMessageId, properties: dict[str, str] | None = None
            ) -> None:  # fmt: skip
        self._message_id, self._properties = message_id, properties or {}
        function.process(payload, self)

    # --- the Context API our functions use -----------------------------------------------------------------------
    def get_message_id(self) -> Any:
        return self._message_id

    def get_current_message_topic_name(self) -> str:
        return self.input_topic

    def get_message_properties(self) -> dict[str, str]:
        return self._properties

    def get_message_key(self) -> str | None:
        return None

    def get_user_config_map(self) -> dict[str, Any]:
        return self.user_config

    def get_output_topic(self) -> str:
        return self.output_topic

    def get_logger(self) -> FakeLogger:
        return self.logger

    def get_pulsar_client(self) -> FakeClient:
        return FakeClient(self)

    def record_metric(self, name: str, value: float) -> None:
        self.metrics[name] = self.metrics.get(name, 0) + value

    def ack(self, msgid: Any, topic: str) -> None:
        assert topic == self.input_topic
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

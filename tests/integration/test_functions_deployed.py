"""The router and ticker-statistics functions deployed on the real stack, each on topics of its own.

The functions are deployed by the same `deploy()` as `rtca functions deploy`, from settings whose topic names and
function names carry a unique suffix, so the shared stack's other traffic cannot reach them (and they are deleted
at the end).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import orjson
import pulsar
import pytest

from rtca.analytics.stats import FIELDS, StatsRow, mismatches, pandas_reference
from rtca.bench.pipeline import topic_stats
from rtca.errors import DeployError
from rtca.feed.capture import SHIPPED_CAPTURE, read_capture
from rtca.functions import routing
from rtca.functions.deploy import (
    ROUTER,
    TICKER_STATS,
    FunctionSpec,
    delete_functions,
    deploy,
    function_specs,
    function_status,
    publishing_identity_spec,
    restart_function,
    revive_functions,
)
from rtca.functions.samples import hostile_payloads
from rtca.settings import Settings, Topics

from cleanup import drop_topics
from references import random_walks
from waiting import wait_for

pytestmark = pytest.mark.stack

CHANNEL_OF_TYPE = {kind: shape.channel for kind, shape in routing.SHAPES.items()}


# --- fixtures ------------------------------------------------------------------------------------------------------
def isolated(settings: Settings, tag: str) -> Settings:
    """The same settings with every topic name made unique."""
    topics = Topics(**{key: f"it-{tag}-{name}" for key, name in settings.topics.model_dump().items()})
    return settings.model_copy(update={"topics": topics})


@pytest.fixture(scope="module")
def deployed(stack: Settings) -> Iterator[dict[str, tuple[Settings, FunctionSpec]]]:
    """Router and statistics function, each with its own topics, deployed together (deploying takes seconds)."""
    tag = uuid.uuid4().hex[:8]
    router_settings, stats_settings = isolated(stack, f"{tag}-r"), isolated(stack, f"{tag}-s")
    router = next(s for s in function_specs(router_settings, name_prefix=f"it-{tag}-") if s.name.endswith(ROUTER))
    stats = next(s for s in function_specs(stats_settings, name_prefix=f"it-{tag}-")
                 if s.name.endswith(TICKER_STATS))  # fmt: skip
    deploy(stack, [router, stats])
    deployed = {"router": (router_settings, router), "stats": (stats_settings, stats)}
    yield deployed
    undeploy(stack, deployed.values())


def undeploy(stack: Settings, deployed: Iterable[tuple[Settings, FunctionSpec]]) -> None:
    """Delete test functions, then their topics (an instance still stopping would re-create one)."""
    deployed = list(deployed)
    names = [spec.name for _, spec in deployed]
    delete_functions(stack, names, known_only=False)
    wait_for(lambda: not any(s.deployed for s in function_status(stack, names, known_only=False)), timeout=60,
             what="the functions to be deleted")  # fmt: skip
    drop_topics(stack, {settings.topic(name) for settings, _ in deployed
                        for name in settings.topics.model_dump().values()})


@pytest.fixture(scope="module")
def client(stack: Settings) -> Iterator[pulsar.Client]:
    # The C++ console logger, not a Python `logging.Logger`: the client's threads would call into Python while the
    # interpreter shuts down (an abort or segfault at exit, see `rtca.bench.functions_e2e`).
    c = pulsar.Client(stack.pulsar.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    yield c
    c.close()


def produce(client: pulsar.Client, topic: str, messages: Iterable[tuple[bytes, dict[str, str], str | None]]) -> int:
    """Send (payload, properties, key) triples; returns how many, once all are stored."""
    producer = client.create_producer(topic, batching_enabled=True, batching_max_publish_delay_ms=5,
                                      block_if_queue_full=True)  # fmt: skip
    failures: list[Any] = []
    count = 0
    for data, properties, key in messages:
        kwargs: dict[str, Any] = {"properties": properties}
        if key:
            kwargs["partition_key"] = key
        producer.send_async(data, lambda res, _id: res == pulsar.Result.Ok or failures.append(res), **kwargs)
        count += 1
    producer.flush()
    producer.close()
    assert not failures, failures[:3]
    return count


def stored(client: pulsar.Client, topic: str) -> list[bytes]:
    """Everything `topic` holds right now."""
    reader = client.create_reader(topic, pulsar.MessageId.earliest)
    try:
        out = []
        while reader.has_message_available():
            out.append(reader.read_next(10_000).data())
        return out
    finally:
        reader.close()


def read(client: pulsar.Client, topic: str, expected: int, *, timeout: float = 120.0, settle: float = 2.0,
         where: Callable[[bytes], bool] | None = None) -> list[bytes]:  # fmt: skip
    """Everything in `topic` from the start (only the messages `where` takes, if given): waits for `expected` of
    them, then `settle` s more for any extra. `where` lets a test count its own records on a topic others write."""
    reader = client.create_reader(topic, pulsar.MessageId.earliest)
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if len(out) >= expected:
                deadline = min(deadline, time.monotonic() + settle)
            try:
                data = reader.read_next(500).data()
            except pulsar.Timeout:
                continue
            if where is None or where(data):
                out.append(data)
    finally:
        reader.close()
    return out


# --- router --------------------------------------------------------------------------------------------------------
def raw_messages(frames: Iterable[tuple[str | bytes, int]]) -> Iterator[tuple[bytes, dict[str, str], str | None]]:
    """Frames as ingest publishes them: the text as received, key = type, properties product/sequence/received_ms."""
    for text, received_ms in frames:
        data = text.encode() if isinstance(text, str) else text
        properties = {"received_ms": str(received_ms)}
        key = None
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            if isinstance(obj.get("type"), str):
                key = obj["type"]
            if isinstance(obj.get("product_id"), str):
                properties["product"] = obj["product_id"]
            if isinstance(obj.get("sequence"), int):
                properties["sequence"] = str(obj["sequence"])
        yield data, properties, key


def test_capture_through_the_router_gives_the_capture_counts_per_channel(deployed, client) -> None:  # type: ignore[no-untyped-def]
    settings, _ = deployed["router"]
    capture = read_capture(SHIPPED_CAPTURE)
    produce(client, settings.topic(settings.topics.raw),
            raw_messages((f.text, int(f.at * 1000)) for f in capture.frames))  # fmt: skip
    expected: Counter[str] = Counter()
    for kind, n in capture.counts().items():
        expected[CHANNEL_OF_TYPE[kind]] += n
    for channel, n in expected.items():
        records = [orjson.loads(d) for d in read(client, settings.topic(getattr(settings.topics, channel)), n)]
        assert len(records) == n, channel
        assert all(isinstance(r["event_ms"], int) and isinstance(r["received_ms"], int) for r in records)
        if channel != "control":
            assert all(isinstance(r["product_id"], str) for r in records)
    level2 = [orjson.loads(d) for d in read(client, settings.topic(settings.topics.level2), 1, settle=0.5)]
    assert isinstance(level2[0]["bids" if level2[0]["type"] == "snapshot" else "changes"][0][1], float)
    assert stored(client, settings.topic(settings.topics.dead_letter)) == []
    assert_all_acknowledged(settings, settings.topic(settings.topics.raw))


def assert_all_acknowledged(settings: Settings, topic: str) -> None:
    """Every input the functions answered is acknowledged (they acknowledge asynchronously, in batches, once the
    records are stored): the input's subscription ends with no backlog and nothing unacknowledged."""

    def left() -> dict[str, tuple[int, int]]:
        subscriptions = topic_stats(settings, topic).get("subscriptions") or {}
        return {name: (int(s.get("msgBacklog") or 0), int(s.get("unackedMessages") or 0))
                for name, s in subscriptions.items()}  # fmt: skip

    wait_for(lambda: bool(left()) and not any(b or u for b, u in left().values()), timeout=30,
             what=f"every input of {topic} to be acknowledged")  # fmt: skip
    print("subscriptions (backlog, unacknowledged):", left())


def test_hostile_payloads_all_end_in_the_dead_letter_topic_and_the_router_goes_on(deployed, client) -> None:  # type: ignore[no-untyped-def]
    settings, spec = deployed["router"]
    payloads = list(hostile_payloads(1000, seed=5))
    # its time 1 ms before it is received (the router refuses times more than 5 minutes after their receipt)
    sentinel = orjson.dumps({"type": "heartbeat", "sequence": 1, "last_trade_id": 2, "product_id": "AFTER-FUZZ",
                             "time": "2023-11-14T22:13:20.000Z"})  # fmt: skip
    produce(client, settings.topic(settings.topics.raw),
            raw_messages([*((p, 1_700_000_000_000) for p in payloads), (sentinel, 1_700_000_000_001)]))
    letters = [orjson.loads(d) for d in read(client, settings.topic(settings.topics.dead_letter), len(payloads))]
    assert len(letters) == len(payloads)
    assert all(r["reason"] in set(routing.Reason) and r["reason"] != "internal_error" and r["detail"] for r in letters)
    assert all(r["source_topic"] == settings.topic(settings.topics.raw) and r["source_message_id"] for r in letters)
    assert sorted(r["payload_bytes"] for r in letters) == sorted(len(p) for p in payloads)
    heartbeats = [orjson.loads(d) for d in read(client, settings.topic(settings.topics.heartbeat), 1)]
    assert [h["product_id"] for h in heartbeats] == ["AFTER-FUZZ"]
    (status,) = function_status(settings, [spec.name], known_only=False)
    assert status.running == 1 and status.failed == 0, status


# --- ticker statistics -----------------------------------------------------------------------------------------------
def ticker_stream(seed: int, products: dict[str, float], n: int) -> list[tuple[str, float, bytes]]:
    """Seeded random walks of several products, interleaved, as the router's typed ticker records."""
    stream = []
    for sequence, product, price in random_walks(products, n, seed=seed):
        record = {"type": "ticker", "product_id": product, "price": price, "sequence": sequence,
                  "event_ms": 1_700_000_000_000 + 10 * sequence, "received_ms": 1_700_000_000_003 + 10 * sequence}
        stream.append((product, price, orjson.dumps(record)))
    return stream


def assert_equals_pandas(records: list[dict[str, Any]], stream: list[tuple[str, float, bytes]]) -> None:
    assert len(records) == len(stream)
    sequences = [r["sequence"] for r in records]
    assert len(set(sequences)) == len(sequences), "duplicate output rows"
    for product in sorted({p for p, _, _ in stream}):
        prices = [price for p, price, _ in stream if p == product]
        mine = sorted((r for r in records if r["product_id"] == product), key=lambda r: r["sequence"])
        assert [r["price"] for r in mine] == prices, product
        rows = [StatsRow(*(r[f] for f in FIELDS)) for r in mine]
        assert mismatches(rows, pandas_reference(prices), prices) == [], product


def typed(stream: list[tuple[str, float, bytes]]) -> Iterator[tuple[bytes, dict[str, str], str | None]]:
    return ((data, {}, product) for product, _, data in stream)


PRODUCTS = {"BTC-USD": 43_000.0, "ETH-USD": 2_300.0, "SKL-BTC": 0.00001305, "DOGE-USD": 0.081}


def test_deployed_statistics_equal_pandas_on_interleaved_random_walks(deployed, client) -> None:  # type: ignore[no-untyped-def]
    settings, _ = deployed["stats"]
    products = {f"A{p}": price for p, price in PRODUCTS.items()}
    stream = ticker_stream(1, products, 2000)
    produce(client, settings.topic(settings.topics.ticker), typed(stream))
    records = [orjson.loads(d) for d in read(client, settings.topic(settings.topics.ticker_stats), len(stream))]
    assert_equals_pandas(records, stream)
    first = min((r for r in records if r["product_id"] == "ABTC-USD"), key=lambda r: r["sequence"])
    assert first["ewma_var"] is None and first["rolling_mean"] is None and first["count"] == 1
    assert_all_acknowledged(settings, settings.topic(settings.topics.ticker))


def test_restart_mid_stream_still_equals_pandas_over_the_whole_stream(deployed, client, stack) -> None:  # type: ignore[no-untyped-def]
    """The stream is produced at a steady pace while the function is restarted through the admin API: the new
    instance resumes from the output topic, skips what is redelivered, and the output is pandas' on the whole."""
    settings, spec = deployed["stats"]
    products = {f"B{p}": price for p, price in PRODUCTS.items()}
    stream = ticker_stream(2, products, 6000)
    out_topic, in_topic = settings.topic(settings.topics.ticker_stats), settings.topic(settings.topics.ticker)
    before = len(stored(client, out_topic))  # the other test's records share the topic
    producing = threading.Thread(target=produce, args=(client, in_topic, paced(typed(stream), per_second=1500)))
    producing.start()
    time.sleep(1.5)
    mid_stream = producing.is_alive()
    restart_function(stack, spec.name)
    producing.join()
    records = [orjson.loads(d) for d in read(client, out_topic, before + len(stream), timeout=180)][before:]
    assert mid_stream, "the input was all produced before the restart"
    assert_equals_pandas([r for r in records if r["product_id"].startswith("B")], stream)
    (status,) = function_status(stack, [spec.name], known_only=False)
    assert status.running == 1 and status.failed == 0, status
    assert status.received < before + len(stream), "counts since the instance started: it did restart"


def paced(messages: Iterable[Any], *, per_second: float) -> Iterator[Any]:
    started = time.monotonic()
    for i, message in enumerate(messages):
        delay = started + i / per_second - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield message


def test_a_deleted_function_is_deployed_again_under_its_name(stack: Settings) -> None:
    """Pulsar keeps a deleted function's code package, and then refuses a function of the same name (apache/pulsar
    #20930): `rtca functions delete` then `deploy` is what a refused update's hint tells users to do."""
    tag = uuid.uuid4().hex[:8]
    settings = isolated(stack, f"{tag}-again")
    spec = next(s for s in function_specs(settings, name_prefix=f"it-{tag}-") if s.name.endswith(ROUTER))
    try:
        (first,) = deploy(stack, [spec])
        assert delete_functions(stack, [spec.name], known_only=False) == [spec.name]
        (again,) = deploy(stack, [spec])
        assert (first.action, again.action, again.running) == ("created", "created", 1)
    finally:
        undeploy(stack, [(settings, spec)])


def test_changing_a_functions_inputs_keeps_its_place_on_the_inputs_it_keeps(stack: Settings, client) -> None:  # type: ignore[no-untyped-def]
    """Pulsar refuses an update that adds an input and silently keeps reading one an update removes: deploy
    recreates the function instead, still subscribed where it was on the inputs it keeps (no input read twice),
    and with no subscription left on the one it dropped."""
    tag = uuid.uuid4().hex[:8]
    topic = lambda n: stack.topic(f"it-{tag}-inputs-{n}")  # noqa: E731
    spec = publishing_identity_spec(f"it-{tag}-inputs", topic("a"), topic("out"))
    spec = dataclasses.replace(spec, inputs=(topic("a"), topic("b")))
    names = [spec.name]
    try:
        deploy(stack, [spec])
        produce(client, topic("a"), [(b"a1", {}, None), (b"a2", {}, None)])
        produce(client, topic("b"), [(b"b1", {}, None)])
        assert sorted(read(client, topic("out"), 3)) == [b"a1", b"a2", b"b1"]

        (result,) = deploy(stack, [dataclasses.replace(spec, inputs=(topic("a"), topic("c")))])
        assert (result.action, result.running) == ("updated", 1)
        produce(client, topic("a"), [(b"a3", {}, None)])
        produce(client, topic("b"), [(b"b2", {}, None)])  # no longer an input
        produce(client, topic("c"), [(b"c1", {}, None)])
        out = sorted(read(client, topic("out"), 5, settle=5.0))
        assert out == [b"a1", b"a2", b"a3", b"b1", b"c1"], out
        subscription = f"{stack.pulsar.tenant}/{stack.pulsar.namespace}/{spec.name}"
        assert subscription not in subscriptions(stack, topic("b"))
        assert subscription in subscriptions(stack, topic("a"))
    finally:
        delete_functions(stack, names, known_only=False)
        wait_for(lambda: not any(s.deployed for s in function_status(stack, names, known_only=False)), timeout=60,
                 what="the function to be deleted")  # fmt: skip
        drop_topics(stack, {topic(n) for n in ("a", "b", "c", "out")})


def subscriptions(stack: Settings, topic: str) -> list[str]:
    response = httpx.get(f"{stack.pulsar.admin_url}/admin/v2/{topic.replace('://', '/', 1)}/subscriptions", timeout=30)
    response.raise_for_status()
    return list(response.json())


def test_deploying_an_unchanged_function_that_was_left_stopped_starts_it(stack: Settings) -> None:
    """On an external cluster no `rtca up` revives what a Pulsar restart left stopped: runbook 10 said "unchanged",
    waited 180 s for it and failed, with a hint to run it again."""
    tag = uuid.uuid4().hex[:8]
    spec = FunctionSpec(name=f"it-{tag}-stopped", module="rtca.functions.identity", class_name="Identity",
                        inputs=(stack.topic(f"it-{tag}-in"),), output=stack.topic(f"it-{tag}-out"))  # fmt: skip
    try:
        deploy(stack, [spec], wait=120)
        stop = f"{stack.pulsar.admin_url}/admin/v3/functions/{stack.pulsar.tenant}/{stack.pulsar.namespace}/{spec.name}"
        httpx.post(f"{stop}/stop", timeout=30).raise_for_status()
        wait_for(lambda: function_status(stack, [spec.name], known_only=False)[0].running == 0, timeout=60,
                 what="the function to stop")  # fmt: skip
        lines: list[str] = []
        (result,) = deploy(stack, [spec], wait=120, say=lines.append)
        print("\n".join(lines))
        assert (result.action, result.running) == ("unchanged", 1)
        assert any(line.startswith("- restarting functions the worker left stopped: ") for line in lines)
    finally:
        delete_functions(stack, [spec.name], known_only=False)
        drop_topics(stack, {stack.topic(f"it-{tag}-in"), stack.topic(f"it-{tag}-out")})


def test_revive_names_a_function_that_does_not_come_back(stack: Settings) -> None:
    """After a Pulsar restart, `rtca up` sat silent for two minutes waiting for a function whose code could no
    longer start, and then said nothing of it."""
    tag = uuid.uuid4().hex[:8]
    broken = FunctionSpec(name=f"it-{tag}-broken", module="rtca.functions.identity", class_name="NoSuchFunction",
                          inputs=(stack.topic(f"it-{tag}-in"),), output=stack.topic(f"it-{tag}-out"))  # fmt: skip
    try:
        with pytest.raises(DeployError):
            deploy(stack, [broken], wait=5)
        lines: list[str] = []
        assert revive_functions(stack, [broken.name], timeout=12, say=lines.append) == [broken.name]
        print("\n".join(lines))
        assert lines[0].startswith("- restarting functions the worker left stopped: ") and broken.name in lines[0]
        assert lines[-1].startswith("  not running after 12 s: ") and broken.name in lines[-1]
        assert any(line.startswith("  waiting for ") for line in lines)  # a line every 10 s, not silence
    finally:
        delete_functions(stack, [broken.name], known_only=False)

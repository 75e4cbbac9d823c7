"""Book resync against the real Pulsar: an alert of the book function's on the alerts topic makes ingest resubscribe
the product's level2 channel, and the fresh snapshot lands on the raw topic; each test on topics of its own."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pulsar
import pytest
from cleanup import drop_topics
from test_feed_ingest import health_records, read_topic
from test_functions_deployed import isolated, undeploy

from rtca.analytics.alerts import book_problem_alert
from rtca.feed.ingest import ingest_to_pulsar
from rtca.feed.resync import RESYNC_EVERY_S
from rtca.feed.sinks import pulsar_client
from rtca.feed.sources import SourceSpec
from rtca.functions.deploy import BOOK, ROUTER, deploy, function_specs
from rtca.settings import Settings

pytestmark = pytest.mark.stack


@pytest.fixture
def own(stack: Settings, unique: str) -> Iterator[Settings]:
    """The stack's settings with every topic name unique to this test (the alerts topic included); its raw,
    health and alerts topics are deleted afterwards."""
    settings = isolated(stack, f"resync-{unique}")
    yield settings
    drop_topics(stack, [settings.topic(name) for name in (settings.topics.raw, settings.topics.feed_health,
                                                          settings.topics.alerts)])  # fmt: skip


class Lines(logging.Handler):
    """Log messages of the ingest, to know when its alerts reader is open."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def publish(settings: Settings, topic: str, record: dict[str, Any]) -> None:
    client = pulsar_client(settings)
    try:
        producer = client.create_producer(topic)
        producer.send(orjson.dumps(record), partition_key=f"{record['product_id']}/book")
        producer.close()
    finally:
        client.close()


async def reader_open(lines: Lines, run: asyncio.Task[Any]) -> None:
    """Until ingest's alerts reader is open: from then on, alerts are acted on."""
    deadline = time.monotonic() + 60
    while not any("following the alerts topic" in line for line in lines.messages):
        assert not run.done(), run
        assert time.monotonic() < deadline, "ingest never opened a reader of the alerts topic"
        await asyncio.sleep(0.1)


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler, feed = Lines(), logging.getLogger("rtca.feed")
    level = feed.level
    feed.addHandler(handler)
    feed.setLevel(logging.INFO)
    yield handler
    feed.removeHandler(handler)
    feed.setLevel(level)


def crossed(product: str) -> dict[str, Any]:
    """What the book function publishes for a crossed book (`rtca.functions.book`)."""
    now = int(time.time() * 1000)
    return book_problem_alert({"product_id": product, "event_ms": now, "received_ms": now, "problem": "crossed",
                               "detail": "best bid 101.0 >= best ask 100.0: waiting for the next snapshot"})


def test_a_book_alert_makes_ingest_resubscribe_and_a_fresh_snapshot_arrives(own: Settings, unique: str,
                                                                             lines: Lines) -> None:
    products = (f"RSA{unique[:4]}-USD".upper(), f"RSB{unique[:4]}-USD".upper())
    alerts_topic, raw_topic = own.topic(own.topics.alerts), own.topic(own.topics.raw)
    alerted_ms: list[int] = []

    async def main() -> None:
        stop = asyncio.Event()
        spec = SourceSpec.build("simulator", products=products, channels=["ticker", "level2_batch", "heartbeat"],
                                rate=50)  # fmt: skip
        run = asyncio.create_task(ingest_to_pulsar(own, spec, stop=stop))
        try:
            await reader_open(lines, run)
            await asyncio.sleep(1.0)  # the first snapshots are out long before
            alerted_ms.append(int(time.time() * 1000))
            await asyncio.to_thread(publish, own, alerts_topic, crossed(products[0]))
            await asyncio.sleep(7.0)  # time for the fresh snapshot on a loaded machine, inside the 10-s throttle
            alerted_ms.append(int(time.time() * 1000))  # within the throttle interval: resynced once it is up
            await asyncio.to_thread(publish, own, alerts_topic, crossed(products[0]))
            await asyncio.sleep(9.0)  # the interval ends 3 s after it, then a read times out within 1 s
        finally:
            stop.set()
            report = await asyncio.wait_for(run, 120)
        print(report)

    asyncio.run(asyncio.wait_for(main(), 300))
    print("\n".join(line for line in lines.messages if "resubscri" in line or "resync" in line))

    messages = read_topic(own, raw_topic)
    snapshots = [(m.properties()["product"], int(m.properties()["received_ms"])) for m in messages
                 if m.partition_key() == "snapshot"]  # fmt: skip
    print("snapshots (product, received_ms):", snapshots, "alerts at", alerted_ms)
    assert Counter(product for product, _ in snapshots) == {products[0]: 3, products[1]: 1}
    _, fresh, later = [at for product, at in snapshots if product == products[0]]
    assert alerted_ms[0] <= fresh < alerted_ms[1]  # after the first alert, before the second
    assert later >= alerted_ms[0] + RESYNC_EVERY_S * 1000  # the second: not before the throttle interval's end
    assert Counter(m.partition_key() for m in messages)["subscriptions"] == 5  # the first, 2 x unsubscribe, subscribe
    ticks = [h for h in health_records(own, own.topic(own.topics.feed_health)) if h["kind"] == "tick"]
    assert ticks[-1]["book_resyncs"] == 2


def test_alerts_published_before_ingest_started_are_not_acted_on(own: Settings, unique: str,
                                                                 lines: Lines) -> None:
    """The reader starts at the latest message: an old alert (a restart of the ingest) resubscribes nothing."""
    product = f"RSC{unique[:4]}-USD".upper()
    publish(own, own.topic(own.topics.alerts), crossed(product))

    async def main() -> None:
        stop = asyncio.Event()
        spec = SourceSpec.build("simulator", products=[product], channels=["level2_batch"], rate=50)
        run = asyncio.create_task(ingest_to_pulsar(own, spec, stop=stop))
        try:
            await reader_open(lines, run)
            await asyncio.sleep(4.0)
        finally:
            stop.set()
            await asyncio.wait_for(run, 120)

    asyncio.run(asyncio.wait_for(main(), 300))
    keys = Counter(m.partition_key() for m in read_topic(own, own.topic(own.topics.raw)))
    assert keys["snapshot"] == 1 and keys["subscriptions"] == 1


class Follower:
    """Every record of a topic so far, read from the earliest (`poll` blocks: call it from a thread)."""

    def __init__(self, client: pulsar.Client, topic: str) -> None:
        self.reader = client.create_reader(topic, pulsar.MessageId.earliest)
        self.records: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        while True:
            try:
                self.records.append(orjson.loads(self.reader.read_next(200).data()))
            except pulsar.Timeout:
                return self.records


def test_a_crossed_book_is_resynchronised_through_the_deployed_book_function(stack: Settings, unique: str,
                                                                              lines: Lines) -> None:
    """The whole loop on the stack: simulator -> ingest -> raw topic -> router -> level2 -> book function; a crossing
    l2update put on the raw topic makes the book function report `book_crossed`; ingest resubscribes; the fresh
    snapshot makes the book valid again (a summary built from a newer snapshot)."""
    settings = isolated(stack, f"resync-rt-{unique}")
    specs = [s for s in function_specs(settings, name_prefix=f"it-{unique}-") if s.name.endswith((ROUTER, BOOK))]
    assert len(specs) == 2
    product = f"RSR{unique[:4]}-USD".upper()
    deploy(stack, specs)
    client = pulsar.Client(stack.pulsar.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    try:
        book = Follower(client, settings.topic(settings.topics.book))
        alerts = Follower(client, settings.topic(settings.topics.alerts))

        def valid(after_ms: int = 0) -> list[dict[str, Any]]:
            return [r for r in book.poll()
                    if r.get("valid") and r["product_id"] == product and r["event_ms"] > after_ms]

        async def until(what: str, condition: Any, timeout: float = 120.0) -> Any:
            deadline = time.monotonic() + timeout
            while not (found := await asyncio.to_thread(condition)):
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.5)
            return found

        async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
            stop = asyncio.Event()
            spec = SourceSpec.build("simulator", products=[product], channels=["level2_batch", "heartbeat"], rate=50)
            run = asyncio.create_task(ingest_to_pulsar(settings, spec, stop=stop))
            try:
                await reader_open(lines, run)
                first = (await until("a first valid summary", valid))[0]
                now = datetime.now(UTC)
                crossing = {"type": "l2update", "product_id": product, "time": now.isoformat().replace("+00:00", "Z"),
                            "changes": [["buy", f"{first['best_ask'] * 1.01:.2f}", "1.0"]]}  # fmt: skip
                now_ms = int(now.timestamp() * 1000)
                producer = client.create_producer(settings.topic(settings.topics.raw))
                await asyncio.to_thread(producer.send, orjson.dumps(crossing), partition_key="l2update",
                                        properties={"received_ms": str(now_ms), "product": product},
                                        event_timestamp=now_ms)  # fmt: skip
                producer.close()
                problem = (await until("the book function's alert", lambda: [
                    r for r in alerts.poll() if r.get("rule") == "book_crossed" and r["product_id"] == product]))[0]
                again = (await until("a valid summary from a fresh snapshot", lambda: [
                    r for r in valid(now_ms) if r["snapshot_id"] != first["snapshot_id"]]))[0]
                return first, problem, again, now_ms
            finally:
                stop.set()
                await asyncio.wait_for(run, 120)

        first, problem, again, crossed_ms = asyncio.run(asyncio.wait_for(main(), 400))
        print("first:", first, "\nalert:", problem, "\nagain:", again)
        resynced = [line for line in lines.messages if "resubscribed" in line]
        assert len(resynced) == 1 and product in resynced[0], lines.messages
        assert problem["event_ms"] == crossed_ms  # reported for the injected update
        assert again["snapshot_id"] > first["snapshot_id"]  # a snapshot stored later: the one ingest asked for
        assert again["best_bid"] < again["best_ask"]
    finally:
        client.close()
        undeploy(stack, [(settings, spec) for spec in specs])

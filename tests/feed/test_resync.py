"""Book resync without Pulsar: which alert records ask for a snapshot, the per-product throttle, a failing reader,
and a simulator server that answers the resubscription with a fresh snapshot."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pulsar
import pytest

from rtca.analytics.alerts import book_problem_alert
from rtca.feed.connection import Backoff, FeedConnection
from rtca.feed.ingest import ingest
from rtca.feed.protocol import subscribe_frame
from rtca.feed.resync import RESYNC_EVERY_S, BookResync, level2_channels
from rtca.feed.simulator import simulator_server
from rtca.feed.sinks import MemorySink

Run = Callable[..., Any]
CHANNELS = ("ticker", "level2_batch", "heartbeat")


def alert(product: str = "BTC-USD", problem: str = "crossed") -> bytes:
    """An alert record as the book function publishes it."""
    return orjson.dumps(book_problem_alert({"product_id": product, "event_ms": 1_700_000_000_000,
                                            "received_ms": 1_700_000_000_100, "problem": problem,
                                            "detail": "best bid 101.0 >= best ask 100.0"}))  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sent:
    """Stands in for `FeedConnection.send`."""

    def __init__(self, connected: bool = True) -> None:
        self.frames: list[dict[str, Any]] = []
        self.connected = connected

    async def __call__(self, text: str) -> bool:
        if self.connected:
            self.frames.append(orjson.loads(text))
        return self.connected


def test_level2_channels_are_those_carrying_level2_frames() -> None:
    assert level2_channels(["ticker", "level2_batch", "matches", "level2", "level2_50"]) == [
        "level2_batch", "level2", "level2_50"]
    assert level2_channels(["ticker", "matches"]) == []


@pytest.mark.parametrize("data", [
    b"not json", b"", b"[1, 2]", b'"book_crossed"', b"{}", b'{"rule": "book_crossed"}',
    b'{"rule": "book_crossed", "product_id": 5}', b'{"rule": 1, "product_id": "BTC-USD"}',
    b'{"rule": ["book_crossed"], "product_id": "BTC-USD"}', b'{"rule": "book_crossed", "product_id": ["BTC-USD"]}',
    b'{"rule": "spread_wide", "product_id": "BTC-USD"}', b'{"rule": "book_crossed", "product_id": "SOL-USD"}',
    b'{"rule": "book_crossed", "product_id": null}', b"\xff\xfe",
])
def test_other_and_bad_records_are_ignored(run: Run, data: bytes) -> None:
    sent = Sent()
    books = BookResync(["BTC-USD", "ETH-USD"], CHANNELS, sent)
    assert books.wanted(data) is None
    assert run(books.handle(data)) == []
    assert sent.frames == [] and books.resyncs == 0


def test_a_book_problem_of_a_level2_product_asks_for_its_snapshot() -> None:
    books = BookResync(["BTC-USD", "ETH-USD"], CHANNELS, Sent())
    assert books.wanted(alert("ETH-USD")) == ("ETH-USD", "book_crossed", "best bid 101.0 >= best ask 100.0")
    assert books.wanted(alert("BTC-USD", "no_snapshot"))[:2] == ("BTC-USD", "book_no_snapshot")  # type: ignore[index]
    message_of_wrong_type = orjson.dumps({**orjson.loads(alert()), "message": 3})
    assert books.wanted(message_of_wrong_type) == ("BTC-USD", "book_crossed", "")
    # subscribed without a level2 channel: no product of ours has a book
    assert BookResync(["BTC-USD"], ("ticker", "matches"), Sent()).wanted(alert()) is None


def test_unsubscribe_then_subscribe_the_products_level2_channel_at_most_once_per_interval(run: Run) -> None:
    clock, sent = Clock(), Sent()
    books = BookResync(["BTC-USD", "ETH-USD"], CHANNELS, sent, clock=clock)
    assert run(books.handle(alert("BTC-USD"))) == ["BTC-USD"]
    assert sent.frames == [
        {"type": "unsubscribe", "product_ids": ["BTC-USD"], "channels": ["level2_batch"]},
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2_batch"]},
    ]
    clock.now += RESYNC_EVERY_S - 0.1
    assert run(books.handle(alert("BTC-USD"))) == []  # throttled
    assert run(books.handle(alert("BTC-USD", "no_snapshot"))) == []
    assert run(books.handle(alert("ETH-USD"))) == ["ETH-USD"]  # another product has its own interval
    assert len(sent.frames) == 4 and books.resyncs == 2 and books.throttled == 2
    clock.now += 0.1
    assert run(books.handle(alert("BTC-USD"))) == ["BTC-USD"]
    assert books.resyncs == 3 and len(sent.frames) == 6


def test_a_burst_of_problems_is_one_unsubscribe_and_one_subscribe(run: Run) -> None:
    """The exchange takes 100 client messages a second: a burst of broken books must not cost two per product."""
    clock, sent = Clock(), Sent()
    products = [f"P{i}-USD" for i in range(60)]
    books = BookResync(products, CHANNELS, sent, clock=clock)
    assert run(books.handle(alert("P0-USD"))) == ["P0-USD"]
    burst = [alert(product, problem) for product in products for problem in ("crossed", "no_snapshot")]
    assert run(books.handle(*burst, b"garbage", alert("OTHER-USD"))) == products[1:]
    assert sent.frames[2:] == [
        {"type": "unsubscribe", "product_ids": products[1:], "channels": ["level2_batch"]},
        {"type": "subscribe", "product_ids": products[1:], "channels": ["level2_batch"]},
    ]
    # P0 throttled twice (resynchronised just before), every other product's second problem once
    assert books.resyncs == 60 and books.throttled == 2 + 59


def test_without_a_connection_nothing_is_counted_nor_throttled(run: Run) -> None:
    clock, sent = Clock(), Sent(connected=False)
    books = BookResync(["BTC-USD"], CHANNELS, sent, clock=clock)
    assert run(books.handle(alert())) == []
    assert books.resyncs == 0
    sent.connected = True  # connected again a moment later: the next problem is acted on at once
    assert run(books.handle(alert())) == ["BTC-USD"] and books.resyncs == 1


class Message:
    def __init__(self, data: bytes, message_id: int) -> None:
        self._data, self._id = data, message_id

    def data(self) -> bytes:
        return self._data

    def message_id(self) -> int:
        return self._id


class FakeReader:
    """Hands out `records` once `ready` is set (their ids counting from `first_id`), then times out as an idle
    reader does."""

    def __init__(self, records: list[bytes], ready: threading.Event | None = None, first_id: int = 1) -> None:
        self.records = list(records)
        self.ready = ready
        self.next_id = first_id
        self.closed = False

    def read_next(self, timeout_millis: int) -> Any:
        if self.records and (self.ready is None or self.ready.wait(timeout_millis / 1000)):
            self.next_id += 1
            return Message(self.records.pop(0), self.next_id - 1)
        time.sleep(timeout_millis / 1000 / 20)
        raise pulsar.Timeout("no message")

    def close(self) -> None:
        self.closed = True


def test_a_failing_reader_is_retried_and_bad_records_never_stop_it(run: Run) -> None:
    sent = Sent()
    readers = [FakeReader([b"garbage", b'{"rule": "book_crossed"}', alert()])]
    opened = []

    def open_reader(after: Any) -> FakeReader:
        opened.append(1)
        if len(opened) < 3:
            raise ConnectionError("broker away")
        return readers[0]

    books = BookResync(["BTC-USD"], CHANNELS, sent, open_reader=open_reader)

    async def main() -> None:
        task = asyncio.create_task(books.follow(retry=Backoff(initial=0.01, maximum=0.02)))
        while books.resyncs == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(main(), timeout=10)
    assert len(opened) == 3 and books.resyncs == 1 and len(sent.frames) == 2


class BreakingReader(FakeReader):
    """Hands out its records, then fails as a reader whose broker went away."""

    def read_next(self, timeout_millis: int) -> Any:
        if not self.records:
            raise ConnectionError("broker away")
        return super().read_next(timeout_millis)


def test_records_read_before_a_reader_fails_are_acted_on(run: Run) -> None:
    """The book function reports a problem once: an alert read in a burst the reader broke off must not be lost."""
    sent = Sent()
    readers = [BreakingReader([b"{}", alert("BTC-USD"), alert("ETH-USD")], first_id=7), FakeReader([])]
    opened_after = []

    def open_reader(after: Any) -> FakeReader:
        opened_after.append(after)
        return readers.pop(0)

    books = BookResync(["BTC-USD", "ETH-USD"], CHANNELS, sent, open_reader=open_reader)

    async def main() -> None:
        task = asyncio.create_task(books.follow(retry=Backoff(initial=0.01, maximum=0.02)))
        while readers:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(main(), timeout=10)
    assert books.resyncs == 2 and [frame["product_ids"] for frame in sent.frames] == [["BTC-USD", "ETH-USD"]] * 2
    assert opened_after == [None, 9]  # from the latest first; then after the last message read: none missed


def test_a_throttled_problem_is_resubscribed_once_its_interval_is_up(run: Run) -> None:
    """The book function reports a problem once, until a snapshot: one dropped while throttled would leave the
    product without a book until the next reconnect."""
    clock, sent = Clock(), Sent()
    books = BookResync(["BTC-USD", "ETH-USD"], CHANNELS, sent, clock=clock)
    assert run(books.handle(alert("BTC-USD"))) == ["BTC-USD"]
    clock.now += 3
    assert run(books.handle(alert("BTC-USD"), alert("BTC-USD"))) == [] and books.waiting == ["BTC-USD"]
    assert run(books.handle()) == [] and books.throttled == 2
    clock.now += RESYNC_EVERY_S - 3
    assert run(books.handle(alert("ETH-USD"))) == ["ETH-USD", "BTC-USD"]  # due again: with the next problem
    assert books.waiting == [] and books.resyncs == 3 and len(sent.frames) == 4
    clock.now += 3
    run(books.handle(alert("ETH-USD")))
    clock.now += RESYNC_EVERY_S
    assert run(books.handle()) == ["ETH-USD"]  # or alone: `follow` calls handle() while it waits for records


def test_following_resubscribes_a_waiting_problem_when_no_record_comes(run: Run) -> None:
    clock, sent = Clock(), Sent()
    books = BookResync(["BTC-USD"], CHANNELS, sent, clock=clock, open_reader=lambda after: FakeReader([alert()]))

    async def main() -> None:
        task = asyncio.create_task(books.follow())
        while books.resyncs < 1:
            await asyncio.sleep(0.01)
        await books.handle(alert())  # broken again at once: throttled
        assert books.waiting == ["BTC-USD"]
        clock.now += RESYNC_EVERY_S
        while books.resyncs < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(main(), timeout=10)
    assert len(sent.frames) == 4


class SteadyReader(FakeReader):
    """A book alert, then other rules' alerts every 20 ms without end, as a busy alerts topic carries."""

    def read_next(self, timeout_millis: int) -> Any:
        if self.next_id > 1:
            time.sleep(0.02)
            self.records.append(b'{"rule": "spread_wide", "product_id": "BTC-USD"}')
        return super().read_next(timeout_millis)


def test_a_steady_stream_of_other_alerts_does_not_hold_a_book_problem_back(run: Run) -> None:
    sent, reader = Sent(), SteadyReader([alert()])
    books = BookResync(["BTC-USD"], CHANNELS, sent, open_reader=lambda after: reader)

    async def main() -> int:
        task = asyncio.create_task(books.follow())
        while books.resyncs == 0:
            await asyncio.sleep(0.001)
        read = reader.next_id - 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return read

    read = run(main(), timeout=60)
    print(f"resubscribed after {read} records read")
    # a burst ends GATHER_FOR_MS (0.25 s: about 12 records here, fewer on a slow machine) after its first record;
    # without that bound it went on to 1,000 records (20 s)
    assert read < 100


def test_ingest_resubscribes_and_the_server_sends_a_fresh_snapshot(run: Run) -> None:
    """The whole path without Pulsar: an alert for one product -> unsubscribe + subscribe on ingest's websocket ->
    the simulator's fresh snapshot of that product on the raw sink; a second alert at once is throttled."""
    products, channels = ("BTC-USD", "ETH-USD"), ("ticker", "level2_batch")
    raw, health = MemorySink(), MemorySink()
    ready = threading.Event()
    reader = FakeReader([alert("ETH-USD"), alert("ETH-USD")], ready)

    async def main() -> None:
        async with simulator_server(products, rate=200, seed=1) as server:
            connection = FeedConnection(server.url, subscribe_frame(products, channels),
                                        backoff=Backoff(initial=0.05, maximum=0.2))  # fmt: skip
            books = BookResync(products, channels, connection.send, open_reader=lambda after: reader)
            stop = asyncio.Event()

            async def alert_then_stop() -> None:
                while sum(r.key == "snapshot" for r in raw.records) < 2:  # both first snapshots are in
                    await asyncio.sleep(0.01)
                ready.set()
                while reader.records or books.throttled < 1:
                    await asyncio.sleep(0.01)
                deadline = time.monotonic() + 20  # the fresh snapshot and the answers to both requests are in
                while (sum(r.key == "snapshot" for r in raw.records) < 3
                       or sum(r.key == "subscriptions" for r in raw.records) < 3) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)  # anything more the requests brought (there must be nothing)
                stop.set()

            stopper = asyncio.create_task(alert_then_stop())
            report = await ingest(connection, raw, health, source="simulator", stop=stop, resync=books)
            await stopper
            assert report.reconnects == 0

    run(main(), timeout=30)
    snapshots = Counter(orjson.loads(r.value)["product_id"] for r in raw.records if r.key == "snapshot")
    assert snapshots == {"BTC-USD": 1, "ETH-USD": 2}
    assert Counter(r.key for r in raw.records)["subscriptions"] == 3  # the first, and one per request
    ticks = [orjson.loads(r.value) for r in health.records if r.key == "tick"]
    assert ticks[-1]["book_resyncs"] == 1


def test_the_setting_is_on_by_default_and_the_environment_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from rtca.settings import load_settings

    monkeypatch.delenv("RTCA_FEED__RESYNC_BOOKS", raising=False)
    assert load_settings().feed.resync_books is True
    monkeypatch.setenv("RTCA_FEED__RESYNC_BOOKS", "false")
    assert load_settings().feed.resync_books is False

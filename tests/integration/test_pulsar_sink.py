"""Ingest's Pulsar sink with grouped confirmations, against the real broker: every record settled exactly as it was
stored, on a busy feed, a quiet one, when the client refuses one record of a group, and across a replaced
producer."""

from __future__ import annotations

import asyncio
import time

import pytest

from rtca.feed.sinks import Publisher, PulsarSink, Record, pulsar_sinks
from rtca.settings import Settings

from test_feed_ingest import read_topic, topics  # noqa: F401 - the fixture

pytestmark = pytest.mark.stack


def records(n: int, tag: str) -> list[Record]:
    return [Record(f'{{"i":{i},"tag":"{tag}"}}'.encode(), "ticker", {"i": str(i)}, 1_700_000_000_000 + i)
            for i in range(n)]


def test_a_busy_feed_is_settled_in_groups_and_stored_in_order(stack: Settings, topics: tuple[str, str]) -> None:
    async def run() -> tuple[int, int, int]:
        async with pulsar_sinks(stack, topics[0]) as (sink,):
            assert isinstance(sink, PulsarSink)
            publisher = Publisher(sink)
            for record in records(5_000, "busy"):
                publisher.publish(record)
                await publisher.wait_capacity()
            assert await publisher.drain(60)
            return publisher.sent, publisher.acked, publisher.failed

    sent, acked, failed = asyncio.run(run())
    stored = [int(m.properties()["i"]) for m in read_topic(stack, topics[0])]
    print(f"sent {sent}, acked {acked}, failed {failed}, stored {len(stored)}")
    assert (sent, acked, failed) == (5_000, 5_000, 0)
    assert stored == list(range(5_000))


def test_a_quiet_feed_is_settled_without_a_flush(stack: Settings, topics: tuple[str, str]) -> None:
    """Three records and then silence: the sweep confirms them (ingest's health ticks report them acked)."""

    async def run() -> tuple[int, int]:
        async with pulsar_sinks(stack, topics[0]) as (sink,):
            publisher = Publisher(sink)
            for record in records(3, "quiet"):
                publisher.publish(record)
                await asyncio.sleep(0.001)
            deadline = time.monotonic() + 10
            while publisher.acked < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return publisher.acked, publisher.pending

    acked, pending = asyncio.run(run())
    print(f"acked {acked}, pending {pending} without drain")
    assert (acked, pending) == (3, 0)


def test_a_refused_record_fails_alone_and_its_group_is_still_confirmed(stack: Settings,
                                                                       topics: tuple[str, str]) -> None:  # fmt: skip
    """The client refuses a negative event time before sending; the record carrying its group's callback is that
    one, so the 63 records before it must be confirmed by a later one."""

    async def run() -> tuple[int, int, int]:
        async with pulsar_sinks(stack, topics[0]) as (sink,):
            assert isinstance(sink, PulsarSink)
            publisher = Publisher(sink)
            batch = records(200, "refused")
            bad = sink.confirm_every - 1  # the 64th record: it would carry the group's callback
            batch[bad] = Record(b'{"bad":true}', "ticker", {"i": "bad"}, -5)
            for record in batch:
                publisher.publish(record)
            assert await publisher.drain(60)
            return publisher.sent, publisher.acked, publisher.failed

    sent, acked, failed = asyncio.run(run())
    stored = [m.properties()["i"] for m in read_topic(stack, topics[0])]
    print(f"sent {sent}, acked {acked}, failed {failed}, stored {len(stored)}")
    assert (sent, acked, failed) == (200, 199, 1)
    assert stored == [str(i) for i in range(200) if i != 63]


def test_records_in_flight_when_the_producer_is_replaced_are_all_stored(stack: Settings,
                                                                        topics: tuple[str, str]) -> None:  # fmt: skip
    """What the watchdog does to a stranded producer, done to a live one mid-stream: the real client fails what the
    closed producer held and the publisher resends it on the new one; nothing is acked that is not stored."""

    async def run() -> tuple[int, int, int, int]:
        async with pulsar_sinks(stack, topics[0]) as (sink,):
            assert isinstance(sink, PulsarSink)
            publisher = Publisher(sink, retry_delay=0.05)
            batch = records(3_000, "replaced")
            for number, record in enumerate(batch):
                publisher.publish(record)
                if number == 1_500:
                    await sink.replace_producer()
                await publisher.wait_capacity()
            assert await publisher.drain(60)
            return publisher.sent, publisher.acked, publisher.failed, sink.replaced

    sent, acked, failed, replaced = asyncio.run(run())
    stored = [int(m.properties()["i"]) for m in read_topic(stack, topics[0])]
    print(f"sent {sent}, acked {acked}, failed {failed}, stored {len(stored)} ({len(set(stored))} distinct)")
    assert (sent, acked, failed, replaced) == (3_000, 3_000, 0, 1)
    assert set(stored) == set(range(3_000))

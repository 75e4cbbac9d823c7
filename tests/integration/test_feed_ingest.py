"""Ingest against the real Pulsar of the stack: the feed's acceptance criteria, each on its own topics."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pulsar
import pytest
from cleanup import drop_topics

from rtca.feed.capture import SHIPPED_CAPTURE, read_capture
from rtca.feed.connection import Backoff, FeedConnection
from rtca.feed.ingest import CUT_BYTES, IngestReport, ingest, ingest_to_pulsar, run_ingest
from rtca.feed.protocol import parse_frame
from rtca.feed.server import Faults, ServerStats
from rtca.feed.sinks import pulsar_client, pulsar_sinks
from rtca.feed.sources import SourceSpec, open_source
from rtca.settings import Settings

pytestmark = pytest.mark.stack

CAPTURE = read_capture(SHIPPED_CAPTURE)
EXPECTED_KEYS = {"l2update": 9719, "ticker": 107, "match": 97, "last_match": 10, "snapshot": 10, "subscriptions": 1}
RECONNECT = Backoff(initial=0.1, maximum=30.0)
"""The first reconnect attempt waits at most 0.1 s (`Backoff.delay(0)`); a reconnect that needed more attempts, or a
watchdog that saw the silence late, shows in the time it took."""
MARGIN_S = 5.0
"""What a reconnect may take beyond the silence timeout and the first backoff (the watchdog's look every `POLL_S`,
the close, connect, subscription and its answer, publishing the last frame) on a loaded 2-core CI machine."""


@pytest.fixture
def topics(stack: Settings, unique: str) -> Iterator[tuple[str, str]]:
    """A raw and a health topic of this test only, inside the settings' tenant/namespace; deleted afterwards (the
    namespace keeps inactive topics)."""
    names = stack.topic(f"feedtest-{unique}-raw"), stack.topic(f"feedtest-{unique}-health")
    yield names
    drop_topics(stack, names)


def read_topic(settings: Settings, topic: str, *, idle: float = 3.0) -> list[pulsar.Message]:
    """Every message of a topic, from the earliest, until none arrives for `idle` seconds."""
    client = pulsar_client(settings)
    try:
        reader = client.create_reader(topic, pulsar.MessageId.earliest)
        messages = []
        while True:
            try:
                messages.append(reader.read_next(timeout_millis=int(idle * 1000)))
            except pulsar.Timeout:
                return messages
    finally:
        client.close()


def health_records(settings: Settings, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(message.data()) for message in read_topic(settings, topic)]


def replay_with_faults(settings: Settings, topics: tuple[str, str], faults: Faults, *,
                       silence_timeout: float = 10.0) -> tuple[IngestReport, ServerStats]:
    """Ingest the shipped capture, served in-process at max speed with `faults`, into the test's topics."""

    async def main() -> tuple[IngestReport, ServerStats]:
        spec = SourceSpec.build("replay", speed="max", faults=faults)
        async with pulsar_sinks(settings, *topics) as (raw, health), open_source(spec) as endpoint:
            connection = FeedConnection(endpoint.url, endpoint.subscribe_frame(), silence_timeout=silence_timeout,
                                        backoff=RECONNECT)
            report = await ingest(connection, raw, health, source="replay")
            assert endpoint.server is not None
            return report, endpoint.server.stats

    return asyncio.run(asyncio.wait_for(main(), 300))


def key_counts(messages: list[pulsar.Message]) -> Counter[str]:
    return Counter(message.partition_key() for message in messages)


def test_replay_at_max_speed_puts_every_frame_on_the_raw_topic(stack: Settings, topics: tuple[str, str]) -> None:
    raw_topic, health_topic = topics
    started = time.monotonic()
    report = run_ingest(stack, source="replay", speed="max", raw_topic=raw_topic, health_topic=health_topic)
    elapsed = time.monotonic() - started
    print(report)
    print(f"replay -> Pulsar at max speed: {report.received} frames received and acknowledged in {report.seconds:.2f} s"
          f" = {report.rate:.0f} msg/s ({elapsed:.2f} s including Pulsar connect and flush)")
    messages = read_topic(stack, raw_topic)
    counts = key_counts(messages)
    print("raw topic per key:", dict(counts))
    assert counts == EXPECTED_KEYS
    assert report.ok and report.acked == report.received == len(messages) == 9944

    recorded = Counter(f.text.encode() for f in CAPTURE.frames if b'"subscriptions"' not in f.text.encode())
    assert Counter(m.data() for m in messages if m.partition_key() != "subscriptions") == recorded
    for message in messages:
        frame = parse_frame(message.data())
        properties = message.properties()
        assert message.partition_key() == frame.type
        assert properties.get("product") == frame.product
        assert properties.get("sequence") == (None if frame.seq is None else str(frame.seq))
        received_ms = int(properties["received_ms"])
        assert message.event_timestamp() == (frame.event_ms if frame.event_ms is not None else received_ms)

    ticks = [h for h in health_records(stack, health_topic) if h["kind"] == "tick"]
    assert ticks and ticks[-1]["messages"] == 9944 and ticks[-1]["acked"] == 9944 and ticks[-1]["source"] == "replay"


def reconnect_gap(messages: list[pulsar.Message]) -> float:
    """Seconds from the last frame of the first connection to the first of the second: the second connection's
    first frame is the server's `subscriptions` answer; `received_ms` is the frame's receive time."""
    received = [(int(m.properties()["received_ms"]), m.partition_key()) for m in messages]
    second = sorted(ms for ms, key in received if key == "subscriptions")[1]
    return (second - max(ms for ms, _ in received if ms < second)) / 1000


def test_dropped_connection_reconnects_and_nothing_sent_is_missing(stack: Settings,
                                                                   topics: tuple[str, str]) -> None:
    report, stats = replay_with_faults(stack, topics, Faults(drop_after=3000))
    messages = read_topic(stack, topics[0])
    counts = key_counts(messages)
    gap, bound = reconnect_gap(messages), RECONNECT.initial + MARGIN_S
    print(report, "\nraw topic per key:", dict(counts), "\nserver sent:", dict(stats.sent_by_type))
    print(f"dropped: first frame on the new connection {gap:.3f} s after the last (bound {bound:g} s)")
    assert 0 <= gap <= bound  # reconnected within the first attempt's backoff (plus the margin)
    assert counts == stats.sent_by_type  # both connections: every frame the server sent is on the topic
    assert counts["subscriptions"] == 2 and counts["snapshot"] == 20  # resubscribed, fresh snapshots
    assert counts["l2update"] == 9719 and counts["match"] == 97
    ticks = [h for h in health_records(stack, topics[1]) if h["kind"] == "tick"]
    assert report.reconnects == 1 and ticks[-1]["reconnects"] == 1 and ticks[-1]["connections"] == 2


def test_silent_server_ends_in_a_reconnect(stack: Settings, topics: tuple[str, str]) -> None:
    faults = Faults(silence_after=2000, silence_for=60.0)
    # 2.5 s: health ticks come every second, so one whole tick interval always falls inside the silence
    timeout = 2.5
    report, stats = replay_with_faults(stack, topics, faults, silence_timeout=timeout)
    messages = read_topic(stack, topics[0])
    counts = key_counts(messages)
    ticks = [h for h in health_records(stack, topics[1]) if h["kind"] == "tick"]
    gap, bound = reconnect_gap(messages), timeout + RECONNECT.initial + MARGIN_S
    print(report, "\nsilence_ms per tick:", [t["silence_ms"] for t in ticks])
    print(f"silence: first frame on the new connection {gap:.3f} s after the last (bound {bound:g} s)")
    assert timeout - 0.001 <= gap <= bound  # the watchdog's timeout (ms resolution), not much more, then a backoff
    assert counts == stats.sent_by_type and counts["subscriptions"] == 2
    assert counts["l2update"] == 9719 and counts["match"] == 97
    assert any(t["silence_ms"] >= 1000 and t["msg_rate"] == 0 for t in ticks)  # the silence was reported
    assert ticks[-1]["reconnects"] == 1 == report.reconnects


def test_skipped_trade_ids_produce_missed_trade_records(stack: Settings, topics: tuple[str, str]) -> None:
    report, _ = replay_with_faults(stack, topics, Faults(skip_trade_ids=(3, 2)))
    health = health_records(stack, topics[1])
    gaps = [h for h in health if h["kind"] == "gap"]
    matches = Counter(orjson.loads(f.text)["product_id"] for f in CAPTURE.frames if '"type":"match"' in f.text)
    expected = {product: 2 * (count // 3) for product, count in matches.items() if count >= 3}
    missed: Counter[str] = Counter()
    for gap in gaps:
        missed[gap["product_id"]] += gap["missed"]
    print(f"{len(gaps)} gap records; missed per product: {dict(missed)}; expected {expected}")
    assert missed == expected and sum(expected.values()) == report.missed_trades > 0
    assert all(g["missed"] == g["last_missing"] - g["first_missing"] + 1 == 2 for g in gaps)
    assert health[-1]["kind"] == "tick" and health[-1]["missed_trades"] == report.missed_trades
    ticks = [h for h in health if h["kind"] == "tick"]  # per-tick increments add up to the totals
    assert sum(t["new_missed_trades"] for t in ticks) == report.missed_trades
    assert sum(t["new_gaps"] for t in ticks) == report.gaps == len(gaps)


def test_a_sequence_jump_alone_produces_no_missed_trades(stack: Settings, topics: tuple[str, str]) -> None:
    report, _ = replay_with_faults(stack, topics, Faults(sequence_jump=(2, 1000)))
    health = health_records(stack, topics[1])
    print(report)
    assert [h for h in health if h["kind"] == "gap"] == []
    assert health[-1]["missed_trades"] == 0 and health[-1]["out_of_order"] == 0 and health[-1]["messages"] == 9944


MALFORMED: list[str | bytes] = [
    "not json at all",
    "[1, 2, 3]",
    '{"product_id":"SKL-USD","no":"type"}',
    '{"type":"ticker","product_id":"SKL-USD","sequence":"abc","price":{"x":1}}',
    b"\xff\xfe binary garbage",
    "x" * 1_000_000,  # 1 MB that is not JSON
    '{"type":"snapshot","product_id":"SKL-USD","bids":[' + '["1.0","2.0"],' * 450_000 + '["1","1"]],"asks":[]}',
]
UNKNOWN = ['{"type":"brand_new_type","product_id":"SKL-USD"}', '{"type":"mega","blob":"' + "y" * 1_000_000 + '"}']


def test_malformed_frames_never_stop_the_service(stack: Settings, topics: tuple[str, str]) -> None:
    faults = Faults(inject_after={10: MALFORMED[:4], 5000: [*MALFORMED[4:], *UNKNOWN]})
    report, stats = replay_with_faults(stack, topics, faults)
    messages = read_topic(stack, topics[0])
    counts = key_counts(messages)
    print(report, "\nraw topic per key:", dict(counts))
    assert counts["malformed"] == len(MALFORMED) == report.malformed
    assert counts["unknown"] == len(UNKNOWN) == report.unknown
    assert counts["l2update"] == 9719 and counts["match"] == 97 and counts["ticker"] == 107  # the service went on
    by_error = {m.properties()["error"]: m for m in messages if m.partition_key() == "malformed"}
    oversized = by_error["oversized"]
    assert len(oversized.data()) == CUT_BYTES and oversized.properties()["payload_bytes"] == str(len(MALFORMED[6]))
    kept = {m.data() for m in messages}
    assert {b"not json at all", b"\xff\xfe binary garbage", b"x" * 1_000_000, UNKNOWN[1].encode()} <= kept
    ticks = [h for h in health_records(stack, topics[1]) if h["kind"] == "tick"]
    assert ticks[-1]["malformed"] == len(MALFORMED) and ticks[-1]["unknown"] == len(UNKNOWN)



def test_simulator_into_pulsar(stack: Settings, topics: tuple[str, str]) -> None:
    report = run_ingest(stack, source="simulator", rate="max", seed=5, max_messages=3000, raw_topic=topics[0],
                        health_topic=topics[1])
    messages = read_topic(stack, topics[0])
    counts = key_counts(messages)
    print(report, "\nraw topic per key:", dict(counts))
    assert report.ended == "max_messages" and report.ok and len(messages) == 3000
    assert report.malformed == report.missed_trades == report.out_of_order == 0
    assert {"subscriptions", "snapshot", "status", "l2update", "match", "ticker", "heartbeat"} <= set(counts)


def test_the_live_source_connects_where_the_settings_say(stack: Settings, topics: tuple[str, str]) -> None:
    """`RTCA_FEED__COINBASE_URL` (a sandbox, a proxy): `--source coinbase` ingests from it; here our replay server
    stands in for the exchange."""
    raw_topic, health_topic = topics

    async def main() -> IngestReport:
        async with open_source(SourceSpec.build("replay", speed="max")) as exchange:
            settings = stack.model_copy(update={"feed": stack.feed.model_copy(update={"coinbase_url": exchange.url})})
            live = SourceSpec.build("coinbase", products=exchange.products, channels=exchange.channels)
            return await ingest_to_pulsar(settings, live, raw_topic=raw_topic, health_topic=health_topic,
                                          max_messages=500)

    report = asyncio.run(asyncio.wait_for(main(), 120))
    print(report)
    assert report.source == "coinbase" and report.acked == report.received == 500
    assert report.url.startswith("ws://127.0.0.1:")

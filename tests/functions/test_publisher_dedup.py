"""The router's deduplicated publishing (fake context): stable producer names, sequence ids from the input's
position, and no second send of an input answered before (by this instance or, per the broker, an earlier one);
on a partitioned output, per partition (also against the real broker: marked `stack`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pulsar
import pytest
from cleanup import drop_topics
from waiting import wait_for

from rtca.feed.sinks import pulsar_client
from rtca.functions import routing
from rtca.functions.router import Router
from rtca.functions.runtime import SEQUENCE_PROPERTY, Publisher, highest_stored, input_sequence_id, key_partition
from rtca.functions.samples import SAMPLES
from rtca.settings import Settings
from rtca.stack.remote import http_options, pulsar_topic_path

TOPICS = {name: f"persistent://t/n/{name}" for name in (*routing.CHANNELS, routing.DEAD_LETTER)}
TICKER = orjson.dumps(SAMPLES["ticker"])


def test_sequence_ids_grow_with_the_input_position(message_id_class: Any) -> None:
    ids = [message_id_class(3, 7, -1), message_id_class(3, 8, 0), message_id_class(3, 8, 1),
           message_id_class(3, 8, 999), message_id_class(3, 9, -1), message_id_class(4, 0, -1),
           message_id_class(4, 0, 0), message_id_class(2**28, 2**20 - 1, 16_381)]
    sequence_ids = [input_sequence_id(m) for m in ids]
    assert all(isinstance(s, int) and 0 < s < 2**63 for s in sequence_ids)
    assert sequence_ids == sorted(sequence_ids) and len(set(sequence_ids)) == len(ids)
    assert input_sequence_id(message_id_class(0, 0, -1)) == 1  # the client reads 0 as "no sequence id"
    assert input_sequence_id(message_id_class(1, 2**20, -1)) is None
    assert input_sequence_id(message_id_class(1, 1, 2**14)) is None


def test_producer_names_are_stable_and_each_record_carries_its_inputs_sequence_id(
        fake_context: Callable[..., Any], message_ids: Any) -> None:  # fmt: skip
    names = []
    for _ in range(2):  # two instances (a restart): the same names
        ctx = fake_context({"topics": TOPICS})
        router, seen = Router(), []
        original = ctx.get_pulsar_client

        def client(ctx: Any = ctx, seen: list[str] = seen, original: Any = original) -> Any:
            real = original()
            create = real.create_producer
            real.create_producer = lambda topic, **conf: seen.append(conf.get("producer_name")) or create(topic, **conf)
            return real

        ctx.get_pulsar_client = client
        mid = next(message_ids)
        ctx.run(router, TICKER, mid)
        assert ctx.published[-1].conf["sequence_id"] == input_sequence_id(mid)
        names.append(seen)
    assert names[0] == names[1] and names[0][0] and names[0][0].startswith("rtca:t/n/fn:")


def test_a_redelivered_input_is_acknowledged_without_a_second_record(fake_context: Callable[..., Any],
                                                                     message_id_class: Any) -> None:  # fmt: skip
    ctx, router = fake_context({"topics": TOPICS}), Router()
    first, second = message_id_class(5, 1), message_id_class(5, 2)
    for mid in (first, second, first, second):  # Pulsar redelivers what was not acknowledged yet
        ctx.run(router, TICKER, mid)
    router._publisher.sweep(older_than_ns=0)  # type: ignore[union-attr]
    assert len(ctx.published) == 2
    assert ctx.acked.count(first) == 2 and ctx.acked.count(second) == 2


def test_after_a_restart_what_the_broker_stored_is_skipped_and_the_rest_published(
        fake_context: Callable[..., Any], message_id_class: Any) -> None:  # fmt: skip
    """The broker tells a new producer the first sequence id of the last batch it stored under that name; the rest
    of that batch is read back from the topic (`highest_stored`) and not published again."""
    before = fake_context({"topics": TOPICS})
    router = Router()
    for entry in range(1, 4):
        before.run(router, TICKER, message_id_class(9, entry))
    name = next(iter(router._publisher._outputs.values())).producer.name  # type: ignore[union-attr]
    last_batch_from = before.published[-2].conf["sequence_id"]  # entries 2 and 3 went out in one batch
    assert before.published[-1].conf["properties"] == {SEQUENCE_PROPERTY: str(before.published[-1].conf["sequence_id"])}

    after = fake_context({"topics": TOPICS}, stored_sequence_ids={name: last_batch_from},
                         topics=before.topics, producers=before.producers)  # fmt: skip
    restarted = Router()
    for entry in range(1, 6):  # 1..3 redelivered, 4 and 5 new
        after.run(restarted, TICKER, message_id_class(9, entry))
    restarted._publisher.sweep(older_than_ns=0)  # type: ignore[union-attr]
    assert [p.conf["sequence_id"] for p in after.published] == [
        input_sequence_id(message_id_class(9, entry)) for entry in (4, 5)]
    assert sorted(m.entry for m in after.acked) == [1, 2, 3, 4, 5]


def test_records_of_other_producers_and_older_batches_do_not_move_the_mark(fake_context: Callable[..., Any]) -> None:
    ctx = fake_context({})
    client = ctx.get_pulsar_client()
    ours, theirs = client.create_producer("t", producer_name="ours"), client.create_producer("t", producer_name="x")
    for producer, sequence_id in ((ours, 5), (ours, 7), (theirs, 99), (ours, 9), (ours, 12), (theirs, 100)):
        producer.send_async(b"r", None, sequence_id=sequence_id, properties={SEQUENCE_PROPERTY: str(sequence_id)})
    assert highest_stored(client, "t", "ours", 9) == 12  # its last batch: 9 and 12
    assert highest_stored(client, "t", "ours", 11) == 11  # that batch not found: the broker's mark stands
    assert highest_stored(client, "empty", "ours", 3) == 3


def test_a_position_beyond_the_packing_is_still_published(fake_context: Callable[..., Any],
                                                          message_id_class: Any) -> None:  # fmt: skip
    ctx, router = fake_context({"topics": TOPICS}), Router()
    ctx.run(router, TICKER, message_id_class(1, 5))
    ctx.run(router, TICKER, message_id_class(1, 2**21))  # more entries in a ledger than the packing holds
    assert [p.conf["sequence_id"] for p in ctx.published] == [input_sequence_id(message_id_class(1, 5)),
                                                               input_sequence_id(message_id_class(1, 5)) + 1]


# --- partitioned outputs -----------------------------------------------------------------------------------------
def test_a_key_always_picks_the_same_partition_javas_string_hash() -> None:
    """Java's String.hashCode (the Java client's default router), not Python's hash(), which changes per process."""
    assert [key_partition("hello", 1_000_000_000), key_partition("Aa", 10_000), key_partition("BB", 10_000)] == [
        99162322, 2112, 2112]  # Java: "hello".hashCode() == 99162322, "Aa" and "BB" collide
    assert key_partition("polygenelubricants", 7) == 0  # hashCode() is Integer.MIN_VALUE: masked to 0, not negative
    assert key_partition("\U0001F600", 10_000_000) == 0xD83D * 31 + 0xDE00  # UTF-16 code units, as Java counts
    assert all(key_partition("BTC-USD", 4) == key_partition("BTC-USD", 4) == 2 for _ in range(3))
    assert {key_partition(f"P{i}-USD", 3) for i in range(30)} == {0, 1, 2}
    assert key_partition(None, 4) == key_partition("", 4) == key_partition("BTC-USD", 1) == 0  # no key: partition 0


def producer_name(source: str, topic: str) -> str:
    """The deduplicating producer's name of (input `source`, output `topic`) for the fake context's function t/n/fn:
    pinned, since a running deployment's deduplication state is kept under it."""
    return f"rtca:t/n/fn:{hashlib.sha256(f'{source}>{topic}'.encode()).hexdigest()[:16]}"


def keys_of_two_partitions() -> tuple[str, str]:
    """A product of partition 0 and one of partition 1 of a 2-partition topic."""
    a = next(f"K{i}-USD" for i in range(100) if key_partition(f"K{i}-USD", 2) == 0)
    b = next(f"K{i}-USD" for i in range(100) if key_partition(f"K{i}-USD", 2) == 1)
    return a, b


def test_on_a_partitioned_output_each_partition_keeps_its_own_mark(fake_context: Callable[..., Any],
                                                                   message_id_class: Any) -> None:  # fmt: skip
    """After a restart, partition 1 stored less than partition 0: an input of a key of partition 1 between the two
    marks is published (a producer of the whole topic would see partition 0's mark and skip it, losing it), one at
    or below partition 1's own mark is not."""
    out, source = "persistent://t/n/out", "persistent://t/n/in"
    a, b = keys_of_two_partitions()
    name = producer_name(source, out)
    sent = {entry: input_sequence_id(message_id_class(5, entry)) for entry in range(1, 5)}
    marks = {(f"{out}-partition-0", name): sent[3], (f"{out}-partition-1", name): sent[1]}
    ctx = fake_context({}, partitions={out: 2}, stored_sequence_ids=marks)
    publisher = Publisher(ctx, dedup=True)
    for entry, key in ((1, b), (2, b), (3, a), (4, a)):  # 1..3 redelivered, 4 new
        publisher.publish_then_ack(ctx, out, b"r%d" % entry, key=key, source=source,
                                   message_id=message_id_class(5, entry))  # fmt: skip
    publisher.sweep(older_than_ns=0)
    assert [(p.topic, p.conf["sequence_id"]) for p in ctx.published] == [
        (f"{out}-partition-1", sent[2]), (f"{out}-partition-0", sent[4])]
    assert {producer for records in ctx.producers.values() for producer, _ in records} == {name}
    assert sorted(m.entry for m in ctx.acked) == [1, 2, 3, 4]


def test_an_unpartitioned_output_keeps_its_producer_name(fake_context: Callable[..., Any],
                                                         message_id_class: Any) -> None:  # fmt: skip
    ctx = fake_context({})
    publisher = Publisher(ctx, dedup=True)
    publisher.publish_then_ack(ctx, "persistent://t/n/out", b"r", key="BTC-USD", source="persistent://t/n/in",
                               message_id=message_id_class(1, 1))  # fmt: skip
    assert ctx.published[0].topic == "persistent://t/n/out"
    assert ctx.producers["persistent://t/n/out"][0][0] == producer_name("persistent://t/n/in", "persistent://t/n/out")


@pytest.fixture
def partitioned_topic(stack: Settings, unique: str) -> Iterator[str]:
    """A topic of 2 partitions of this test only, in the settings' namespace; deleted afterwards."""
    topic = stack.topic(f"dedup-{unique}-out")
    httpx.put(f"{stack.pulsar.admin_url}{pulsar_topic_path(topic)}/partitions", json=2, timeout=30,
              **http_options(stack, "pulsar")).raise_for_status()  # fmt: skip
    yield topic
    drop_topics(stack, [topic])


def stored(client: pulsar.Client, topic: str) -> list[tuple[bytes, str, int]]:
    """(payload, producer name, `SEQUENCE_PROPERTY`) of every record of one partition topic, in order."""
    reader = client.create_reader(topic, pulsar.MessageId.earliest)
    try:
        records = []
        while reader.has_message_available():
            message = reader.read_next(10_000)
            records.append((message.data(), message.producer_name(), int(message.properties()[SEQUENCE_PROPERTY])))
        return records
    finally:
        reader.close()


@pytest.mark.stack
@pytest.mark.parametrize("before", ["publisher", "partitioned producer"])
def test_after_a_restart_a_partition_that_stored_less_gets_its_record(
        stack: Settings, partitioned_topic: str, before: str, fake_context: Callable[..., Any],
        message_id_class: Any) -> None:  # fmt: skip
    """The real broker: before a crash, partition 0 stored input 3's record, partition 1 only input 1's (input 2's
    never got there). After the restart input 2, redelivered, is stored on partition 1, while inputs 1 and 3 are not
    stored twice. `before` is who published before the crash: this Publisher, or a producer of the whole topic
    under the same name (the Publisher before partitions had their own producers): its marks hold too."""
    out, source = partitioned_topic, "persistent://t/n/in"
    a, b = keys_of_two_partitions()
    name = producer_name(source, out)
    seq = {entry: input_sequence_id(message_id_class(5, entry)) for entry in range(1, 4)}
    first = pulsar_client(stack)
    try:
        if before == "publisher":
            ctx = fake_context({})
            ctx.get_pulsar_client = lambda: first
            publisher = Publisher(ctx, dedup=True)
            for entry, key in ((1, b), (3, a)):
                publisher.publish_then_ack(ctx, out, b"r%d" % entry, key=key, source=source,
                                           message_id=message_id_class(5, entry))  # fmt: skip
            wait_for(lambda: sorted(m.entry for m in ctx.acked) == [1, 3], timeout=30, what="inputs 1 and 3 stored")
        else:
            producer = first.create_producer(out, producer_name=name,
                                             message_router=lambda m, n: key_partition(m.partition_key(), n))
            for entry, key in ((1, b), (3, a)):
                producer.send(b"r%d" % entry, partition_key=key, sequence_id=seq[entry],
                              properties={SEQUENCE_PROPERTY: str(seq[entry])})  # fmt: skip
            assert producer.last_sequence_id() == seq[3]  # the whole topic's: the highest of its partitions
    finally:
        first.close()  # the instance dies

    client = pulsar_client(stack)
    try:
        ctx = fake_context({})
        ctx.get_pulsar_client = lambda: client
        restarted = Publisher(ctx, dedup=True)
        for entry, key in ((1, b), (2, b), (3, a)):  # redelivered: none was acknowledged
            restarted.publish_then_ack(ctx, out, b"r%d" % entry, key=key, source=source,
                                       message_id=message_id_class(5, entry))  # fmt: skip
        restarted.sweep(older_than_ns=0)  # inputs 1 and 3, not sent again, are acknowledged by the sweep
        wait_for(lambda: sorted(m.entry for m in ctx.acked) == [1, 2, 3], timeout=30, what="every input settled")
        assert stored(client, f"{out}-partition-0") == [(b"r3", name, seq[3])]
        assert stored(client, f"{out}-partition-1") == [(b"r1", name, seq[1]), (b"r2", name, seq[2])]
    finally:
        client.close()

"""The router's deduplicated publishing (fake context): stable producer names, sequence ids from the input's
position, and no second send of an input answered before (by this instance or, per the broker, an earlier one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from rtca.functions import routing
from rtca.functions.router import Router
from rtca.functions.runtime import SEQUENCE_PROPERTY, highest_stored, input_sequence_id
from rtca.functions.samples import SAMPLES

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

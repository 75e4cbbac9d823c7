"""The router's deduplicated publishing (fake context): stable producer names, sequence ids from the input's
position, and no second send of an input answered before (by this instance or, per the broker, an earlier one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from rtca.functions import routing
from rtca.functions.router import Router
from rtca.functions.runtime import input_sequence_id
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
    before = fake_context({"topics": TOPICS})
    router = Router()
    for entry in range(1, 4):
        before.run(router, TICKER, message_id_class(9, entry))
    name = next(iter(router._publisher._outputs.values())).producer.name  # type: ignore[union-attr]
    stored = before.published[-2].conf["sequence_id"]  # the broker stored entries 1 and 2, not 3

    after = fake_context({"topics": TOPICS}, stored_sequence_ids={name: stored})
    restarted = Router()
    for entry in range(1, 6):  # 1..3 redelivered, 4 and 5 new
        after.run(restarted, TICKER, message_id_class(9, entry))
    restarted._publisher.sweep(older_than_ns=0)  # type: ignore[union-attr]
    assert [p.conf["sequence_id"] for p in after.published] == [
        input_sequence_id(message_id_class(9, entry)) for entry in (3, 4, 5)]
    assert sorted(m.entry for m in after.acked) == [1, 2, 3, 4, 5]


def test_a_position_beyond_the_packing_is_still_published(fake_context: Callable[..., Any],
                                                          message_id_class: Any) -> None:  # fmt: skip
    ctx, router = fake_context({"topics": TOPICS}), Router()
    ctx.run(router, TICKER, message_id_class(1, 5))
    ctx.run(router, TICKER, message_id_class(1, 2**21))  # more entries in a ledger than the packing holds
    assert [p.conf["sequence_id"] for p in ctx.published] == [input_sequence_id(message_id_class(1, 5)),
                                                               input_sequence_id(message_id_class(1, 5)) + 1]

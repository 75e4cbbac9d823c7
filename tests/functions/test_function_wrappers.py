"""The Pulsar Function classes with a fake context: topics from userConfig, publish-then-ack, restart, duplicates."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from rtca.analytics.stats import FIELDS, StatsRow, mismatches, pandas_reference
from rtca.functions import routing
from rtca.functions.identity import Identity, PublishingIdentity
from rtca.functions.router import Router
from rtca.functions.runtime import Publisher, RawSerDe
from rtca.functions.samples import SAMPLES, hostile_payloads
from rtca.functions.stats import TickerStatsFunction

TOPICS = {name: f"persistent://t/n/{name}" for name in (*routing.CHANNELS, routing.DEAD_LETTER)}
OUT = "persistent://t/n/stats"


def router_context(fake_context: Callable[..., Any]) -> Any:
    return fake_context({"topics": TOPICS})


def test_router_publishes_to_the_channel_topic_and_acks_after_the_publish(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    ctx, router = router_context(fake_context), Router()
    for kind, sample in SAMPLES.items():
        mid = next(message_ids)
        ctx.run(router, orjson.dumps(sample), mid, {"received_ms": "1700000000000", "product": "X"})
        published = ctx.published[-1]
        assert published.topic == TOPICS[routing.SHAPES[kind].channel]
        assert published.conf.get("partition_key") == sample.get("product_id")
        assert orjson.loads(published.data)["received_ms"] == 1_700_000_000_000
        assert ctx.acked[-1] == mid
    assert len(ctx.acked) == len(SAMPLES) and "dead_letters" not in ctx.metrics


def test_router_never_raises_and_dead_letters_hostile_input(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    ctx, router = router_context(fake_context), Router()
    payloads = list(hostile_payloads(1000, seed=11))
    for payload in payloads:
        ctx.run(router, payload, next(message_ids), {"received_ms": "garbage"})
    assert [p.topic for p in ctx.published] == [TOPICS["dead_letter"]] * len(payloads)
    assert len(ctx.acked) == len(payloads) and ctx.metrics["dead_letters"] == len(payloads)
    first = orjson.loads(ctx.published[0].data)
    assert first["source_topic"] == ctx.input_topic and first["source_message_id"] == "7:1:-1:-1"


def test_router_dead_letters_a_frame_ingest_cut_as_too_large_with_its_full_size(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    ctx, router = router_context(fake_context), Router()
    start = orjson.dumps(SAMPLES["snapshot"])[:50]
    properties = {"received_ms": "1700000000000", "error": "oversized", "payload_bytes": "4800000", "product": "X"}
    ctx.run(router, start, next(message_ids), properties)
    record = orjson.loads(ctx.published[-1].data)
    assert ctx.published[-1].topic == TOPICS["dead_letter"] and len(ctx.acked) == 1
    assert (record["reason"], record["payload_bytes"], record["product_id"]) == ("too_large", 4_800_000, "X")


@pytest.mark.parametrize("size", ["\u00b2", "9" * 5000, "-1", ""])
def test_router_routes_a_record_whose_size_property_no_ingest_wrote(fake_context, message_ids, size: str) -> None:  # type: ignore[no-untyped-def]
    """Anyone may publish to the raw topic: "²" is a digit `int()` refuses, and the router raised on it, for ever."""
    ctx, router = router_context(fake_context), Router()
    properties = {"received_ms": "1700000000000", "error": "oversized", "payload_bytes": size}
    ctx.run(router, orjson.dumps(SAMPLES["ticker"]), next(message_ids), properties)
    assert ctx.published[-1].topic == TOPICS["ticker"] and len(ctx.acked) == 1


def test_router_takes_no_receive_time_far_ahead_of_its_clock(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    """A ``received_ms`` property of 2286 let a frame of 2286 pass as "at most 5 minutes after its receipt", and
    every later record of its product was late for the windowed functions. Its clock stands in for such a one."""
    ctx, router = router_context(fake_context), Router()
    far = {"received_ms": "10000000000000"}  # 2286-11-20
    match = {**SAMPLES["match"], "time": "2286-11-20T17:46:40.000000Z"}
    ctx.run(router, orjson.dumps(match), next(message_ids), far)
    dead = orjson.loads(ctx.published[-1].data)
    assert ctx.published[-1].topic == TOPICS["dead_letter"] and dead["reason"] == "invalid_time"
    before = time.time_ns() // 1_000_000
    ctx.run(router, orjson.dumps(SAMPLES["ticker"]), next(message_ids), far)
    ticker = orjson.loads(ctx.published[-1].data)
    assert ctx.published[-1].topic == TOPICS["ticker"] and before <= ticker["received_ms"] <= before + 60_000
    assert len(ctx.acked) == 2


def test_router_does_not_ack_when_the_publish_fails(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    ctx, router = router_context(fake_context), Router()
    ctx.fail_publish = True
    ctx.run(router, orjson.dumps(SAMPLES["ticker"]), next(message_ids))
    assert ctx.acked == [] and any("failed" in line for line in ctx.logger.lines)


def test_acks_come_in_batches_after_the_broker_confirms_and_a_sweep_takes_the_rest(fake_context, message_ids  # type: ignore[no-untyped-def]
                                                                                    ) -> None:  # fmt: skip
    ctx = fake_context({"topics": TOPICS, "ack_every": 64, "ack_after_ms": 60_000})
    router = Router()
    for _ in range(150):
        ctx.run(router, orjson.dumps(SAMPLES["l2update"]), next(message_ids))
    # the first record carries a callback (nothing was marked yet), then every 64th: 1 + 64 + 64 acknowledged
    assert len(ctx.acked) == 129 and len(ctx.published) == 150
    assert router._publisher is not None
    assert router._publisher.sweep(older_than_ns=0) == 21
    assert len(ctx.acked) == 150 and len(set(ctx.acked)) == 150


def test_a_failed_flush_leaves_inputs_unacknowledged(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    ctx = fake_context({"topics": TOPICS, "ack_every": 64, "ack_after_ms": 60_000})
    router = Router()
    for _ in range(3):
        ctx.run(router, orjson.dumps(SAMPLES["l2update"]), next(message_ids))
    ctx.fail_publish = True
    assert router._publisher is not None and router._publisher.sweep(older_than_ns=0) == 0
    assert len(ctx.acked) == 1 and any("flushing" in line for line in ctx.logger.lines)


def test_an_input_with_several_records_is_acknowledged_once_all_are_stored(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    ctx = fake_context({})
    publisher = Publisher(ctx)
    ctx._message_id = first = next(message_ids)
    publisher.publish_all_then_ack(ctx, [("t/a", b"1", "K", 5), ("t/b", b"2", None, None), ("t/a", b"3", "K", 6)])
    assert ctx.acked == [first] and [p.topic for p in ctx.published] == ["t/a", "t/b", "t/a"]
    ctx._message_id = second = next(message_ids)
    publisher.publish_all_then_ack(ctx, [])  # nothing to publish: acknowledged at once
    assert ctx.acked == [first, second]
    lazy = fake_context({"ack_every": 64, "ack_after_ms": 60_000})
    publisher = Publisher(lazy)
    lazy._message_id = primer = next(message_ids)
    publisher.publish_all_then_ack(lazy, [("t/a", b"0", None, None), ("t/b", b"0", None, None)])
    assert lazy.acked == [primer]  # the first record on a topic carries a confirmation
    lazy._message_id = third = next(message_ids)
    publisher.publish_all_then_ack(lazy, [("t/a", b"1", None, None), ("t/b", b"2", None, None)])
    assert lazy.acked == [primer]  # no confirmation asked for yet...
    assert publisher.sweep(older_than_ns=0) == 2 and lazy.acked == [primer, third]  # ...the sweep stores both


def test_router_refuses_to_run_without_topics(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    ctx = fake_context({"topics": {"ticker": "x"}})
    with pytest.raises(KeyError):
        ctx.run(Router(), b"{}", next(message_ids))


# --- ticker statistics ---------------------------------------------------------------------------------------------
def tickers(seed: int, products: dict[str, float], n: int) -> Iterator[tuple[str, float, bytes]]:
    """Interleaved typed ticker records (as the router emits them) of seeded random walks."""
    rng = random.Random(seed)
    prices = dict(products)
    for sequence in range(1, n + 1):
        product = rng.choice(sorted(prices))
        if rng.random() > 0.3:
            prices[product] = round(max(prices[product] * 0.5, prices[product] + rng.gauss(0, prices[product] * 1e-3)), 6)
        record = {"type": "ticker", "product_id": product, "price": prices[product], "sequence": sequence,
                  "event_ms": 1_600_000_000_000 + sequence, "received_ms": 1_600_000_000_005 + sequence}
        yield product, prices[product], orjson.dumps(record)


def stats_context(fake_context: Callable[..., Any], topics: dict[str, list[bytes]] | None = None) -> Any:
    ctx = fake_context({"dead_letter": TOPICS["dead_letter"], "span": 10, "window": 5}, output_topic=OUT)
    if topics is not None:
        ctx.topics = topics
    return ctx


def outputs(ctx: Any) -> list[dict[str, Any]]:
    return [orjson.loads(p.data) for p in ctx.published if p.topic == OUT]


def assert_equals_pandas(records: list[dict[str, Any]], stream: list[tuple[str, float, bytes]]) -> None:
    for product in {p for p, _, _ in stream}:
        prices = [price for p, price, _ in stream if p == product]
        mine = [StatsRow(*(r[f] for f in FIELDS)) for r in records if r["product_id"] == product]
        assert [r["price"] for r in records if r["product_id"] == product] == prices
        assert mismatches(mine, pandas_reference(prices), prices) == []


def test_stats_function_equals_pandas_per_product(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    stream = list(tickers(1, {"BTC-USD": 40_000.0, "ETH-USD": 2_000.0, "SKL-BTC": 0.00001305}, 900))
    ctx, function = stats_context(fake_context), TickerStatsFunction()
    for _, _, data in stream:
        ctx.run(function, data, next(message_ids))
    records = outputs(ctx)
    assert len(records) == len(stream) == len(ctx.acked)
    assert_equals_pandas(records, stream)
    first = records[0]
    assert first["ewma_std"] is None and first["rolling_mean"] is None and first["count"] == 1
    assert {"product_id", "price", "event_ms", "received_ms", "sequence", "count", "source", "state", *FIELDS} == set(
        first) - {"trade_id"}
    assert ctx.published[0].conf["partition_key"] == first["product_id"]


@pytest.mark.parametrize(("cut", "lost"), [(1, 0), (7, 0), (250, 0), (600, 0), (250, 3), (600, 5)])
def test_restart_resumes_from_the_output_topic_and_skips_redelivered_inputs(fake_context, message_id_class, cut,
                                                                            lost) -> None:  # type: ignore[no-untyped-def]
    """Instance 1 processes `cut` messages; the acks of its last 5 never reached the broker and its last `lost`
    outputs were never stored. Instance 2 starts from what the output topic holds and gets every unacknowledged
    input again, as Pulsar redelivers them: the output has no duplicate and equals pandas over the whole stream."""
    stream = list(tickers(2, {"A-USD": 10.0, "B-USD": 0.5, "C-USD": 3000.0}, 800))
    ids = [message_id_class(5, i + 1) for i in range(len(stream))]
    broker: dict[str, list[bytes]] = {}
    ctx1, first = stats_context(fake_context, broker), TickerStatsFunction()
    for (_, _, data), mid in zip(stream[:cut], ids[:cut]):
        ctx1.run(first, data, mid)
    acked = set(ctx1.acked[: max(0, cut - max(5, lost))])
    del broker[OUT][len(broker[OUT]) - lost:]

    ctx2, second = stats_context(fake_context, broker), TickerStatsFunction()
    for (_, _, data), mid in zip(stream, ids):
        if mid not in acked:
            ctx2.run(second, data, mid)
    records = [orjson.loads(data) for data in broker[OUT]]
    assert len(records) == len(stream)
    assert_equals_pandas(records, stream)
    assert len(acked) + len(ctx2.acked) == len(stream)
    assert any("resumed" in line for line in ctx2.logger.lines)


def test_stats_dead_letters_unusable_records(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    ctx, function = stats_context(fake_context), TickerStatsFunction()
    for bad in (b"{", b"[]", orjson.dumps({"product_id": "A"}), orjson.dumps({"product_id": "A", "price": "x"}),
                orjson.dumps({"product_id": "", "price": 1.0}), b'{"product_id":"A","price":1e999}'):
        ctx.run(function, bad, next(message_ids))
    assert [p.topic for p in ctx.published] == [TOPICS["dead_letter"]] * 6
    assert len(ctx.acked) == 6
    assert all(orjson.loads(p.data)["reason"] == "invalid_field" for p in ctx.published)


def test_stats_dead_letters_records_outside_the_contract_and_the_product_goes_on(fake_context, message_ids
                                                                                 ) -> None:  # type: ignore[no-untyped-def]
    """A record published straight to the ticker topic (no router) must not spoil its product's statistics."""
    ctx, function = stats_context(fake_context), TickerStatsFunction()
    now = time.time_ns() // 1_000_000
    good = {"type": "ticker", "product_id": "A", "event_ms": now, "received_ms": now}
    bad = [{"price": 1e200}, {"price": -5.0}, {"price": 0}, {"price": "  1_0 "}, {"price": True},
           {"price": 1.0, "event_ms": "not-a-time"}, {"price": 1.0, "event_ms": -5000},
           {"price": 1.0, "event_ms": now + 10 * 365 * 86_400_000, "received_ms": None},
           # copied into the record's LONG columns: Pinot fails on them (they were published as they came)
           {"price": 1.0, "received_ms": "soon"}, {"price": 1.0, "received_ms": -1},
           {"price": 1.0, "sequence": 2**64 - 1}, {"price": 1.0, "trade_id": {"x": 1}}]
    for fields in bad:
        ctx.run(function, orjson.dumps({**good, **fields}), next(message_ids))
    for price in (100.0, 101.0):
        ctx.run(function, orjson.dumps({**good, "price": price}), next(message_ids))
    letters = [orjson.loads(p.data) for p in ctx.published if p.topic == TOPICS["dead_letter"]]
    assert len(letters) == len(bad) and len(ctx.acked) == len(bad) + 2
    assert all(letter["product_id"] == "A" for letter in letters)
    records = outputs(ctx)
    assert [r["price"] for r in records] == [100.0, 101.0] and records[-1]["ewma_var"] == pytest.approx(0.5)


def test_identity_and_raw_serde_pass_bytes_through() -> None:
    serde = RawSerDe()
    assert serde.deserialize(b"123") == b"123" and serde.serialize("x") == b"x"
    assert Identity().process(b"\xff", None) == b"\xff"


def test_publishing_identity_publishes_its_input_unchanged_then_acks(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    ctx, function = fake_context({}, output_topic=OUT), PublishingIdentity()
    payloads = [b"\xff", b'{"a":1}', b""]
    ids = [next(message_ids) for _ in payloads]
    for payload, mid in zip(payloads, ids):
        ctx.run(function, payload, mid)
    assert [(p.topic, p.data) for p in ctx.published] == [(OUT, p) for p in payloads]
    assert ctx.acked == ids


def test_a_start_that_fails_is_retried_not_handed_back(fake_context, message_ids, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Restoring state reads the output topic; when that read fails (a broker restarting), raising would hand the
    input back to the runtime as failed: it would come again after later inputs, and be skipped as done (lost)."""
    stream = list(tickers(3, {"A-USD": 10.0}, 3))
    ctx, function = stats_context(fake_context), TickerStatsFunction()
    failures = iter([TimeoutError("reader timed out")])
    real_restore = TickerStatsFunction.restore

    def flaky_restore(self, context):  # type: ignore[no-untyped-def]
        failure = next(failures, None)
        if failure is not None:
            raise failure
        real_restore(self, context)

    monkeypatch.setattr(TickerStatsFunction, "restore", flaky_restore)
    for _, _, data in stream:
        ctx.run(function, data, next(message_ids))  # the first waits for the retried start: nothing raises
    assert [r["price"] for r in outputs(ctx)] == [price for _, price, _ in stream] and len(ctx.acked) == 3
    assert any("start failed (TimeoutError: reader timed out)" in line for line in ctx.logger.lines)

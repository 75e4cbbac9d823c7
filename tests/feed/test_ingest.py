"""Ingest into in-memory sinks: the raw record contract, malformed frames, gap and health records, finite runs."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from rtca.feed.capture import Capture
from rtca.feed.connection import Backoff, FeedConnection, Frame
from rtca.feed.ingest import CUT_BYTES, PROPERTY_CHARS, IngestReport, ingest, raw_record
from rtca.feed.protocol import MalformedFrame, parse_frame, subscribe_frame
from rtca.feed.replay import replay_server
from rtca.feed.server import Faults, ServerStats
from rtca.feed.simulator import simulator_server
from rtca.feed.sinks import MemorySink
from test_replay import close_code

Run = Callable[..., Any]


async def replay_into_memory(
    capture: Capture,
    faults: Faults | None = None,
    *,
    speed: str | float = "max",
    silence_timeout: float = 10.0,
    raw: MemorySink | None = None,
    **options: Any,
) -> tuple[IngestReport, MemorySink, list[dict[str, Any]], ServerStats]:
    """(report, raw sink, health records, server stats) of a replay ingested into memory."""
    raw, health = raw or MemorySink(), MemorySink()
    async with replay_server(capture, speed=speed, faults=faults) as server:
        connection = FeedConnection(server.url, subscribe_frame(capture.products, capture.channels),
                                    silence_timeout=silence_timeout, backoff=Backoff(initial=0.05, maximum=0.2))
        report = await ingest(connection, raw, health, source="replay", **options)
    return report, raw, [orjson.loads(r.value) for r in health.records], server.stats


def test_every_frame_lands_on_the_raw_sink_as_received(run: Run, shipped: Capture) -> None:
    report, raw, health, _ = run(replay_into_memory(shipped))
    print(report)
    keys = Counter(record.key for record in raw.records)
    assert keys == {"l2update": 9719, "ticker": 107, "match": 97, "last_match": 10, "snapshot": 10,
                    "subscriptions": 1}
    recorded = Counter(f.text.encode() for f in shipped.frames if b'"subscriptions"' not in f.text.encode())
    assert Counter(r.value for r in raw.records if r.key != "subscriptions") == recorded
    assert report.received == report.acked == len(raw.records) == 9944 and report.ok
    assert report.ended == "end_of_stream"
    assert health[-1]["kind"] == "tick" and health[-1]["messages"] == 9944 and health[-1]["acked"] == 9944


def test_raw_record_key_properties_and_event_time(shipped: Capture) -> None:
    for text in (f.text for f in shipped.frames[:300]):
        record, message = raw_record(Frame(text.encode(), 1700000000.5, 1))
        assert not isinstance(message, Exception)
        assert record.key == message.type and record.value == text.encode()
        assert record.properties["received_ms"] == "1700000000500"
        if message.product is not None:
            assert record.properties["product"] == message.product
        if message.seq is not None:
            assert record.properties["sequence"] == str(message.seq)
        expected_ms = message.event_ms if message.event_ms is not None else 1700000000500
        assert record.event_ms == expected_ms


@pytest.mark.parametrize("time", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_times_out_of_range_never_stop_ingest(time: str) -> None:
    unknown = f'{{"type":"foo","time":"{time}"}}'.encode()
    record, message = raw_record(Frame(unknown, 1700000000.5, 1))
    assert record.key == "unknown" and record.event_ms == 1700000000500 and record.value == unknown
    ticker = f'{{"type":"ticker","product_id":"X-USD","sequence":1,"price":"1","time":"{time}"}}'.encode()
    record, problem = raw_record(Frame(ticker, 1700000000.5, 2))
    assert record.key == "malformed" and isinstance(problem, MalformedFrame) and "out of range" in problem.detail


def test_a_frame_that_breaks_the_parser_unforeseen_is_published_as_malformed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: bytes | str) -> None:
        raise OverflowError("a bug")

    monkeypatch.setattr(importlib.import_module("rtca.feed.ingest"), "parse_frame", broken)
    record, problem = raw_record(Frame(b'{"type":"ticker"}', 1700000000.5, 1))
    assert (record.key, record.value, record.event_ms) == ("malformed", b'{"type":"ticker"}', 1700000000500)
    assert record.properties["error"] == "internal_error" and "OverflowError: a bug" in record.properties["detail"]


def test_oversized_frames_are_cut_with_their_size() -> None:
    big = b'{"type":"snapshot","product_id":"BTC-USD","bids":[' + b'["1.0","2.0"],' * 400_000 + b'["1","1"]]}'
    record, problem = raw_record(Frame(big, 1.0, 1))
    assert record.key == "malformed" and len(record.value) == CUT_BYTES and record.value == big[:CUT_BYTES]
    assert record.properties["error"] == "oversized" and record.properties["payload_bytes"] == str(len(big))
    assert record.properties["truncated"] == "true"
    assert getattr(problem, "code", None) == "oversized"


@pytest.mark.parametrize("kind", ["ticker", "mystery", "no_type"])
def test_a_huge_product_id_is_cut_in_the_properties(kind: str) -> None:
    """Value plus properties must stay under Pulsar's 5 MB: a 3 MB product id would double the record."""
    product = "P" * 3_000_000
    frame = {"product_id": product, "sequence": 1} | ({} if kind == "no_type" else {"type": kind})
    record, _ = raw_record(Frame(orjson.dumps(frame), 1.0, 1))
    assert record.properties["product"] == product[:PROPERTY_CHARS]
    assert sum(len(k) + len(v) for k, v in record.properties.items()) < 1000


MALFORMED = [
    "not json at all",
    "[1, 2, 3]",
    '{"product_id":"SKL-USD","no":"type"}',
    '{"type":"ticker","product_id":"SKL-USD","sequence":"abc","price":{"x":1}}',
    b"\xff\xfe binary garbage",
    "x" * 1_000_000,  # 1 MB, not JSON
    '{"type":"snapshot","product_id":"SKL-USD","bids":[' + '["1.0","2.0"],' * 400_000 + '["1","1"]],"asks":[]}',
]
UNKNOWN = ['{"type":"brand_new_type","product_id":"SKL-USD","sequence":1}', '{"type":"mega","blob":"' + "y" * 1_000_000
           + '"}']


def test_malformed_frames_never_stop_ingest_and_are_counted(run: Run, small: Capture) -> None:
    faults = Faults(inject_after={100: MALFORMED[:4], 1000: [*MALFORMED[4:], *UNKNOWN]})
    report, raw, health, stats = run(replay_into_memory(small, faults))
    print(report)
    keys = Counter(record.key for record in raw.records)
    assert keys["malformed"] == len(MALFORMED) == report.malformed
    assert keys["unknown"] == len(UNKNOWN) == report.unknown
    assert keys["l2update"] == stats.sent_by_type["l2update"] > 1400  # the rest of the stream still arrived
    errors = Counter(r.properties["error"] for r in raw.records if r.key == "malformed")
    assert errors == {"not_json": 3, "not_object": 1, "no_type": 1, "bad_fields": 1, "oversized": 1}
    kept = {r.value for r in raw.records if r.key in ("malformed", "unknown")}
    assert MALFORMED[0].encode() in kept and UNKNOWN[1].encode() in kept and MALFORMED[4] in kept
    assert health[-1]["malformed"] == len(MALFORMED) and health[-1]["unknown"] == len(UNKNOWN)
    assert report.ok


def test_skipped_trade_ids_produce_gap_records(run: Run, shipped: Capture) -> None:
    report, _, health, _ = run(replay_into_memory(shipped, Faults(skip_trade_ids=(3, 2))))
    gaps = [h for h in health if h["kind"] == "gap"]
    matches = Counter(orjson.loads(f.text).get("product_id") for f in shipped.frames if '"type":"match"' in f.text)
    expected = {product: 2 * (count // 3) for product, count in matches.items() if count >= 3}
    per_product = Counter[str]()
    for gap in gaps:
        assert gap["missed"] == 2 == gap["last_missing"] - gap["first_missing"] + 1
        assert gap["detected_by"] == "match" and gap["source"] == "replay"
        per_product[gap["product_id"]] += gap["missed"]
    print("missed per product:", dict(per_product))
    assert per_product == expected and report.missed_trades == sum(expected.values()) > 0
    assert health[-1]["missed_trades"] == report.missed_trades and report.out_of_order == 0


def test_sequence_jumps_alone_produce_no_gap(run: Run, shipped: Capture) -> None:
    report, _, health, _ = run(replay_into_memory(shipped, Faults(sequence_jump=(2, 1000))))
    print(report)
    assert [h for h in health if h["kind"] == "gap"] == []
    assert report.missed_trades == report.out_of_order == 0


def test_health_ticks_continue_while_the_feed_is_silent(run: Run, small: Capture) -> None:
    faults = Faults(silence_after=200, silence_for=3.0)
    report, _, health, _ = run(replay_into_memory(small, faults, health_interval=0.2))
    ticks = [h for h in health if h["kind"] == "tick"]
    silent = [t for t in ticks if t["msg_rate"] == 0 and t["messages"] == 1 + 200]  # the reply + 200 frames
    print(f"{len(ticks)} ticks, {len(silent)} while silent; silence_ms: {[t['silence_ms'] for t in silent]}")
    assert len(silent) >= 3  # 3 s of silence, a tick every 0.2 s (fewer on a loaded machine)
    assert [t["silence_ms"] for t in silent] == sorted(t["silence_ms"] for t in silent)
    assert silent[-1]["silence_ms"] >= 1500 and all(t["connected"] for t in silent)
    assert report.received == 1 + 1497 and report.reconnects == 0  # the reply + the frames (not the 3 recorded replies)


def test_a_reconnect_shows_in_health_and_loses_nothing(run: Run, small: Capture) -> None:
    report, raw, health, stats = run(replay_into_memory(small, Faults(drop_after=700)))
    keys = Counter(record.key for record in raw.records)
    assert keys == stats.sent_by_type and keys["subscriptions"] == 2
    assert report.reconnects == 1 and health[-1]["reconnects"] == 1 and health[-1]["connections"] == 2
    ticks = [h for h in health if h["kind"] == "tick"]  # the increments add up to the running count, once each
    assert sum(t["new_reconnects"] for t in ticks) == 1 and all(t["new_reconnects"] in (0, 1) for t in ticks)


def test_finite_runs(run: Run, small: Capture) -> None:
    report, raw, _, _ = run(replay_into_memory(small, max_messages=500))
    assert (report.ended, report.received, len(raw.records)) == ("max_messages", 500, 500)
    report, raw, _, _ = run(replay_into_memory(small, speed=1, duration=0.7))
    assert report.ended == "duration" and 0 < report.received == len(raw.records) < 1501

    async def stopped() -> IngestReport:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        return (await replay_into_memory(small, speed=1, stop=stop))[0]

    report = run(stopped())
    assert report.ended == "stopped" and report.ok


def test_failed_sends_are_retried_until_stored(run: Run, small: Capture) -> None:
    raw = MemorySink(fail_first=25)
    report, raw, _, _ = run(replay_into_memory(small, raw=raw, max_messages=1000))
    assert len(raw.records) == report.acked == 1000 and report.failed == 0 and report.ok
    assert {parse_frame(r.value).type for r in raw.records} >= {"snapshot", "l2update"}


def test_simulator_frames_ingest_cleanly(run: Run) -> None:
    async def session() -> tuple[IngestReport, MemorySink]:
        raw, health = MemorySink(), MemorySink()
        products = ["AAA-USD", "BBB-USD", "CCC-EUR"]
        async with simulator_server(products, rate=None, seed=11) as server:
            connection = FeedConnection(server.url, subscribe_frame(products, ["level2_batch", "matches", "ticker",
                                                                               "heartbeat", "status"]))
            return await ingest(connection, raw, health, source="simulator", max_messages=3000), raw

    report, raw = run(session())
    print(report)
    keys = Counter(record.key for record in raw.records)
    assert report.malformed == report.unknown == report.missed_trades == report.out_of_order == 0
    assert {"subscriptions", "snapshot", "status", "l2update", "match", "last_match", "ticker"} <= set(keys)
    assert all(r.properties.get("product") in {"AAA-USD", "BBB-USD", "CCC-EUR"} for r in raw.records
               if r.key not in ("subscriptions", "status"))


def test_an_in_process_source_that_fails_stops_the_ingest_instead_of_looking_like_the_end(run: Run) -> None:
    """A reconnecting client of a failed server was told the stream had ended (4000): ingest stopped as if the
    source were done. It is told 1011, and ingest stops on the server's `failed` event."""
    from rtca.feed.server import FeedServer, Outgoing

    class FailsAfterThree:
        products = frozenset({"X-USD"})

        def __init__(self) -> None:
            self.sent = 0

        async def next(self) -> Outgoing | None:
            self.sent += 1
            if self.sent > 3:
                raise ValueError("a frame this source cannot make")
            text = orjson.dumps({"type": "ticker", "product_id": "X-USD", "price": "1", "sequence": self.sent})
            return Outgoing(text.decode(), "ticker", "ticker", "X-USD")

        def state(self, channel: str, product: str | None) -> list[Outgoing]:
            return []

        def resume(self) -> None:
            pass

    async def session() -> tuple[IngestReport, FeedServer, list[int | None]]:
        raw, health = MemorySink(), MemorySink()
        async with FeedServer(FailsAfterThree()) as server:
            connection = FeedConnection(server.url, subscribe_frame(["X-USD"], ["ticker"]),
                                        backoff=Backoff(initial=0.05, maximum=0.1))
            report = await ingest(connection, raw, health, source="simulator", stop=[server.failed], duration=20)
            codes = [await close_code(server.url, ["X-USD"], ["ticker"])]  # a client that comes after the failure
        return report, server, codes

    report, server, codes = run(session())
    print(report)
    assert report.ended == "stopped" and report.received == 1 + 3  # the subscriptions answer and three tickers
    assert isinstance(server.failure, ValueError) and codes == [1011]


def health_against(server: Any, seconds: float, products: list[str]) -> list[dict[str, Any]]:
    """The health records of an ingest of `seconds` from a websocket server running the handler `server`."""
    from websockets.asyncio.server import serve

    async def session() -> list[dict[str, Any]]:
        async with serve(server, "127.0.0.1", 0) as running:
            port = running.sockets[0].getsockname()[1]
            connection = FeedConnection(f"ws://127.0.0.1:{port}", subscribe_frame(products, ["ticker"]),
                                        backoff=Backoff(initial=0.05, maximum=0.2))
            health = MemorySink()
            await ingest(connection, MemorySink(), health, source="coinbase", duration=seconds)
        return [orjson.loads(r.value) for r in health.records]

    return asyncio.run(asyncio.wait_for(session(), 60))


def test_an_error_frame_from_the_server_is_said_in_the_log_and_in_health(caplog: pytest.LogCaptureFixture) -> None:
    """An `error` frame must reach the user: before, the log only said "connection closed: received 1000 (OK)" and
    health had no trace of the reason."""

    async def answer_with_an_error(ws: Any) -> None:
        await ws.recv()
        await ws.send('{"type":"error","message":"Slow down","reason":"too many requests"}')
        await ws.close()

    health = health_against(answer_with_an_error, 0.5, ["FOO-BAR"])
    assert "the server answered with an error: Slow down: too many requests" in caplog.text
    assert health[-1]["server_errors"] >= 1
    assert health[-1]["last_server_error"] == "Slow down: too many requests"


def test_a_refused_subscription_ends_the_ingest_with_the_servers_reason() -> None:
    """"Failed to subscribe" (an unknown product, a channel that needs authentication): the server sends nothing
    more; the ingest said so in its log only and went on, healthy, delivering nothing, resubscribing for ever."""
    from websockets.asyncio.server import serve

    from rtca.feed.ingest import SubscriptionRefused

    async def refuse(ws: Any) -> None:
        await ws.recv()
        await ws.send('{"type":"error","message":"Failed to subscribe","reason":"FOO-BAR is not a valid product"}')
        await ws.wait_closed()  # the connection stays open, silent, until the ingest closes it

    raw, health = MemorySink(), MemorySink()

    async def session() -> None:
        async with serve(refuse, "127.0.0.1", 0) as running:
            port = running.sockets[0].getsockname()[1]
            connection = FeedConnection(f"ws://127.0.0.1:{port}", subscribe_frame(["FOO-BAR"], ["ticker"]))
            await ingest(connection, raw, health, source="coinbase")  # no end of its own: until the refusal

    with pytest.raises(SubscriptionRefused, match="refused the subscription: Failed to subscribe: FOO-BAR is not"):
        asyncio.run(asyncio.wait_for(session(), 60))
    assert [r.key for r in raw.records] == ["error"]  # the frame itself is on the raw topic, as every frame
    last = orjson.loads(health.records[-1].value)
    assert last["last_server_error"] == "Failed to subscribe: FOO-BAR is not a valid product"


def test_a_refusal_on_a_connection_that_delivers_data_does_not_end_the_ingest(caplog: pytest.LogCaptureFixture
                                                                              ) -> None:  # fmt: skip
    """One hostile frame must not end the ingest: only a refusal before any data is a refused subscription."""
    ticker = '{"type":"ticker","product_id":"A-USD","sequence":1,"price":"1.5","time":"2024-01-01T00:00:00Z"}'

    async def data_then_refusal(ws: Any) -> None:
        await ws.recv()
        await ws.send('{"type":"subscriptions","channels":[]}')
        await ws.send(ticker)
        await ws.send('{"type":"error","message":"Failed to subscribe","reason":"mid-stream"}')
        await ws.send(ticker.replace('"sequence":1', '"sequence":2'))
        await ws.wait_closed()

    health = health_against(data_then_refusal, 1.0, ["A-USD"])
    assert health[-1]["messages"] == 4 and health[-1]["server_errors"] == 1
    assert "Failed to subscribe: mid-stream" in caplog.text


def test_failed_connection_attempts_show_in_health() -> None:
    """A server that accepts TCP and closes at once (or never finishes the handshake): health must not say
    `connections 0, reconnects 0` as if nothing were tried."""

    async def close_at_once(ws: Any) -> None:
        await ws.close(1008, "policy")

    last = health_against(close_at_once, 0.6, ["A-B"])[-1]
    print({key: last[key] for key in ("connections", "reconnects", "failures", "last_error")})
    assert last["failures"] >= 2 and "1008" in last["last_error"]


def test_every_field_of_a_health_tick_has_a_pinot_column(run: Run) -> None:
    """A field the feed_health schema lacks is dropped by Pinot: on the topic, never on the dashboard."""
    import json
    import re
    from pathlib import Path

    from rtca.feed.connection import ConnectionState
    from rtca.feed.ingest import Ingest
    from rtca.feed.sinks import Publisher

    folder = Path(__file__).resolve().parents[2] / "infra" / "pinot" / "feed_health"
    schema = json.loads((folder / "schema.json").read_text())
    columns = {spec["name"] for key, specs in schema.items() if key.endswith("FieldSpecs") for spec in specs}
    transforms = json.loads((folder / "table.json").read_text())["ingestionConfig"]["transformConfigs"]
    read_by_transforms = " ".join(transform["transformFunction"] for transform in transforms)

    async def tick() -> dict[str, Any]:
        health = MemorySink()
        Ingest(Publisher(MemorySink()), Publisher(health), source="coinbase",
               connection=ConnectionState("ws://127.0.0.1:1")).tick()
        await asyncio.sleep(0)
        return orjson.loads(health.records[-1].value)

    fields = run(tick())
    missing = [name for name in fields if name not in columns and not re.search(rf"\b{name}\b", read_by_transforms)]
    assert not missing, f"feed health fields without a Pinot column: {missing}"


def test_gaps_are_logged_at_most_every_few_seconds_per_product_but_each_is_a_health_record(
        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """A feed skipping every other trade id wrote one warning per gap: thousands of lines a second."""
    import logging

    from rtca.feed.connection import ConnectionState, Frame
    from rtca.feed.ingest import Ingest
    from rtca.feed.sinks import Publisher

    async def feed() -> int:
        health = MemorySink()
        work = Ingest(Publisher(MemorySink()), Publisher(health), source="coinbase",
                      connection=ConnectionState("ws://127.0.0.1:1"))
        for product in ("A-USD", "B-USD"):
            for trade_id in range(1, 400, 2):  # every other id: 199 gaps of one trade
                frame = {"type": "match", "product_id": product, "trade_id": trade_id, "sequence": trade_id,
                         "price": "1", "size": "1", "side": "buy", "time": "2024-01-01T00:00:00Z"}
                work.handle(Frame(orjson.dumps(frame), 1_704_067_200.0, 1))
        await asyncio.sleep(0)
        return sum(1 for record in health.records if record.key == "gap")

    with caplog.at_level(logging.WARNING, logger="rtca.feed.ingest"):
        gap_records = asyncio.run(feed())
    warnings = [r.getMessage() for r in caplog.records if "missed trades" in r.getMessage()]
    assert gap_records == 2 * 199
    assert len(warnings) == 2 and all(w.endswith("(1)") for w in warnings)  # the first of each product, at once


def test_the_next_gap_warning_of_a_product_sums_up_the_gaps_passed_over_since(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Once the quiet period is over, the warning says how many gaps and trades went unlogged in between."""
    import logging
    import time
    import types

    from rtca.feed.connection import ConnectionState
    from rtca.feed.ingest import GAP_LOG_EVERY_S, Ingest
    from rtca.feed.sinks import Publisher

    clock = [1_000.0]
    module = importlib.import_module("rtca.feed.ingest")  # `rtca.feed.ingest` the attribute is the function
    monkeypatch.setattr(module, "time", types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time))

    def match(trade_id: int) -> Frame:
        frame = {"type": "match", "product_id": "A-USD", "trade_id": trade_id, "sequence": trade_id, "price": "1",
                 "size": "1", "side": "buy", "time": "2024-01-01T00:00:00Z"}
        return Frame(orjson.dumps(frame), 1_704_067_200.0, 1)

    async def feed() -> None:
        work = Ingest(Publisher(MemorySink()), Publisher(MemorySink()), source="coinbase",
                      connection=ConnectionState("ws://127.0.0.1:1"))
        work.handle(match(1))
        work.handle(match(3))  # gap 2..2: logged at once
        work.handle(match(6))  # gap 4..5: passed over
        work.handle(match(10))  # gap 7..9: passed over
        clock[0] += GAP_LOG_EVERY_S - 0.001
        work.handle(match(12))  # gap 11..11: still within the quiet period
        clock[0] += 0.002
        work.handle(match(14))  # gap 13..13: logged, with the three passed over
        await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="rtca.feed.ingest"):
        asyncio.run(feed())
    warnings = [r.getMessage() for r in caplog.records if "missed trades" in r.getMessage()]
    summed = f"(and 3 more gaps, 6 trades, in the last {GAP_LOG_EVERY_S:g} s)"
    assert warnings == ["A-USD: missed trades 2..2 (1)", f"A-USD: missed trades 13..13 (1) {summed}"]


def test_a_refusal_on_a_reconnect_does_not_end_an_ingest_that_had_data() -> None:
    """The subscription was served once: a refusal after a reconnect (a server's hiccup, or a hostile server's
    word) is logged and counted, the ingest goes on."""
    from websockets.asyncio.server import serve

    ticker = '{"type":"ticker","product_id":"A-USD","sequence":%d,"price":"1.5","time":"2024-01-01T00:00:00Z"}'
    connections = [0]

    async def data_then_a_refusal_on_the_next_connection(ws: Any) -> None:
        connections[0] += 1
        await ws.recv()
        if connections[0] == 1:
            await ws.send('{"type":"subscriptions","channels":[]}')
            await ws.send(ticker % 1)
            await ws.close()  # dropped: the ingest reconnects
        else:
            await ws.send('{"type":"error","message":"Failed to subscribe","reason":"on a reconnect"}')
            await ws.wait_closed()

    raw, health = MemorySink(), MemorySink()

    async def session() -> str:
        refused = asyncio.Event()

        async def stop_once_refused() -> None:  # the ingest must not have ended by itself by then
            while not any(r.key == "error" for r in raw.records):
                await asyncio.sleep(0.05)
            refused.set()

        async with serve(data_then_a_refusal_on_the_next_connection, "127.0.0.1", 0) as running:
            port = running.sockets[0].getsockname()[1]
            connection = FeedConnection(f"ws://127.0.0.1:{port}", subscribe_frame(["A-USD"], ["ticker"]))
            stopper = asyncio.ensure_future(stop_once_refused())
            report = await ingest(connection, raw, health, source="coinbase", stop=refused)
            stopper.cancel()
            return report.ended

    assert asyncio.run(asyncio.wait_for(session(), 60)) == "stopped"
    assert connections[0] >= 2


def test_lag_leaves_out_the_state_a_subscription_starts_with(run: Run) -> None:
    """`last_match` and each product's first ticker on a connection repeat old events: their age made `lag_ms_max`
    spike to minutes at every reconnect and every loop of a replay, and flattened the p50 line."""
    from rtca.feed.connection import ConnectionState
    from rtca.feed.ingest import Ingest
    from rtca.feed.sinks import Publisher

    now_ms = 1_700_000_000_000

    def frame(kind: str, product: str, age_ms: int, connection: int, **fields: Any) -> Frame:
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((now_ms - age_ms) // 1000))
        body = {"type": kind, "product_id": product, "sequence": 1, "price": "1.5",
                "time": f"{iso}.{(now_ms - age_ms) % 1000:03d}Z", **fields}
        return Frame(orjson.dumps(body), now_ms / 1000, connection)

    async def lags() -> list[dict[str, Any]]:
        health = MemorySink()
        feed = Ingest(Publisher(MemorySink()), Publisher(health), source="coinbase",
                      connection=ConnectionState("ws://127.0.0.1:1"))
        match = {"trade_id": 7, "size": "1", "side": "buy"}
        for connection in (1, 2):  # the state a (re)subscription starts with, then live events
            feed.handle(frame("last_match", "A-USD", 300_000, connection, **match))
            feed.handle(frame("ticker", "A-USD", 200_000, connection))
            feed.handle(frame("ticker", "A-USD", 40, connection))
            feed.handle(frame("match", "A-USD", 60, connection, **{**match, "trade_id": 8 + connection}))
            feed.handle(frame("ticker", "A-USD", 200_000, connection))  # a replay's loop: the first one again
            feed.tick()
        await asyncio.sleep(0)
        return [orjson.loads(record.value) for record in health.records]

    ticks = run(lags())
    assert [(t["lag_ms_p50"], t["lag_ms_max"]) for t in ticks if "lag_ms_p50" in t] == [(40, 60), (40, 60)]

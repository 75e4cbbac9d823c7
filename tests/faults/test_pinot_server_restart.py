"""The Pinot server restarted while it consumes the real `coinbase_ticker` and `coinbase_matches` tables: it resumes
each partition from the offset its last committed segment ended at (a consuming segment's rows are rebuilt from the
stream, never kept), so after recovery every record is there exactly once.

Records are the router's own typed records (`routing.route` of simulated frames) of products of the test's own,
produced straight into the real typed topics at a steady pace; a forced commit before the restart makes the
committed offset a real one, not the start of the topic.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pulsar
import pytest
from faults_support import exactly_once, pinot_keys, restart_pinot_server, wait_for, wait_for_keys

from rtca.functions import routing
from rtca.functions.samples import sample
from rtca.pinot.client import PinotClient
from rtca.pinot.tables import apply_tables
from rtca.settings import Settings
from rtca.stack.remote import http_options

pytestmark = [pytest.mark.stack, pytest.mark.slow]

PER_TABLE = 8000
RATE = 200.0  # records per second and table: 40 s of stream, the restart in the middle


def typed_records(products: list[str], n: int) -> dict[str, list[tuple[bytes, str, int, tuple[str, int]]]]:
    """`n` tickers and `n` matches as the router publishes them: (JSON, key, event ms, (product, id))."""
    out: dict[str, list[tuple[bytes, str, int, tuple[str, int]]]] = {"ticker": [], "match": []}
    now_ms = int(time.time() * 1000)
    for i in range(1, n + 1):
        product = products[i % len(products)]
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_ms / 1000 + i / 1000)) + ".000000Z"
        frames = {"ticker": sample("ticker", product_id=product, sequence=1000 + i, trade_id=5000 + i, time=when),
                  "match": sample("match", product_id=product, sequence=1000 + i, trade_id=5000 + i, time=when)}
        for kind, frame in frames.items():
            routed = routing.route(orjson.dumps(frame), received_ms=now_ms + i)
            assert routed.channel in ("ticker", "matches"), routed.record
            key = frame["sequence"] if kind == "ticker" else frame["trade_id"]
            out[kind].append((routed.data, product, int(routed.event_ms or now_ms), (product, key)))
    return out


def produce_paced(client: pulsar.Client, topics: dict[str, str], records: dict[str, list[Any]],
                  per_second: float) -> None:  # fmt: skip
    producers = {kind: client.create_producer(topics[kind], batching_enabled=True, batching_max_publish_delay_ms=5,
                                              block_if_queue_full=True, send_timeout_millis=0)
                 for kind in records}  # fmt: skip
    started = time.monotonic()
    for i in range(len(records["ticker"])):
        delay = started + i / per_second - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for kind, producer in producers.items():
            data, key, event_ms, _ = records[kind][i]
            producer.send_async(data, None, partition_key=key, event_timestamp=event_ms)
    for producer in producers.values():
        producer.flush()
        producer.close()


def segment_offsets(settings: Settings, table: str) -> dict[str, tuple[str, str | None, str | None]]:
    """Segment -> (status, start offset, end offset) from the controller's segment metadata."""
    import httpx

    out = {}
    with httpx.Client(base_url=settings.pinot.controller_url, timeout=30, **http_options(settings, "pinot")) as api:
        names = api.get(f"/segments/{table}", params={"type": "REALTIME"}).raise_for_status().json()
        for name in (names[0].get("REALTIME", []) if names else []):
            meta = api.get(f"/segments/{table}/{name}/metadata").raise_for_status().json()
            out[name] = (meta.get("segment.realtime.status"), meta.get("segment.realtime.startOffset"),
                         meta.get("segment.realtime.endOffset"))
    return out


def force_commit(settings: Settings, table: str) -> None:
    import httpx

    httpx.post(f"{settings.pinot.controller_url}/tables/{table}/forceCommit", timeout=60,
               **http_options(settings, "pinot")).raise_for_status()


def test_pinot_server_restart_mid_consumption_resumes_from_the_committed_offset(stack: Settings, unique: str
                                                                                ) -> None:  # fmt: skip
    settings = stack
    apply_tables(settings, ["ticker", "matches"])
    tag = unique[:6].upper()
    products = [f"PSR{tag}-USD", f"PSR{tag}-EUR"]
    records = typed_records(products, PER_TABLE)
    tables = {"ticker": (settings.tables.ticker, "sequence"), "match": (settings.tables.matches, "trade_id")}
    topics = {"ticker": settings.topic(settings.topics.ticker), "match": settings.topic(settings.topics.matches)}
    client = pulsar.Client(settings.pulsar.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    with PinotClient(settings) as pinot:
        try:
            producing = threading.Thread(target=produce_paced, args=(client, topics, records, RATE))
            producing.start()
            wait_for(lambda: all(len(pinot_keys(pinot, t, k, products)) >= PER_TABLE // 5 for t, k in tables.values()),
                     timeout=120, what="a fifth of the records in Pinot")  # fmt: skip
            committed = {t: sum(s == "DONE" for s, *_ in segment_offsets(settings, t).values()) for t, _ in
                         tables.values()}  # fmt: skip
            for table, _ in tables.values():
                force_commit(settings, table)
            wait_for(lambda: all(sum(s == "DONE" for s, *_ in segment_offsets(settings, t).values()) > committed[t]
                                 for t in committed), timeout=120, what="the forced commits")  # fmt: skip
            at_restart = {t: len(pinot_keys(pinot, t, k, products)) for t, k in tables.values()}
            mid_stream = producing.is_alive()
            outage, killed = restart_pinot_server(settings)
            producing.join()
            found = {kind: wait_for_keys(pinot, table, key, [r[3] for r in records[kind]], timeout=180)
                     for kind, (table, key) in tables.items()}  # fmt: skip
            segments = {t: segment_offsets(settings, t) for t, _ in tables.values()}
        finally:
            client.close()
    print(f"\nPinot server restarted in {outage:.0f} s; rows of the test at the restart: {at_restart}")
    for kind, (table, _) in tables.items():
        print(exactly_once(table, [r[3] for r in records[kind]], found[kind]))
        by_number = sorted(segments[table].items(), key=lambda item: int(item[0].split("__")[2]))  # partition 0
        done = [s for _, s in by_number if s[0] == "DONE"]
        consuming = [s for _, s in by_number if s[0] == "IN_PROGRESS"]
        print(f"  {table}: {len(done)} committed segments, the last ends at offset {done[-1][2]}; the consuming "
              f"segment starts at {consuming[-1][1] if consuming else None}")
        assert consuming and consuming[-1][1] == done[-1][2], "the consuming segment does not start at the commit"
    assert mid_stream, "the stream had ended before the restart"
    assert not killed, f"the Pinot server did not exit on SIGTERM: {killed}"  # segments closed, not cut off
    for kind, (table, _) in tables.items():
        sent = [r[3] for r in records[kind]]
        assert sorted(found[kind]) == sorted(sent), exactly_once(table, sent, found[kind])

"""Pulsar (broker, bookie and functions worker) restarted while the simulator streams through the supervised ingest
and the deployed router: every ticker and match the source sent reaches the real `coinbase_ticker` and
`coinbase_matches` tables exactly once, the typed ticker topic holds them in the source's order, and the deployed
ticker statistics equal pandas over the whole stream (the functions worker restarts with the broker).

Exactly once rests on Pulsar's producer deduplication (enabled on the namespace) at both hops: the ingest's producer
resends what the broker had not confirmed with the same sequence ids (it never times a send out), and the router
publishes each record with a sequence id derived from its input's position under a producer name of its own, so
what it re-publishes for inputs redelivered after the restart is dropped by the broker (`rtca.functions.runtime`).
"""

from __future__ import annotations

import orjson
import pulsar
import pytest
from faults_support import (
    RecordingSimulator,
    ServerThread,
    eventually,
    exactly_once,
    in_order,
    ingest_exit,
    ingest_report,
    pinot_keys,
    read_all,
    restart_pulsar,
    stats_mismatches,
    supervised_ingest,
    wait_for,
    wait_for_keys,
)

from rtca.functions.deploy import ROUTER, TICKER_STATS, deploy_functions
from rtca.pinot.client import PinotClient
from rtca.pinot.tables import apply_tables
from rtca.settings import Settings

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def pipeline(stack: Settings) -> Settings:
    """The real tables, router and statistics function (idempotent: unchanged ones are left alone)."""
    apply_tables(stack, ["ticker", "matches"])
    deploy_functions(stack, [ROUTER, TICKER_STATS], say=lambda _: None)
    return stack


def test_broker_restart_during_ingest_loses_and_duplicates_nothing(pipeline: Settings, unique: str) -> None:
    settings = pipeline
    tag = unique[:6].upper()
    products = [f"BRK{tag}-USD", f"BRK{tag}-EUR"]
    # 60 frames/s: the ingest holds 10,000 records in flight while the broker is away, over 2 minutes of this
    source = RecordingSimulator(products, rate=60, seed=3)
    name = f"faults-ingest-{unique}"
    tables = settings.tables
    with PinotClient(settings) as pinot:
        with ServerThread(source) as server, supervised_ingest(settings, name, server.url, products) as supervisor:
            wait_for(lambda: len(pinot_keys(pinot, tables.ticker, "sequence", products)) >= 20, timeout=120,
                     what="the first tickers of the test in Pinot")
            before = len(source.sent.tickers), len(source.sent.matches)
            outage = restart_pulsar(settings)
            wait_for(lambda: len(source.sent.tickers) >= before[0] + 60, timeout=120,
                     what="60 more tickers after the restart")
            source.stop()
            ingest_exit(supervisor, name, timeout=240)
        report = ingest_report(settings, name)
        sent = source.sent
        tickers = wait_for_keys(pinot, tables.ticker, "sequence", sent.tickers, timeout=240)
        matches = wait_for_keys(pinot, tables.matches, "trade_id", sent.matches, timeout=120)
    client = pulsar.Client(settings.pulsar.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    try:  # the statistics function's input: its order is the order the statistics are computed in
        typed = [orjson.loads(m.data()) for m in read_all(client, settings.topic(settings.topics.ticker))]
        topic_tickers = [(t["product_id"], t["sequence"]) for t in typed if t.get("product_id") in products]

        def statistics() -> list[dict[str, object]]:
            records = (orjson.loads(m.data()) for m in read_all(client, settings.topic(settings.topics.ticker_stats),
                                                                idle=1.0))  # fmt: skip
            return [r for r in records if r.get("product_id") in products]

        eventually(lambda: len(statistics()) >= len(sent.tickers), timeout=300, interval=3.0)
        stats = statistics()
    finally:
        client.close()
    print(f"\nPulsar restarted in {outage:.0f} s after {before[0]} tickers and {before[1]} matches had been sent")
    print(f"source sent {sum(sent.by_type.values())} frames: {dict(sent.by_type)}")
    print(f"ingest: received {report['received']}, acked {report['acked']}, failed {report['failed']}, "
          f"pending {report['pending']}, malformed {report['malformed']}, reconnects {report['reconnects']}")
    print(exactly_once(tables.ticker, sent.tickers, tickers))
    print(exactly_once(tables.matches, sent.matches, matches))
    print(f"{settings.topics.ticker} topic: {len(topic_tickers)} tickers of the test, "
          f"{len(topic_tickers) - in_order(topic_tickers, sent.tickers)} out of the source's order")
    print(f"{settings.topics.ticker_stats} topic: {len(stats)} records of the test, "
          f"{len({(r['product_id'], r['sequence']) for r in stats})} distinct")
    assert report["failed"] == report["pending"] == 0 and report["acked"] == report["received"]
    assert report["reconnects"] == 0, "the websocket dropped: the ingest stalled reading for too long (see its log)"
    assert len(set(sent.tickers)) == len(sent.tickers) > 60 and len(set(sent.matches)) == len(sent.matches) > 60
    assert sorted(tickers) == sorted(sent.tickers), exactly_once(tables.ticker, sent.tickers, tickers)
    assert sorted(matches) == sorted(sent.matches), exactly_once(tables.matches, sent.matches, matches)
    assert topic_tickers == sent.tickers, "the typed ticker topic does not hold the tickers in the source's order"
    problems = stats_mismatches(stats, sent.ticker_stream)
    assert problems == [], problems[:5]

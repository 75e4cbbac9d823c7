"""Live data for the dashboard acceptance tests: the real pipeline fed with the shipped capture and the simulator.

`seed_live_data(settings)` (once per test session) applies the Pinot tables, deploys the workbench's functions and
imports the Superset bundle (what `rtca deploy` does), then ingests through the real path (websocket -> ingest ->
raw topic -> router -> typed topics -> ticker stats):

1. the shipped capture, replayed as fast as ingest reads with its times shifted to now, with hostile frames injected
   (-> dead letters), one dropped connection (-> a reconnect) and skipped trade ids (-> gaps, missed trades);
2. a simulator run on products of its own, whose prices cross the EWMA band, with 13 s of silence (-> alerts).

Every table's topic is written by a deployed function (book, trade flow, volatility and alerts included): the
seeding fails at once, rather than charting made-up records, if a derived topic lost its function.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pulsar

from rtca.errors import DeployError
from rtca.feed.ingest import ingest_to_pulsar
from rtca.feed.server import Faults
from rtca.feed.sources import SourceSpec
from rtca.functions.deploy import ROUTER, TICKER_STATS, deploy_functions, function_specs
from rtca.functions.samples import hostile_payloads
from rtca.pinot.client import PinotClient
from rtca.pinot.tables import apply_tables
from rtca.settings import Settings
from rtca.stack.remote import http_options, pulsar_topic_path
from rtca.superset.bundle import apply_dashboards

HOSTILE = 40
DERIVED = ("book", "trade_flow", "volatility", "alerts")


def simulator_products(started_ms: int) -> tuple[str, str]:
    """Products of this seeding's own (the simulator prices them at random whatever their names): the functions
    keep state per product across runs (EWMA, armed alerts), so on a stack reused from an earlier session the same
    names would not raise the alerts a fresh one does."""
    tag = f"{started_ms // 1000 % 100_000:05d}"
    return f"S{tag}A-USD", f"S{tag}B-USD"


@dataclass
class LiveData:
    """What the seeding did: ingest reports, rows per table in the last hour, records read back."""

    started_ms: int
    ingests: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    #: Records of this run read back from the typed topics, per `Topics` key (ticker, matches, level2, ticker_stats).
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"seeded from {self.started_ms}:", *(f"  ingest: {r.splitlines()[0]}" for r in self.ingests)]
        lines += [f"  {t}: {n} rows received since" for t, n in self.rows.items()]
        return "\n".join(lines)


_SEEDED: dict[str, LiveData] = {}


def seed_live_data(settings: Settings) -> LiveData:
    """Seed once per session (the browser and integration tests share it)."""
    key = settings.model_dump_json()
    if key not in _SEEDED:
        _SEEDED[key] = _seed(settings)
    return _SEEDED[key]


def _seed(settings: Settings) -> LiveData:
    data = LiveData(started_ms=int(time.time() * 1000))
    unproduced = [k for k in DERIVED if settings.topic(getattr(settings.topics, k)) not in _function_outputs(settings)]
    assert not unproduced, f"no deployed function writes the topic of {unproduced}: its table would stay empty"
    apply_tables(settings)
    deploy_functions(settings, say=lambda _: None)
    apply_dashboards(settings, say=lambda _: None)
    client = pulsar.Client(settings.pulsar.service_url, operation_timeout_seconds=30,
                           logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    try:
        readers = {key: client.create_reader(settings.topic(getattr(settings.topics, key)), pulsar.MessageId.latest)
                   for key in ("ticker", "matches", "level2", "ticker_stats")}
        hostile = list(hostile_payloads(HOSTILE, seed=7))
        replay = SourceSpec(kind="replay", speed=None, shift_time=True,
                            faults=Faults(inject_after={200 + 50 * i: [p] for i, p in enumerate(hostile)},
                                          drop_after=4000, skip_trade_ids=(15, 2)))
        # its 13 s of silence (the watchdog waits 20) raise a feed_stalled alert, which re-arms once frames flow again:
        # alerts from this run even on a reused stack, where the replay's gaps and book alerts were reported before
        simulator = SourceSpec(kind="simulator", rate=60.0, seed=11, products=simulator_products(data.started_ms),
                               faults=Faults(silence_after=600, silence_for=13.0))
        data.ingests.append(str(asyncio.run(ingest_to_pulsar(settings, replay))))
        # 65 s of event time always crosses a minute boundary: every simulated product closes at least one of the
        # 60 s trade-flow and volatility windows, so those tables (and their charts) have rows.
        data.ingests.append(str(asyncio.run(ingest_to_pulsar(settings, simulator, duration=65, silence_timeout=20))))
        _wait_settled(settings)
        records = data.records = {key: _drain(reader) for key, reader in readers.items()}
        _wait_in_pinot(settings, records["ticker_stats"], since_ms=data.started_ms)
    finally:
        client.close()
    data.rows = wait_for_rows(settings, since_ms=data.started_ms)
    return data


def _function_outputs(settings: Settings) -> set[str]:
    outputs: set[str] = set()
    for spec in function_specs(settings):
        if spec.output:
            outputs.add(spec.output)
        outputs.update(v for v in (spec.user_config.get("topics") or {}).values() if isinstance(v, str))
    return outputs


def _drain(reader: pulsar.Reader) -> list[dict[str, Any]]:
    out = []
    while reader.has_message_available():
        out.append(orjson.loads(reader.read_next(10_000).data()))
    reader.close()
    return out


def _wait_settled(settings: Settings, *, timeout: float = 180.0) -> None:
    """Until the router has taken every raw record published so far, then the statistics function every ticker the
    router had published by then: each subscription's acknowledged position reaches its topic's last message as it
    was when the wait began (a function acknowledges an input once its output is stored). Not until a table stops
    growing, nor until a backlog is empty: an ingest left running beside the tests, as runbook 40's is on a reused
    stack, keeps both moving."""
    p = settings.pulsar
    deadline = time.monotonic() + timeout
    for name, topic in ((ROUTER, settings.topic(settings.topics.raw)),
                        (TICKER_STATS, settings.topic(settings.topics.ticker))):  # fmt: skip
        subscription = f"{p.tenant}/{p.namespace}/{name}"
        with httpx.Client(base_url=p.admin_url, timeout=30, **http_options(settings, "pulsar")) as admin:
            path = pulsar_topic_path(topic)
            last = admin.get(path + "/lastMessageId").raise_for_status().json()
            target, taken = (last["ledgerId"], last["entryId"]), (-1, -1)
            while taken < target:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} did not take {topic} up to {target} within {timeout:.0f} s "
                                         f"(acknowledged up to {taken})")
                time.sleep(1)
                cursors = admin.get(path + "/internalStats").raise_for_status().json().get("cursors") or {}
                cursor = cursors.get(quote(subscription, safe="")) or cursors.get(subscription) or {}
                ledger, _, entry = str(cursor.get("markDeletePosition") or "-1:-1").partition(":")
                taken = (int(ledger), int(entry))


def _wait_in_pinot(settings: Settings, stats: list[dict[str, Any]], *, since_ms: int, timeout: float = 120.0) -> None:
    """Until Pinot holds at least the statistics records of this run read from the topic (tests compare them)."""
    expected = sum(1 for record in stats if (record.get("received_ms") or 0) >= since_ms)
    deadline = time.monotonic() + timeout
    with PinotClient(settings) as pinot:
        while (count := _count(pinot, settings.tables.ticker_stats, f"WHERE received_ms >= {since_ms}")) < expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"Pinot has {count} statistics rows of this run, the topic {expected}")
            time.sleep(1)


def _count(pinot: PinotClient, table: str, where: str = "") -> int:
    try:
        return pinot.count(table, where)
    except DeployError:
        return 0


def _received_since(settings: Settings, table: str, since_ms: int) -> str:
    """The rows of records received after `since_ms`: feed health has its tick time, the book per minute (aggregated
    by Pinot) only its minute."""
    if table == settings.tables.feed_health:
        return f"WHERE ts_ms >= {since_ms}"
    if table == settings.tables.book_minute:
        return f"WHERE event_time >= {since_ms // 60_000 * 60_000}"
    return f"WHERE received_ms >= {since_ms}"


def wait_for_rows(settings: Settings, *, since_ms: int, timeout: float = 120.0) -> dict[str, int]:
    """Rows per table received after `since_ms`, once every table has some (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    with PinotClient(settings) as pinot:
        while True:
            rows = {t: _count(pinot, t, _received_since(settings, t, since_ms))
                    for t in settings.tables.model_dump().values()}  # fmt: skip
            if all(rows.values()) or time.monotonic() > deadline:
                return rows
            time.sleep(2)

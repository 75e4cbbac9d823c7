"""Freshness benchmark: exchange timestamp -> visible in a Pinot query, through the functions vs a direct table.

On topics, functions and tables of its own (`BenchScope`), in one run:

    simulator (own process, 1,000 frames/s, ticker + matches + level2 + heartbeat)
      -> ingest (this process) -> raw topic ──router fn──> ticker topic ──Pinot──> ticker table
                                    │                         └──stats fn──> stats topic ──Pinot──> stats table
                                    └──────────────Pinot (no function)─────────────────────────> direct table

The direct table reads the raw topic itself: an ingestion filter keeps the ticker frames and transforms compute
`event_ms` from the frame's `time`, so it holds the same tickers as the ticker table, at the same rate, with the
same segment size; only the functions are missing from its path. Every table is polled (each in its own thread,
every `poll_interval` s) with `SELECT event_ms, COUNT(*) ... GROUP BY event_ms` over the event times still
expected; rows that appear between two polls became visible, on average, halfway between them (or between their
publication by ingest and the poll, if later: `Visibility`).
Freshness of a row = that moment - its exchange timestamp (`event_ms`, the frame's `time`, set by the simulator on
this machine's clock). Ingest counts the tickers it publishes, so rows that never show up are reported as missing.

Goal: p99 through the functions (ticker table, statistics table) <= 1.5 x the direct table's p99.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtca.bench.pipeline import (
    SIM_CHANNELS,
    BenchScope,
    Say,
    SimulatorProcess,
    product_names,
    run_tapped_ingest,
)
from rtca.bench.report import BenchResult, Figure, Goal, Summary
from rtca.feed.ingest import IngestReport
from rtca.feed.sinks import Record
from rtca.settings import Settings

GOAL = Goal("<=", 1.5)
#: Joda pattern of Coinbase's `time` (microseconds, UTC 'Z'); Pinot's fromDateTime truncates to milliseconds, as
#: the router does.
TIME_PATTERN = "yyyy-MM-dd''T''HH:mm:ss.SSSSSS''Z''"


class Visibility:
    """Rows of one table per event time, as successive polls see them, and when each became visible.

    `expect(ms, published_ms)`: one more row with this event time will come (ingest published its source at
    `published_ms`; the first publication per event time is kept, and `from_publish` holds each row's visibility
    minus it: the pipeline after ingest, without the time frames wait to be read by ingest). `window_start()`: the
    oldest event time still incomplete, so a poll need not look further back. `observe(counts, at_ms)`: the
    counts per event time a poll saw; rows beyond what earlier polls saw became visible after the previous poll
    (and after ingest published them) and by this one, taken as halfway (a uniform arrival), and their freshness
    is that moment minus their event time. Only event times >= `since_ms` count (before it: warm-up, state frames).
    Thread-safe: ingest calls `expect` while a poller thread calls the rest.
    """

    def __init__(self, since_ms: int, *, max_age_ms: int = 60_000) -> None:
        self.since_ms = since_ms
        self.max_age_ms = max_age_ms
        self.expected: Counter[int] = Counter()
        self.seen: dict[int, int] = {}
        self.latencies: list[float] = []
        self.from_publish: list[float] = []
        self.published: dict[int, float] = {}
        self.polls = 0
        self.poll_gaps: list[float] = []
        self._pending: deque[int] = deque()
        self._last_poll_ms: float | None = None
        self._last_complete = since_ms
        self._lock = threading.Lock()

    def expect(self, event_ms: int, published_ms: float | None = None, count: int = 1) -> None:
        if event_ms < self.since_ms:
            return
        with self._lock:
            self.expected[event_ms] += count
            self._pending.append(event_ms)
            if published_ms is not None:
                self.published.setdefault(event_ms, published_ms)

    def window_start(self, now_ms: float) -> int:
        """Where the next poll starts: the oldest incomplete event time (not older than `max_age_ms`)."""
        floor = int(now_ms) - self.max_age_ms
        with self._lock:
            pending = self._pending
            while pending and (pending[0] < floor or self.seen.get(pending[0], 0) >= self.expected[pending[0]]):
                self._last_complete = max(self._last_complete, pending.popleft())
            start = pending[0] if pending else self._last_complete
        return max(start, floor, self.since_ms)

    def observe(self, counts: Mapping[int, int], at_ms: float) -> int:
        """A poll's counts per event time, answered at `at_ms`; returns how many rows are new."""
        with self._lock:
            previous = self._last_poll_ms
            if previous is not None:
                self.poll_gaps.append(at_ms - previous)
            self._last_poll_ms = at_ms
            self.polls += 1
            new = 0
            for event_ms, count in counts.items():
                if event_ms < self.since_ms:
                    continue
                before = self.seen.get(event_ms, 0)
                if count > before:
                    published = self.published.get(event_ms)
                    # visible after the previous poll (and after ingest published it), by this one: the middle
                    bounds = [x for x in (previous, published) if x is not None]
                    lower = min(max(bounds), at_ms) if bounds else at_ms
                    visible_ms = (lower + at_ms) / 2
                    self.latencies.extend([visible_ms - event_ms] * (count - before))
                    if published is not None:
                        self.from_publish.extend([visible_ms - published] * (count - before))
                    self.seen[event_ms] = count
                    new += count - before
            return new

    def missing(self) -> int:
        """Rows expected but not (yet) seen."""
        with self._lock:
            return sum(max(0, n - self.seen.get(ms, 0)) for ms, n in self.expected.items())

    def summary(self) -> Summary | None:
        with self._lock:
            return Summary.of(self.latencies) if self.latencies else None

    def publish_summary(self) -> Summary | None:
        with self._lock:
            return Summary.of(self.from_publish) if self.from_publish else None


@dataclass
class Poller:
    """Polls one table in a thread until stopped (or, once draining, until nothing is missing)."""

    settings: Settings
    table: str
    visibility: Visibility
    interval: float = 0.05
    errors: int = 0
    last_error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Poller:
        self._thread = threading.Thread(target=self._run, name=f"bench-poll-{self.table}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from rtca.pinot.client import PinotClient

        with PinotClient(self.settings, timeout=10) as pinot:
            while not self._stop.is_set():
                began = time.time()
                start = self.visibility.window_start(began * 1000)
                sql = (f"SELECT event_ms, COUNT(*) FROM {self.table} WHERE event_time >= {start} "
                       f"GROUP BY event_ms LIMIT 1000000")  # fmt: skip
                try:
                    rows = pinot.query(sql)
                except Exception as exc:  # a table not ready yet, a broker hiccup: poll again
                    self.errors += 1
                    self.last_error = str(exc)[:200]
                    self._stop.wait(0.5)
                    continue
                ended = time.time()
                self.visibility.observe({int(ms): int(n) for ms, n in rows}, (began + ended) / 2 * 1000)
                self._stop.wait(max(0.0, self.interval - (time.time() - began)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def direct_table(scope: BenchScope, name: str, flush_rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ticker table's schema and config, fed from the raw topic with no function: tickers only, `event_ms` from
    the frame's `time` (raw frames carry no `event_ms`)."""
    from rtca.pinot.tables import render_table

    spec = render_table(scope.settings, "ticker")
    schema, table = copy.deepcopy(spec.schema), copy.deepcopy(spec.table)
    schema["schemaName"] = table["tableName"] = table["segmentsConfig"]["schemaName"] = name
    schema["dimensionFieldSpecs"].append({"name": "time", "dataType": "STRING"})
    streams = table["tableIndexConfig"]["streamConfigs"]
    streams["stream.pulsar.topic.name"] = scope.topic("raw")
    streams["realtime.segment.flush.threshold.rows"] = str(flush_rows)
    from_time = f"fromDateTime(\"time\", '{TIME_PATTERN}')"
    table["ingestionConfig"] = {
        "filterConfig": {"filterFunction": "notEquals(strcmp(type, 'ticker'), 0)"},
        "transformConfigs": [{"columnName": "event_ms", "transformFunction": from_time},
                             {"columnName": "event_time", "transformFunction": from_time}],
    }  # fmt: skip
    return schema, table


def pipeline_tables(scope: BenchScope, flush_rows: int) -> dict[str, str]:
    """Create the ticker, statistics and direct tables of the scope; label -> table name."""
    from rtca.pinot.tables import render_table

    names = {}
    for key in ("ticker", "ticker_stats"):
        spec = render_table(scope.settings, key)
        spec.table["tableIndexConfig"]["streamConfigs"]["realtime.segment.flush.threshold.rows"] = str(flush_rows)
        scope.put_table(spec.schema, spec.table)
        names[key] = spec.name
    direct = scope.table_name("direct")
    scope.put_table(*direct_table(scope, direct, flush_rows))
    names["direct"] = direct
    return names


def deploy_pipeline(scope: BenchScope) -> None:
    """The router and the statistics function, as `rtca functions deploy` defines them, on the scope's topics."""
    from rtca.functions.deploy import ROUTER, TICKER_STATS, function_specs

    prefix = f"bench-{scope.tag}-"
    specs = [s for s in function_specs(scope.settings, name_prefix=prefix) if s.name in (prefix + ROUTER,
                                                                                         prefix + TICKER_STATS)]
    scope.deploy(specs)


def wait_tables_answer(scope: BenchScope, tables: Sequence[str], timeout: float = 120.0) -> None:
    from rtca.pinot.client import PinotClient

    deadline = time.monotonic() + timeout
    with PinotClient(scope.base) as pinot:
        for table in tables:
            while True:
                try:
                    pinot.count(table)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)


@dataclass
class MeasuredRun:
    """One sustained run: ingest's report and each table's visibility."""

    rate: float | None
    seconds: float
    report: IngestReport
    held_rate: float
    """Frames ingest published per second after the warm-up (connecting and warming up excluded)."""
    visibility: dict[str, Visibility]
    pollers: dict[str, Poller]
    drained_s: float

    def summaries(self) -> dict[str, Summary | None]:
        return {label: v.summary() for label, v in self.visibility.items()}


def measure(scope: BenchScope, tables: Mapping[str, str], *, rate: float | None, products: Sequence[str],
            warmup: float, seconds: float, poll_interval: float, drain: float = 30.0, seed: int = 1,
            on_record: Any = None) -> MeasuredRun:  # fmt: skip
    """Run the simulator at `rate` through ingest for `warmup + seconds`, polling every table; freshness counts the
    tickers whose event time is after the warm-up. Then wait up to `drain` s for the rows still expected."""
    since_ms = int((time.time() + warmup) * 1000)
    visibility = {label: Visibility(since_ms) for label in tables}
    held = {"count": 0, "last": 0.0}

    def tap(record: Record) -> None:
        now = time.time()
        if now * 1000 >= since_ms:
            held["count"] += 1
            held["last"] = now
        if record.key == "ticker" and record.event_ms is not None:
            published = time.time() * 1000
            for v in visibility.values():
                v.expect(record.event_ms, published)
        if on_record is not None:
            on_record(record)

    pollers = {label: Poller(scope.base, table, visibility[label], poll_interval).start()
               for label, table in tables.items()}  # fmt: skip
    try:
        with SimulatorProcess(rate=rate, products=products, seed=seed) as sim:
            report = run_tapped_ingest(scope.base, sim.url, products=products, channels=SIM_CHANNELS,
                                       raw_topic=scope.topic("raw"), health_topic=scope.topic("feed_health"),
                                       on_record=tap, duration=warmup + seconds)  # fmt: skip
        drain_start = time.monotonic()
        while time.monotonic() - drain_start < drain and any(v.missing() for v in visibility.values()):
            time.sleep(0.5)
        drained = time.monotonic() - drain_start
    finally:
        for poller in pollers.values():
            poller.stop()
    held_seconds = held["last"] - since_ms / 1000
    held_rate = held["count"] / held_seconds if held_seconds > 0 else 0.0
    return MeasuredRun(rate, seconds, report, held_rate, visibility, pollers, drained)


def run(settings: Settings, *, quick: bool = False, keep: bool = False, say: Say = print, rate: float = 1000.0,
        products: int = 20, flush_rows: int = 10_000, poll_interval: float = 0.05,
        seconds: float | None = None, warmup: float | None = None) -> BenchResult:  # fmt: skip
    result = BenchResult("freshness", started="", quick=quick)
    seconds = seconds or (60.0 if quick else 240.0)
    warmup = warmup or (15.0 if quick else 30.0)
    names = product_names(products)
    result.parameters = {"rate": rate, "products": products, "channels": list(SIM_CHANNELS), "seconds": seconds,
                         "warmup": warmup, "flush_rows": flush_rows, "poll_interval": poll_interval}
    with BenchScope(settings, keep=keep, say=say) as scope:
        result.details["scope"] = scope.tag
        say("  deploying the router and statistics functions and three tables on the benchmark's topics ...")
        deploy_pipeline(scope)
        tables = pipeline_tables(scope, flush_rows)
        wait_tables_answer(scope, list(tables.values()))
        say(f"  simulator at {rate:,.0f} msg/s for {warmup:.0f} s warm-up + {seconds:.0f} s measured ...")
        measured = measure(scope, tables, rate=rate, products=names, warmup=warmup, seconds=seconds,
                           poll_interval=poll_interval)  # fmt: skip
    add_figures(result, measured)
    return result


def add_figures(result: BenchResult, measured: MeasuredRun, *, bench: str = "freshness") -> None:
    summaries = measured.summaries()
    direct = summaries.get("direct")
    report = measured.report
    details: dict[str, Any] = {"ingest": str(report), "ingest_rate": report.rate, "held_rate": measured.held_rate,
                               "drained_s": measured.drained_s}
    for label, v in measured.visibility.items():
        s = summaries[label]
        gaps = sorted(v.poll_gaps)
        from_publish = v.publish_summary()
        details[label] = {
            "summary": None if s is None else s.__dict__, "missing": v.missing(), "polls": v.polls,
            "from_publish": None if from_publish is None else from_publish.__dict__,
            "expected": sum(v.expected.values()), "poll_gap_ms_median": gaps[len(gaps) // 2] if gaps else None,
            "poll_errors": measured.pollers[label].errors, "last_poll_error": measured.pollers[label].last_error,
        }  # fmt: skip
    result.details.update(details)
    behind = bool(measured.rate) and measured.held_rate < 0.95 * float(measured.rate or 0)
    for label, title in (("ticker", "ticker table (router)"), ("ticker_stats", "statistics table (router + stats)")):
        s = summaries.get(label)
        unmet = []  # the goal is at a sustained rate, over every row: a run that did not hold them does not meet it
        for table in (label, "direct"):
            if table in measured.visibility and measured.visibility[table].missing():
                unmet.append(f"{measured.visibility[table].missing()} rows of the {table} table never became visible")
        if behind:
            unmet.append(f"ingest held {measured.held_rate:,.0f} of the {float(measured.rate or 0):,.0f} msg/s asked "
                         f"(frames queued before ingest; see 'from ingest's publish')")
        result.add(Figure(bench, f"{title} p99", None if s is None else s.p99, "ms", reference="direct table p99",
                          reference_value=None if direct is None else direct.p99, goal=GOAL,
                          unmet_because="; ".join(unmet),
                          detail={} if s is None else {"p50": s.p50, "max": s.max, "count": s.count}))
        result.add(Figure(bench, f"{title} p50", None if s is None else s.p50, "ms", reference="direct table p50",
                          reference_value=None if direct is None else direct.p50))
        result.add(Figure(bench, f"{title} max", None if s is None else s.max, "ms", reference="direct table max",
                          reference_value=None if direct is None else direct.max))
    direct_pub = measured.visibility["direct"].publish_summary() if "direct" in measured.visibility else None
    for label, title in (("ticker", "ticker table"), ("ticker_stats", "statistics table")):
        pub = measured.visibility[label].publish_summary() if label in measured.visibility else None
        if pub is not None:
            result.add(Figure(bench, f"{title} p99 from ingest's publish (context)", pub.p99, "ms",
                              reference="direct table, same", reference_value=None if direct_pub is None
                              else direct_pub.p99, note="without the time frames wait for ingest"))  # fmt: skip
    if measured.rate:
        result.add(Figure(bench, "ingest rate held (after warm-up)", measured.held_rate, "msg/s",
                          reference="simulator rate asked",
                          reference_value=measured.rate, ratio_unit="%"))  # fmt: skip

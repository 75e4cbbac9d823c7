"""Query benchmark: every dashboard query on 1,000,000 simulator rows, tuned tables vs untuned copies.

1. Data. The project's simulator (a busy market: half of the steps are trades, 30 products) generates a base stream;
   the router's own logic (`rtca.functions.routing.route`) turns its frames into typed records, and the functions'
   pure kernels derive the other tables from them in this process (`TickerStats` -> statistics, `BookTracker` ->
   book, `TradeFlow`, `Volatility`, `AlertEngine` -> alerts; the router's dead letters of the shipped hostile
   samples; a feed-health tick per second). The base is repeated, shifted in time, until the ticker table holds
   `rows` rows (1,000,000; `--quick`: 100,000) spread over the last 3 hours (about 90 tickers/s: a table that has
   been filling for a while, of which the dashboards look at the last hour or 15 minutes); every other table gets
   the same tiles (its natural volume for such a market: the statistics and matches tables as many rows as the
   ticker table, book one row per product and second, ...).
2. Tables. Each of the nine tables twice, fed from the same topic: *tuned* = the shipped config rendered from
   `infra/pinot/` (`rtca.pinot.tables.render_table`), *untuned* = the same schema with 10,000-row segments and no
   indexes (no sorted column, no inverted, range, bloom or star-tree index).
3. SQL. Superset's own: a dataset per tuned table (the bundle's dataset definition, imported under a new uuid), then
   each bundled chart's `query_context` posted to `/api/v1/chart/data` on it, with `result_type=query` (the
   statements it would send, prequeries for "top N series" included) and `result_type=full` (what it sent when it
   ran them). Their relative time ranges ("last hour") are pinned to the end of the data, so the minutes the
   benchmark itself takes do not move the window. The untuned copy gets the same statements with its table name.
   Charts that read a table built for them (the latest-ticker upsert table, the trade-flow windows' candles, the
   book per minute: `RAW_FORMS`) are compared with their question asked of the raw table's untuned copy, in the SQL Superset sent
   for them when they read that table: what the dashboard would cost without the tuning.
4. Timing. After a warm-up, each statement runs `repeat` times (200; quick: 40) on both tables, alternating,
   straight against the broker; the figure is Pinot's `timeUsedMs` (the broker's own time, client noise excluded,
   in whole milliseconds), with the client's wall time in the JSON. Per chart: p50/p99 of tuned and untuned; the
   ratio is untuned p99 / tuned p99. (A p99 of 40 runs was about their maximum: one slow run decided it.)

Goal: p99 >= 4x better than untuned (ratio >= 4) for every dashboard query.
"""

from __future__ import annotations

import copy
import math
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from rtca.bench.pipeline import BenchScope, Payload, Say, product_names, produce_all, quiet_client
from rtca.bench.report import BenchResult, Figure, Goal, Summary
from rtca.settings import Settings, Topics

GOAL = Goal(">=", 4.0)
UNTUNED_FLUSH_ROWS = 10_000
#: Record fields holding epoch milliseconds, shifted with each tile.
TIME_FIELDS = ("event_ms", "received_ms", "ts_ms", "window_end_ms", "last_message_ms")
#: Index settings the untuned copy clears.
_INDEX_LISTS = ("sortedColumn", "invertedIndexColumns", "rangeIndexColumns", "bloomFilterColumns",
                "onHeapDictionaryColumns", "varLengthDictionaryColumns", "jsonIndexColumns")  # fmt: skip

Records = dict[str, list[dict[str, Any]]]


# --- 1. data ---------------------------------------------------------------------------------------------------------
def market_records(products: Sequence[str], steps: int, *, start_ms: int, span_ms: int, seed: int = 3,
                   trade_share: float = 0.5, dead_letter_every: int = 200) -> Records:  # fmt: skip
    """Records of every table from `steps` simulated steps spread over [start_ms, start_ms + span_ms)."""
    from rtca.analytics.alerts import AlertEngine, book_problem_alert, parse_rules
    from rtca.analytics.book import BookTracker
    from rtca.analytics.flow import TradeFlow
    from rtca.analytics.stats import TickerStats
    from rtca.analytics.volatility import Volatility
    from rtca.feed.protocol import dumps
    from rtca.feed.simulator import SimulatedMarket
    from rtca.functions import routing
    from rtca.functions.deploy import alert_rules
    from rtca.functions.samples import hostile_payloads
    from rtca.functions.stats import ProductBook, stats_record
    from rtca.settings import load_settings

    market = SimulatedMarket(products, seed=seed, start_us=start_ms * 1000, trade_share=trade_share)
    out: Records = defaultdict(list)
    books = BookTracker(1000, 50.0)
    flow = TradeFlow(window_ms=60_000)
    vol = Volatility(window_ms=60_000)
    alerts = AlertEngine(parse_rules(bench_rules(alert_rules(load_settings()))))
    stats: dict[str, ProductBook] = {}
    hostile = hostile_payloads(max(1, steps // dead_letter_every) + 1, seed=seed)

    def alert_on(record: Mapping[str, Any], source: str) -> None:
        out["alerts"].extend(alerts.evaluate(record, source))

    def level2(record: dict[str, Any]) -> None:
        for result in books.update(record):
            if result.pop("valid", False):
                out["book"].append(result)
                alert_on(result, "book")
            else:
                out["alerts"].append(book_problem_alert(result))

    for product in market.products:  # each book starts from a snapshot, as on the exchange
        snapshot = routing.route(dumps(market.snapshot(product)), received_ms=start_ms, source_topic="bench")
        if snapshot.channel != "level2":
            raise ValueError(f"the router refused the simulator's snapshot of {product}: {snapshot.record}")
        level2(snapshot.record)
    step_us = span_ms * 1000 / steps
    next_tick = start_ms
    messages = 0
    for i in range(steps):
        now_us = int(start_ms * 1000 + i * step_us)
        now_ms = now_us // 1000
        for frame in market.step(now_us):
            messages += 1
            routed = routing.route(dumps(frame), received_ms=now_ms + 2, source_topic="bench")
            record, channel = routed.record, routed.channel
            if channel == "ticker":
                out["ticker"].append(record)
                book = stats.get(record["product_id"])
                if book is None:
                    book = stats[record["product_id"]] = ProductBook(TickerStats(), "bench", None)
                price = float(record["price"])
                row = book.stats.update(price)
                stats_row = stats_record(record, book, price, row, [1, i, -1, -1])
                stats_row.pop("state", None)
                out["ticker_stats"].append(stats_row)
                for v in vol.update(record):
                    out["volatility"].append(v)
                    alert_on(v, "volatility")
                alert_on(record, "ticker")
            elif channel == "matches":
                out["matches"].append(record)
                out["trade_flow"].extend(flow.update(record))
            elif channel == "level2":
                level2(record)
        if i % dead_letter_every == 0:
            dead = routing.route(next(hostile), received_ms=now_ms, source_topic="bench")
            out["dead_letter"].append(dead.record)
        while now_ms >= next_tick:
            tick = {"kind": "tick", "ts_ms": next_tick, "source": "simulator", "url": "ws://127.0.0.1/bench",
                    "connected": True, "connections": 1, "reconnects": 0, "messages": messages,
                    "msg_rate": 1000.0 * messages / max(1, next_tick - start_ms + 1000), "acked": messages,
                    "pending": 0, "failed": 0, "malformed": 0, "unknown": 0, "missed_trades": 0, "gaps": 0,
                    "out_of_order": 0, "new_reconnects": 0, "new_gaps": 0,
                    "new_missed_trades": 0, "lag_ms_p50": 3, "lag_ms_max": 12, "last_message_ms": now_ms,
                    "silence_ms": 0}  # fmt: skip
            out["feed_health"].append(tick)
            alert_on(tick, "feed_health")
            next_tick += 1000
    return dict(out)


def bench_rules(rules: Sequence[Mapping[str, Any]], scale: float = 0.05) -> list[dict[str, Any]]:
    """The shipped alert rules with the price-move and spread thresholds scaled down: the simulated market is calm,
    and an alerts table with no rows would leave its charts out of the benchmark."""
    out = []
    for rule in rules:
        rule = dict(rule)
        if rule.get("kind") in ("price_move", "spread_bps"):
            for key in ("threshold", "clear"):
                if key in rule:
                    rule[key] = float(rule[key]) * scale
        out.append(rule)
    return out


def tiled(rows: Sequence[Mapping[str, Any]], *, tiles: int, period_ms: int, cap: int | None = None,
          until: tuple[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """`tiles` copies of `rows`, copy k shifted by k * period_ms in every time field (`TIME_FIELDS`), lazily (a
    million rows of dicts would take gigabytes); at most `cap` rows, none whose `until[0]` field is after
    `until[1]`."""
    produced = 0
    for k in range(tiles):
        shift = k * period_ms
        for row in rows:
            if cap is not None and produced >= cap:
                return
            out = dict(row)
            for name in TIME_FIELDS:
                value = out.get(name)
                if type(value) is int:
                    out[name] = value + shift
            if until is not None and type(out.get(until[0])) is int and out[until[0]] > until[1]:
                continue
            produced += 1
            yield out


def tile(records: Records, *, tiles: int, period_ms: int, limit: Mapping[str, int] | None = None) -> Records:
    """`tiled` for every table, as lists (small data sets and tests)."""
    return {key: list(tiled(rows, tiles=tiles, period_ms=period_ms, cap=(limit or {}).get(key)))
            for key, rows in records.items()}  # fmt: skip


@dataclass
class DataPlan:
    """The base records and how they are repeated: `rows(key)` gives a table's rows, lazily."""

    base: Records
    tiles: int
    period_ms: int
    ticker_rows: int
    start_ms: int
    end_ms: int
    """The last ticker's event time: every table ends there."""
    info: dict[str, Any]

    def rows(self, key: str) -> Iterator[dict[str, Any]]:
        field_ = "ts_ms" if key == "feed_health" else "event_ms"
        return tiled(self.base.get(key, []), tiles=self.tiles, period_ms=self.period_ms,
                     cap=self.ticker_rows if key == "ticker" else None, until=(field_, self.end_ms))

    def count(self, key: str) -> int:
        return sum(1 for _ in self.rows(key))


def dataset(rows: int, *, products: int = 30, base_tickers: int = 20_000, span_ms: int = 3 * 3600_000,
            end_ms: int | None = None, trade_share: float = 0.5, say: Say = print) -> DataPlan:
    """Every table's rows: a base stream with about `base_tickers` tickers, repeated until `rows` tickers, over the
    `span_ms` before `end_ms` (now)."""
    base_tickers = min(base_tickers, rows)
    tiles = max(1, math.ceil(rows / base_tickers))
    period = span_ms // tiles
    end_ms = end_ms or int(time.time() * 1000)
    start_ms = end_ms - span_ms
    steps = int(base_tickers / trade_share * 1.02) + 10
    began = time.perf_counter()
    base = market_records(product_names(products), steps, start_ms=start_ms, span_ms=period,
                          trade_share=trade_share)  # fmt: skip
    generated = time.perf_counter() - began
    tiles = max(tiles, math.ceil(rows / max(1, len(base["ticker"]))))
    last_tile = (min(rows, tiles * len(base["ticker"])) - 1) // len(base["ticker"])
    last_row = base["ticker"][(min(rows, tiles * len(base["ticker"])) - 1) % len(base["ticker"])]
    last = int(last_row["event_ms"]) + last_tile * period
    plan = DataPlan(base, tiles, period, rows, start_ms, last, {})
    counts = {key: plan.count(key) for key in base}
    plan.info = {"base_steps": steps, "base_rows": {k: len(v) for k, v in base.items()}, "tiles": tiles,
                 "period_ms": period, "start_ms": start_ms, "end_ms": last, "generation_s": round(generated, 1),
                 "rows": counts}  # fmt: skip
    say(f"  data: {steps:,} simulated steps x {tiles} tiles in {generated:.0f} s -> "
        + ", ".join(f"{k} {n:,}" for k, n in sorted(counts.items())))
    return plan


# --- 2. tables -------------------------------------------------------------------------------------------------------
def untuned_config(table: Mapping[str, Any], name: str, *, flush_rows: int = UNTUNED_FLUSH_ROWS) -> dict[str, Any]:
    """A table config's untuned copy: same schema and stream, `flush_rows`-row segments, no indexes at all."""
    config = copy.deepcopy(dict(table))
    config["tableName"] = name
    config.setdefault("segmentsConfig", {})["schemaName"] = name
    index = config.setdefault("tableIndexConfig", {})
    for key in _INDEX_LISTS:
        if key in index or key in ("sortedColumn", "invertedIndexColumns", "rangeIndexColumns"):
            index[key] = []
    index["noDictionaryColumns"] = list(index.get("noDictionaryColumns") or [])
    index.pop("starTreeIndexConfigs", None)
    index["enableDefaultStarTree"] = False
    index["createInvertedIndexDuringSegmentGeneration"] = False
    config.pop("fieldConfigList", None)
    index["streamConfigs"] = dict(index.get("streamConfigs") or {})
    index["streamConfigs"]["realtime.segment.flush.threshold.rows"] = str(flush_rows)
    index["streamConfigs"].pop("realtime.segment.flush.threshold.segment.size", None)
    return config


Tuning = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
"""(schema, table config) -> a changed table config: a candidate tuning to compare in the same run; it may add
columns to the schema, its candidate's own copy."""


def time_sorted(schema: Mapping[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    """Segments sorted on the time column (a time filter becomes a doc-id range); product_id keeps its inverted
    index; no range index (the sorted column makes it redundant)."""
    index = table["tableIndexConfig"]
    index["sortedColumn"] = [table["segmentsConfig"]["timeColumnName"]]
    index["rangeIndexColumns"] = []
    return table


def raw_metrics(schema: Mapping[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    """DOUBLE metrics without a dictionary (a raw forward index: no lookup per value when aggregating)."""
    index = table["tableIndexConfig"]
    doubles = [f["name"] for f in schema.get("metricFieldSpecs") or [] if f.get("dataType") in ("DOUBLE", "FLOAT")]
    index["noDictionaryColumns"] = sorted(set(index.get("noDictionaryColumns") or []) | set(doubles))
    return table


def flush_rows(rows: int) -> Tuning:
    """Segments of `rows` rows (the consuming segment, which has no index, range, bloom or star-tree, is smaller)."""

    def tuning(schema: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
        table["tableIndexConfig"]["streamConfigs"]["realtime.segment.flush.threshold.rows"] = str(rows)
        return table

    tuning.__name__ = f"flush_rows_{rows}"
    return tuning


#: The derived minute column of `minute_star_tree`.
MINUTE_COLUMN = "event_minute"
#: Dimensions the dashboards' minute charts group by, after the minute (in this order when the schema has them).
STAR_TREE_DIMENSIONS = ("side", "product_id")


def minute_star_tree(schema: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    """A minute column (`event_ms` rounded down to the minute, a TIMESTAMP, by an ingestion transform) and a star-tree
    on [minute, side, product_id] with COUNT(*) and SUM/MIN/MAX/AVG of every DOUBLE metric; 20,000-row segments (the
    consuming segment has no star-tree and is scanned row by row). A star-tree serves a query only if every filter and
    GROUP BY column is one of its dimensions: Superset's SQL filters and groups on `event_time` (milliseconds), so
    this candidate needs the minute charts' time column to be the minute column (`CANDIDATE_SQL`)."""
    names = {f["name"] for key in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs")
             for f in schema.get(key) or []}  # fmt: skip
    if MINUTE_COLUMN not in names:
        schema.setdefault("dateTimeFieldSpecs", []).append({
            "name": MINUTE_COLUMN, "dataType": "TIMESTAMP", "format": "1:MILLISECONDS:EPOCH",
            "granularity": "1:MINUTES"})  # fmt: skip
    transforms = table.setdefault("ingestionConfig", {}).setdefault("transformConfigs", [])
    transforms.append({"columnName": MINUTE_COLUMN, "transformFunction": "round(event_ms, 60000)"})
    doubles = [f["name"] for f in schema.get("metricFieldSpecs") or [] if f.get("dataType") in ("DOUBLE", "FLOAT")]
    index = table["tableIndexConfig"]
    index["starTreeIndexConfigs"] = [{
        "dimensionsSplitOrder": [MINUTE_COLUMN, *(d for d in STAR_TREE_DIMENSIONS if d in names)],
        "skipStarNodeCreationForDimensions": [MINUTE_COLUMN],
        "functionColumnPairs": ["COUNT__*", *(f"{fn}__{m}" for m in doubles for fn in ("SUM", "MIN", "MAX", "AVG"))],
        "maxLeafRecords": 10000,
    }]  # fmt: skip
    return flush_rows(20_000)(schema, table)


def on_minute_column(sql: str) -> str:
    """A minute chart's statement as Superset would render it with the dataset's minute column as the chart's time
    column: filter and bucket on `event_minute` instead of `event_time` (others unchanged). Not the same rows at the
    window's start: the first, partial minute is left out."""
    if "DATE_TRUNC('minute'" not in sql:
        return sql
    return re.sub(r"(?<![\w.])event_time(?!\w)", MINUTE_COLUMN, sql)


#: Candidate tunings the benchmark can compare with the shipped config in the same run (`candidates=`). A tuning
#: gets the candidate's own copy of the schema and may add columns to it. Mind the Pinot server's heap: consuming
#: segments live there, and each candidate adds one per table.
CANDIDATES: dict[str, tuple[Tuning, ...]] = {
    "timesorted": (time_sorted,),
    "rawmetrics": (raw_metrics,),
    "timesorted_raw": (time_sorted, raw_metrics),
    "seg20k": (flush_rows(20_000),),
    "minute_startree": (minute_star_tree,),
}
#: Candidates timed on other SQL than the dashboards' (what Superset would send after a dataset/chart change):
#: candidate -> rewrite of each statement. Their figures still compare with the untuned copy on the original SQL.
CANDIDATE_SQL: dict[str, Callable[[str], str]] = {
    "minute_startree": on_minute_column,
}


def _minute_avg_sql(metric: str) -> str:
    return ("SELECT CAST(DATE_TRUNC('minute', CAST(event_time AS TIMESTAMP)) AS TIMESTAMP), product_id, "
            f"AVG({metric}) \nFROM {{table}} \nWHERE event_time >= '{{start}}' AND event_time < '{{end}}' GROUP BY "
            "CAST(DATE_TRUNC('minute', CAST(event_time AS TIMESTAMP)) AS TIMESTAMP), product_id ORDER BY "
            f"AVG({metric}) DESC\n LIMIT 10000")


#: Charts that read a table built for them (pre-aggregated by a function or by Pinot at ingestion, an upsert table of
#: the latest row) rather than the raw records: chart -> (the raw table the question is otherwise
#: asked of, the SQL Superset sent for the chart on it before the change, with `{table}`, `{start}`, `{end}`; None =
#: the chart's own SQL; its LIMIT becomes the chart's own). Their untuned reference is that SQL on the raw table's
#: untuned copy: what the dashboard costs without the tuning.
RAW_FORMS: dict[str, tuple[str, str | None]] = {
    "1-minute candles": ("matches", (
        "SELECT CAST(DATE_TRUNC('minute', CAST(event_time AS TIMESTAMP)) AS TIMESTAMP), product_id, "
        "FIRSTWITHTIME(price, event_ms, 'DOUBLE'), MAX(price), MIN(price), LASTWITHTIME(price, event_ms, 'DOUBLE'), "
        "SUM(size), COUNT(*) \nFROM {table} \nWHERE event_time >= '{start}' AND event_time < '{end}' GROUP BY "
        "CAST(DATE_TRUNC('minute', CAST(event_time AS TIMESTAMP)) AS TIMESTAMP), product_id ORDER BY MAX(event_ms) "
        "DESC\n LIMIT 10000")),
    "Traded volume per minute": ("matches", (
        "SELECT CAST(DATE_TRUNC('minute', CAST(event_time AS TIMESTAMP)) AS TIMESTAMP), product_id, SUM(size) \n"
        "FROM {table} \nWHERE event_time >= '{start}' AND event_time < '{end}' GROUP BY "
        "CAST(DATE_TRUNC('minute', CAST(event_time AS TIMESTAMP)) AS TIMESTAMP), product_id ORDER BY SUM(size) DESC"
        "\n LIMIT 10000")),
    "Latest ticker per product": ("ticker", None),
    # the book's minute charts read the per-minute table Pinot aggregates at ingestion; before it, every book record
    "Book imbalance": ("book", _minute_avg_sql("imbalance")),
    "Spread (bps)": ("book", _minute_avg_sql("spread_bps")),
}
_WINDOW = re.compile(r"event_time >= '([^']+)' AND event_time < '([^']+)'")
_LIMIT = re.compile(r"\bLIMIT (\d+)\s*$")


def raw_form(chart: str, sql: str, table: str) -> str:
    """The statement `sql` of a chart in `RAW_FORMS` as asked of the raw `table` (same time window)."""
    _, template = RAW_FORMS[chart]
    if template is None:
        return re.sub(r"(?<=FROM )\S+", table, sql, count=1)
    window = _WINDOW.search(sql)
    if window is None:
        raise ValueError(f"{chart!r}: no time window in {sql!r}")
    raw = template.format(table=table, start=window.group(1), end=window.group(2))
    limit = _LIMIT.search(sql)  # the same rows as the chart asks for (the candles' row limit was 100, then 10,000)
    return _LIMIT.sub(f"LIMIT {limit.group(1)}", raw) if limit else raw


#: Tables large enough for a candidate to matter.
CANDIDATE_TABLES = ("ticker", "ticker_stats", "matches", "book")


@dataclass
class TableSet:
    """One table key's copies, all fed from the same topic: variant (tuned, untuned, candidates) -> table name."""

    key: str
    topic: str
    tables: dict[str, str]
    published: int = 0
    #: How many records the tuned table consumed, for tables whose COUNT(*) is not that (upsert, aggregated).
    consumed_sql: str | None = None

    @property
    def tuned(self) -> str:
        return self.tables["tuned"]

    @property
    def untuned(self) -> str:
        return self.tables["untuned"]


def create_tables(scope: BenchScope, keys: Sequence[str],
                  candidates: Sequence[str] = ()) -> dict[str, TableSet]:  # fmt: skip
    """Each table of `keys` with its untuned copy (and candidates). A table over another table's topic (an upsert or
    an aggregated table) has no untuned copy of its own: its charts' reference is that table's untuned copy
    (`RAW_FORMS`)."""
    from rtca.pinot.tables import render_table, table_keys

    sets = {}
    for key in keys:
        spec = render_table(scope.settings, key)
        scope.put_table(spec.schema, spec.table)
        raw = next((k for k in table_keys() if k != key and k in Topics.model_fields
                    and render_table(scope.settings, k).topic == spec.topic), None)  # fmt: skip
        if raw is not None:
            sets[key] = TableSet(key, spec.topic, {"tuned": spec.name, "untuned": f"{scope.table_name(raw)}_untuned"},
                                 consumed_sql=consumed_sql(spec.name, spec.table))  # fmt: skip
            continue
        tables = {"tuned": spec.name, "untuned": f"{spec.name}_untuned"}
        configs = {"untuned": untuned_config(spec.table, tables["untuned"])}
        schemas = {"untuned": copy.deepcopy(spec.schema)}
        for name in candidates if key in CANDIDATE_TABLES else ():
            config = copy.deepcopy(spec.table)
            schemas[name] = copy.deepcopy(spec.schema)
            for tuning in CANDIDATES[name]:
                config = tuning(schemas[name], config)
            tables[name] = config["tableName"] = config["segmentsConfig"]["schemaName"] = f"{spec.name}_{name}"
            configs[name] = config
        for name, config in configs.items():
            schema = schemas[name]
            schema["schemaName"] = tables[name]
            scope.put_table(schema, config)
        sets[key] = TableSet(key, spec.topic, tables)
    return sets


def consumed_sql(table: str, config: Mapping[str, Any]) -> str:
    """SQL for the number of stream records `table` consumed: COUNT(*) counts rows, and an upsert table shows one
    per key, an aggregated table one per dimension values and time."""
    if "upsertConfig" in config:
        return f"SELECT COUNT(*) FROM {table} OPTION(skipUpsert=true)"
    aggregations = (config.get("ingestionConfig") or {}).get("aggregationConfigs") or []
    counts = [a["columnName"] for a in aggregations if str(a["aggregationFunction"]).upper().startswith("COUNT(")]
    return f"SELECT SUM({counts[0]}) FROM {table}" if counts else f"SELECT COUNT(*) FROM {table}"


def wait_ingested(scope: BenchScope, pairs: Mapping[str, TableSet], *, timeout: float, say: Say) -> dict[str, Any]:
    """Until every table holds what was published (or its count stopped growing for a minute at >= 99%)."""
    from rtca.pinot.client import PinotClient

    tables = {t: p.published for p in pairs.values() for t in p.tables.values()}
    counting = {p.tuned: p.consumed_sql for p in pairs.values() if p.consumed_sql}
    counts = dict.fromkeys(tables, 0)
    last_change = dict.fromkeys(tables, time.monotonic())
    began = last_report = time.monotonic()
    with PinotClient(scope.base) as pinot:
        while True:
            for table, want in tables.items():
                try:
                    if table in counting:
                        count = int(pinot.query(counting[table])[0][0] or 0)
                    else:
                        count = pinot.count(table)
                except Exception:
                    continue
                if count != counts[table]:
                    counts[table], last_change[table] = count, time.monotonic()
            now = time.monotonic()
            waiting = [t for t, want in tables.items() if counts[t] < want and not (
                counts[t] >= 0.99 * want and now - last_change[t] > 60)]  # fmt: skip
            if not waiting:
                break
            if now - began > timeout:
                raise TimeoutError("tables not filled: " + ", ".join(f"{t} {counts[t]:,}/{tables[t]:,}"
                                                                      for t in waiting))  # fmt: skip
            if now - last_report > 30:
                say("    ingesting: " + ", ".join(f"{t.split('_', 2)[-1]} {counts[t]:,}/{tables[t]:,}"
                                                  for t in waiting[:4]))  # fmt: skip
                last_report = now
            time.sleep(3)
    return {"counts": counts, "seconds": round(time.monotonic() - began, 1)}


# --- 3. SQL from Superset --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChartQuery:
    chart: str
    key: str
    """The `Tables` key of the chart's dataset."""
    sql: str
    kind: str = "query"
    """query | prequery"""

    @property
    def label(self) -> str:
        return self.chart if self.kind == "query" else f"{self.chart} ({self.kind})"


def pin_now(value: Any, moment: str) -> Any:
    """A chart's query context with its relative time ranges ending at `moment` (ISO, UTC) instead of "now":
    `DATEADD(DATETIME("now"), -1, hour) : now` -> `DATEADD(DATETIME("<moment>"), -1, hour) : <moment>`."""
    if isinstance(value, str):
        if " : " in value and "now" in value:
            value = value.replace('DATETIME("now")', f'DATETIME("{moment}")')
            value = re.sub(r"(^|:\s*)now\s*$", lambda m: f"{m.group(1)}{moment}", value)
        return value
    if isinstance(value, dict):
        return {k: pin_now(v, moment) for k, v in value.items()}
    if isinstance(value, list):
        return [pin_now(v, moment) for v in value]
    return value


def statements(text: str) -> list[str]:
    """The SQL statements in Superset's rendering of a query (prequeries first), without trailing semicolons."""
    return [part.strip() for part in re.split(r";\s*(?:\n|$)", text or "") if part.strip()]


def for_table(sql: str, table: str, other: str) -> str:
    """`sql` on `other` instead of `table` (whole identifiers only)."""
    return re.sub(rf"(?<![\w.]){re.escape(table)}(?!\w)", other, sql)


def superset_queries(scope: BenchScope, pairs: Mapping[str, TableSet], say: Say, *,
                     now_ms: int | None = None) -> list[ChartQuery]:  # fmt: skip
    """Every bundled chart's statements as Superset renders them on the tuned copy of its table (time ranges
    ending at `now_ms` when given: the data's end, so that the benchmark's own duration does not move them)."""
    import datetime as dt

    from rtca.superset.bundle import existing_uuids, for_import, load_bundle, of_kind, table_key
    from rtca.superset.client import SupersetClient

    moment = None
    if now_ms is not None:
        moment = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")

    files = load_bundle(scope.base)
    datasets = of_kind(files, "dataset")
    databases = of_kind(files, "database")
    by_uuid = {str(d["uuid"]): d for d in datasets.values()}
    new_uuid: dict[str, str] = {}
    bench_files = dict(databases)
    for name, ds in datasets.items():
        key = table_key(scope.base, str(ds["table_name"]))
        if key not in pairs:
            continue
        copy_ = copy.deepcopy(ds)
        copy_["uuid"] = new_uuid[str(ds["uuid"])] = str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                                   f"rtca-bench/{scope.tag}/{key}"))
        copy_["table_name"] = pairs[key].tuned
        bench_files[name.replace(".yaml", f"_bench_{scope.tag}.yaml")] = copy_

    found: list[ChartQuery] = []
    with SupersetClient.from_settings(scope.base) as client:
        client.import_bundle("dataset", for_import(bench_files))
        ids = existing_uuids(client, "dataset")
        scope.datasets += [ids[u] for u in new_uuid.values() if u in ids]
        for chart in sorted(of_kind(files, "chart").values(), key=lambda c: str(c["slice_name"])):
            source = by_uuid.get(str(chart["dataset_uuid"]))
            key = table_key(scope.base, str(source["table_name"])) if source else None
            if key not in pairs or new_uuid.get(str(chart["dataset_uuid"])) not in ids:
                continue
            dataset_id = ids[new_uuid[str(chart["dataset_uuid"])]]
            rendered: dict[str, list[str]] = {}
            for result_type in ("query", "full"):
                context = copy.deepcopy(chart["query_context"])
                if moment is not None:
                    context = pin_now(context, moment)
                context["datasource"] = {"id": dataset_id, "type": "table"}
                context["result_type"] = result_type
                context["force"] = True
                answer = client.post("/api/v1/chart/data", context)
                rendered[result_type] = [s for q in answer.get("result", []) for s in statements(q.get("query", ""))]
                errors = [q.get("error") for q in answer.get("result", []) if q.get("error")]
                if errors:
                    say(f"    warning: Superset ran {chart['slice_name']!r} with an error: {errors[0][:200]}")
            executed = rendered["full"] or rendered["query"]
            prequeries = [s for s in rendered["query"] if s not in executed and s not in rendered["query"][-1:]]
            name = str(chart["slice_name"])
            found += [ChartQuery(name, key, s, "prequery") for s in prequeries]
            found += [ChartQuery(name, key, s) for s in executed]
    return found


# --- 4. timing -------------------------------------------------------------------------------------------------------
@dataclass
class Timings:
    """One statement's latencies per variant (tuned, untuned, candidates)."""

    broker_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    wall_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    docs_scanned: dict[str, int] = field(default_factory=dict)
    segments: dict[str, int] = field(default_factory=dict)
    #: Segments queried, processed (not pruned on the server) and matched (with at least one row): variant -> 3.
    pruning: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    #: Entries scanned in the filter and after it (deterministic work, unlike the times): variant -> (in, post).
    entries: dict[str, tuple[int, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def time_queries(scope: BenchScope, queries: Sequence[ChartQuery], sets: Mapping[str, TableSet], *,
                 repeat: int, warmup: int = 2) -> dict[str, Timings]:  # fmt: skip
    """Each statement on every copy of its table, `warmup + repeat` rounds; the order of the copies rotates from
    one round to the next so that none always runs first (or right after another's cache warm-up)."""
    from rtca.pinot.client import PinotClient

    timings: dict[str, Timings] = {q.label: Timings() for q in queries}
    def sql_for(q: ChartQuery, variant: str, table: str) -> str:
        if variant == "untuned" and q.chart in RAW_FORMS:
            return raw_form(q.chart, q.sql, sets[RAW_FORMS[q.chart][0]].untuned)
        sql = for_table(q.sql, sets[q.key].tuned, table)
        return CANDIDATE_SQL[variant](sql) if variant in CANDIDATE_SQL else sql

    plan = [(q, {variant: sql_for(q, variant, table) for variant, table in sets[q.key].tables.items()})
            for q in queries]  # fmt: skip
    with PinotClient(scope.base, timeout=120) as pinot:
        for round_no in range(warmup + repeat):
            for q, sql in plan:
                variants = list(sql)
                shift = round_no % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    t = timings[q.label]
                    began = time.perf_counter()
                    try:
                        answer = pinot.execute(sql[variant])
                    except Exception as exc:
                        t.errors.append(f"{variant}: {str(exc)[:200]}")
                        continue
                    wall = (time.perf_counter() - began) * 1000
                    if round_no < warmup:
                        continue
                    t.wall_ms[variant].append(wall)
                    t.broker_ms[variant].append(float(answer.get("timeUsedMs") or 0.0))
                    t.docs_scanned[variant] = int(answer.get("numDocsScanned") or 0)
                    t.segments[variant] = int(answer.get("numSegmentsQueried") or 0)
                    t.pruning[variant] = (int(answer.get("numSegmentsQueried") or 0),
                                          int(answer.get("numSegmentsProcessed") or 0),
                                          int(answer.get("numSegmentsMatched") or 0))
                    t.entries[variant] = (int(answer.get("numEntriesScannedInFilter") or 0),
                                          int(answer.get("numEntriesScannedPostFilter") or 0))
    return timings


def run(settings: Settings, *, quick: bool = False, keep: bool = False, say: Say = print, rows: int | None = None,
        repeat: int | None = None, products: int = 30, candidates: Sequence[str] = ()) -> BenchResult:  # fmt: skip
    from rtca.pinot.tables import render_table, table_keys

    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        from rtca.errors import ConfigError

        raise ConfigError(f"unknown table tuning(s): {', '.join(unknown)}", hint=f"one of {', '.join(CANDIDATES)}")
    result = BenchResult("queries", started="", quick=quick)
    rows = rows or (100_000 if quick else 1_000_000)
    repeat = repeat or (40 if quick else 200)  # a p99 of fewer runs is about their maximum
    result.parameters = {"rows": rows, "repeat": repeat, "products": products, "candidates": list(candidates),
                         "untuned_flush_rows": UNTUNED_FLUSH_ROWS, "latency": "Pinot timeUsedMs"}  # fmt: skip
    with BenchScope(settings, keep=keep, say=say) as scope:
        result.details["scope"] = scope.tag
        keys = table_keys()
        say(f"  generating {rows:,} ticker rows and the other tables from the simulator ...")
        plan = dataset(rows, products=products, base_tickers=10_000 if quick else 20_000, say=say)
        info = plan.info
        result.details["data"] = info
        # One table at a time: consuming segments live on the Pinot server's heap (1 GB on the local stack), and
        # a dozen tables filling at once exhaust it.
        pairs: dict[str, TableSet] = {}
        ingestion: dict[str, Any] = {}
        riders = [k for k in keys if k not in info["rows"]]  # tables over another table's topic
        with quiet_client(settings) as client:
            for key in [k for k in keys if info["rows"].get(k)]:
                new = create_tables(scope, [key], candidates)
                new.update(create_tables(scope, [k for k in riders
                                                 if render_table(scope.settings, k).topic == new[key].topic]))
                pairs.update(new)
                began = time.perf_counter()
                payloads: Iterable[Payload] = ((orjson.dumps(r), {}, None) for r in plan.rows(key))
                produce_all(client, pairs[key].topic, payloads, acks=False)
                for table_set in new.values():
                    table_set.published = info["rows"][key]
                published = time.perf_counter() - began
                ingestion[key] = wait_ingested(scope, new, timeout=600 if quick else 1800, say=say)
                ingestion[key]["publish_s"] = round(published, 1)
                filled = {t for table_set in new.values() for t in table_set.tables.values()}
                say(f"    {key}: {info['rows'][key]:,} rows x {len(filled)} tables in "
                    f"{published + ingestion[key]['seconds']:.0f} s")
        result.details["ingestion"] = ingestion
        say("  rendering every dashboard chart's SQL through Superset's chart data API ...")
        queries = superset_queries(scope, pairs, say, now_ms=info["end_ms"] + 1000)
        result.details["sql"] = [{"chart": q.chart, "kind": q.kind, "table": q.key, "sql": q.sql,
                                  **({"untuned_sql": raw_form(q.chart, q.sql, pairs[RAW_FORMS[q.chart][0]].untuned)}
                                     if q.chart in RAW_FORMS else {})} for q in queries]  # fmt: skip
        say(f"  timing {len(queries)} statements x {repeat} runs on each copy ...")
        timings = time_queries(scope, queries, pairs, repeat=repeat)
        result.details["segments"] = _segments(scope, pairs)
    add_figures(result, queries, timings)
    return result


def _segments(scope: BenchScope, sets: Mapping[str, TableSet]) -> dict[str, int]:
    from rtca.pinot.client import PinotClient

    with PinotClient(scope.base) as pinot:
        return {t: len(pinot.segments(t)) for p in sets.values() for t in p.tables.values()}


def _geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def add_figures(result: BenchResult, queries: Sequence[ChartQuery], timings: Mapping[str, Timings]) -> None:
    per_query: dict[str, Any] = {}
    ratios: list[float] = []
    p50_ratios: list[float] = []
    by_candidate: dict[str, list[float]] = defaultdict(list)
    tuned_same: dict[str, list[float]] = defaultdict(list)
    for q in queries:
        t = timings[q.label]
        if not t.broker_ms.get("tuned") or not t.broker_ms.get("untuned"):
            result.add(Figure("queries", q.label, None, "ms", note="; ".join(t.errors[:2]) or "no timings"))
            continue
        summaries = {v: Summary.of(ms) for v, ms in t.broker_ms.items() if ms}
        tuned, untuned = summaries["tuned"], summaries["untuned"]
        reference = "untuned p99"
        if q.chart in RAW_FORMS:
            raw, template = RAW_FORMS[q.chart]
            reference = f"untuned {raw} table p99" if template is None else f"untuned {raw}, prior SQL p99"
        figure = result.add(Figure(
            "queries", f"{q.label} p99", tuned.p99, "ms", reference=reference, reference_value=untuned.p99,
            goal=GOAL, inverse=True, detail={"tuned_p50": tuned.p50, "untuned_p50": untuned.p50,
                                             "docs_scanned": t.docs_scanned, "segments": t.segments},
        ))  # fmt: skip
        if figure.ratio:
            ratios.append(figure.ratio)
        if tuned.p50 > 0:
            p50_ratios.append(untuned.p50 / tuned.p50)
        for variant, summary in summaries.items():
            if variant not in ("tuned", "untuned") and summary.p99 > 0:
                by_candidate[variant].append(untuned.p99 / summary.p99)
                tuned_same[variant].append(untuned.p99 / tuned.p99)
        per_query[q.label] = {
            "table": q.key, **{v: s.__dict__ for v, s in summaries.items()},
            "wall": {v: Summary.of(ms).__dict__ for v, ms in t.wall_ms.items() if ms},
            "docs_scanned": t.docs_scanned, "segments": t.segments, "errors": t.errors[:5],
            "segments_queried_processed_matched": t.pruning,
            "entries_scanned_in_filter": {v: e[0] for v, e in t.entries.items()},
            "entries_scanned_post_filter": {v: e[1] for v, e in t.entries.items()},
        }  # fmt: skip
    if ratios:
        result.add(Figure("queries", "all dashboard queries: geometric mean of p99 ratios", _geomean(ratios), "x",
                          note=f"{sum(r >= GOAL.threshold for r in ratios)}/{len(ratios)} queries meet >= 4x; "
                               f"worst {min(ratios):.2f}x; p50 ratios' geometric mean {_geomean(p50_ratios):.2f}x"))
    for variant, values in by_candidate.items():
        note = (f"{len(values)} queries on its tables (shipped config on them: {_geomean(tuned_same[variant]):.2f}x);"
                f" worst {min(values):.2f}x")
        result.add(Figure("queries", f"candidate '{variant}' (big tables only): geometric mean of p99 ratios",
                          _geomean(values), "x", note=note))
    result.details["per_query"] = per_query

"""Pure logic of the pipeline benchmarks: visibility accounting, backlog growth, the rate search, the query
benchmark's table copies and SQL handling, the start-up benchmark's isolated environment (no stack)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from rtca.bench.capacity import GivenRates, Hold, RateSearch, backlog_growing, best_sustained, slope
from rtca.bench.freshness import Visibility, direct_table
from rtca.bench.ingest import perf_rate
from rtca.bench.pipeline import (
    CHILDREN_PART,
    SELF_PART,
    BenchScope,
    cores_between,
    cpu_seconds_by_part,
    product_names,
    simulator_payloads,
)
from rtca.bench.queries import (
    CANDIDATE_SQL,
    CANDIDATES,
    MINUTE_COLUMN,
    RAW_FORMS,
    bench_rules,
    consumed_sql,
    for_table,
    pin_now,
    raw_form,
    statements,
    tile,
    untuned_config,
)
from rtca.bench.startup import bench_environment, bench_settings, port_fields
from rtca.cli import build_parser
from rtca.errors import ConfigError
from rtca.pinot.tables import render_table
from rtca.settings import Settings, load_settings


@pytest.fixture
def settings() -> Settings:
    return load_settings()


# --- freshness ---------------------------------------------------------------------------------------------------
def test_visibility_takes_the_middle_between_polls_and_counts_each_row_once() -> None:
    v = Visibility(since_ms=1000)
    for ms in (1000, 1000, 1010, 1020):
        v.expect(ms, published_ms=ms + 5)
    v.expect(900)  # before the measurement: ignored
    assert v.window_start(1030) == 1000
    # first poll: visible between ingest's publication (1005) and the poll (1100)
    assert v.observe({900: 1, 1000: 1}, at_ms=1100) == 1
    assert v.latencies == [52.5] and v.from_publish == [47.5]
    assert v.window_start(1100) == 1000  # 1000 still has a row to come
    assert v.observe({1000: 2, 1010: 1}, at_ms=1200) == 2  # between the polls, 1100 and 1200: 1150
    assert sorted(v.latencies) == [52.5, 140.0, 150.0]
    assert v.observe({1000: 2, 1010: 1}, at_ms=1300) == 0  # nothing new counts twice
    assert v.missing() == 1
    assert v.window_start(1300) == 1020  # 1000 and 1010 are complete
    v.observe({1020: 1}, at_ms=1400)
    assert v.missing() == 0 and v.window_start(1400) == 1020
    summary = v.summary()
    assert summary is not None and summary.count == 4 and summary.max == 330.0
    assert v.poll_gaps == [100.0, 100.0, 100.0]


def test_visibility_never_puts_a_row_before_its_publication() -> None:
    v = Visibility(since_ms=0)
    v.observe({}, at_ms=1000)  # a poll, then a slow one: the row was published at 1900
    v.expect(1800, published_ms=1900)
    v.observe({1800: 1}, at_ms=2000)
    assert v.from_publish == [50.0] and v.latencies == [150.0]


def test_visibility_window_never_reaches_further_back_than_max_age() -> None:
    v = Visibility(since_ms=0, max_age_ms=5000)
    v.expect(1000)
    assert v.window_start(3000) == 1000
    assert v.window_start(10_000) == 5000  # the row of 1000 is given up as missing, not polled for ever
    assert v.missing() == 1


def test_visibility_is_thread_safe_enough_for_ingest_and_a_poller() -> None:
    v = Visibility(since_ms=0)

    def produce() -> None:
        for ms in range(10_000):
            v.expect(ms)

    thread = threading.Thread(target=produce)
    thread.start()
    while thread.is_alive():
        v.window_start(0)
    thread.join()
    assert sum(v.expected.values()) == 10_000


def test_direct_table_reads_the_raw_topic_keeps_tickers_and_computes_event_ms(settings: Settings) -> None:
    scope = BenchScope(settings, keep=True, say=lambda _: None)
    schema, table = direct_table(scope, "bench_x_direct", 10_000)
    assert schema["schemaName"] == table["tableName"] == table["segmentsConfig"]["schemaName"] == "bench_x_direct"
    streams = table["tableIndexConfig"]["streamConfigs"]
    assert streams["stream.pulsar.topic.name"] == scope.topic("raw")
    assert streams["stream.pulsar.topic.name"].endswith(f"bench-{scope.tag}-{settings.topics.raw}")
    assert streams["realtime.segment.flush.threshold.rows"] == "10000"
    assert "ticker" in table["ingestionConfig"]["filterConfig"]["filterFunction"]
    transforms = {t["columnName"]: t["transformFunction"] for t in table["ingestionConfig"]["transformConfigs"]}
    assert transforms["event_ms"] == transforms["event_time"] and "fromDateTime" in transforms["event_ms"]
    assert {"name": "time", "dataType": "STRING"} in schema["dimensionFieldSpecs"]
    # the rendered ticker table is otherwise the same (indexes, time column)
    ticker = render_table(scope.settings, "ticker").table
    assert table["tableIndexConfig"]["sortedColumn"] == ticker["tableIndexConfig"]["sortedColumn"]


def test_scope_names_are_its_own(settings: Settings) -> None:
    scope = BenchScope(settings, keep=True, say=lambda _: None)
    assert scope.settings.tables.ticker == f"bench_{scope.tag}_{settings.tables.ticker}"
    assert scope.topic("ticker").endswith(f"/bench-{scope.tag}-{settings.topics.ticker}")
    assert scope.topic("identity-in").endswith(f"/bench-{scope.tag}-identity-in")
    assert scope.settings.pulsar == settings.pulsar and scope.base is settings


def test_simulator_payloads_are_raw_records_as_ingest_publishes_them() -> None:
    payloads = simulator_payloads(300, product_names(3))
    assert len(payloads) == 300
    assert product_names(3) == ["B00-USD", "B01-USD", "B02-USD"]
    kinds = {key for _, _, key in payloads}
    assert {"l2update", "ticker", "match"} <= kinds
    data, props, key = next(p for p in payloads if p[2] == "ticker")
    assert orjson.loads(data)["type"] == "ticker" and props["product"].startswith("B0") and "received_ms" in props


# --- capacity ------------------------------------------------------------------------------------------------------
def _burn(cpu_seconds: float) -> None:
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


def test_cpu_by_part_sees_this_process_and_its_ended_children(settings: Settings) -> None:
    """A capacity hold says where the cores went: ingest runs in this process, the simulator in a child that has
    ended when the hold is read (and a stack's services, when one runs here, under their names)."""
    before = cpu_seconds_by_part(settings)
    _burn(0.3)
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                    "while time.process_time() < end: pass"], check=True)  # fmt: skip
    after = cpu_seconds_by_part(settings)
    tick = 1 / os.sysconf("SC_CLK_TCK")  # os.times() counts user and system time in whole ticks, each rounded down
    assert after[SELF_PART] - before[SELF_PART] >= 0.3 - 2 * tick - 1e-6
    assert after[CHILDREN_PART] - before[CHILDREN_PART] >= 0.3 - 2 * tick - 1e-6
    assert all(seconds >= 0 for seconds in after.values())


def test_cores_between_two_readings() -> None:
    before = {"pulsar": 10.0, "router": 5.0, "gone": 1.0, "idle": 5.0, "restarted": 30.0}
    after = {"pulsar": 14.0, "router": 7.0, "new": 1.0, "idle": 5.0000001, "restarted": 0.4}
    cores = cores_between(before, after, 4.0)
    assert cores == {"pulsar": 1.0, "router": 0.5, "new": 0.25, "restarted": 0.1}
    assert list(cores) == ["pulsar", "router", "new", "restarted"]  # busiest first
    assert cores_between(before, after, 0.0) == {}


def test_slope() -> None:
    assert slope([(0, 0), (1, 2), (2, 4)]) == pytest.approx(2.0)
    assert slope([(0, 5)]) == 0.0
    assert slope([(1, 5), (1, 7)]) == 0.0


def test_backlog_growing() -> None:
    rate = 1000.0
    steady = [(t, 200 + (50 if t % 4 else -50)) for t in range(0, 60, 2)]
    assert not backlog_growing(steady, rate)
    growing = [(t, 100.0 * t) for t in range(0, 60, 2)]  # +100 msg/s = 10% of the rate
    assert backlog_growing(growing, rate)
    assert not backlog_growing(growing, rate, after=100)  # too few samples after: no verdict
    small = [(t, 10.0 * t) for t in range(0, 60, 2)]  # 1% of the rate: under the 2% tolerance
    assert not backlog_growing(small, rate)
    early = [(t, 50.0 * t) for t in range(0, 20, 2)]  # growing but still under one second of messages
    assert not backlog_growing(early, rate)


def test_hold_reasons() -> None:
    ok = Hold(1000, 990, 400.0, 100.0, 0, {"router": False, "stats": False}, {"router": 5, "stats": 0})
    assert ok.sustained and ok.reasons == []
    bad = Hold(1000, 700, 1500.0, 900.0, 3, {"router": True, "stats": False}, {"router": 9000, "stats": 0})
    assert not bad.sustained
    assert bad.reasons == ["ingest took 700 msg/s", "p99 1,500 ms", "router backlog growing", "3 rows missing"]
    assert Hold(1000, 1000, None, None, 0, {}, {}).reasons == ["no statistics rows seen"]
    assert bad.to_json()["sustained"] is False


def test_capacity_is_the_rate_ingest_held_not_the_rate_asked() -> None:
    def hold(rate: float, ingest: float, p99: float = 400.0) -> Hold:
        return Hold(rate, ingest, p99, 100.0, 0, {"stats": False}, {"stats": 0})

    held_short, failed = hold(1000, 960), hold(1200, 1190, p99=1500.0)
    assert held_short.sustained and held_short.held == 960
    assert hold(500, 510).held == 500  # a burst over the rate is not capacity
    assert best_sustained([hold(500, 500), held_short, failed]) is held_short
    assert best_sustained([hold(990, 985), hold(1000, 955)]).rate == 990  # more messages, though asked less
    assert best_sustained([failed]) is None


def test_given_rates_are_each_held_once_in_order_whatever_the_outcome() -> None:
    given = GivenRates([3000, 5000, 4000])
    tried = []
    while (rate := given.next()) is not None:
        tried.append(rate)
        given.record(rate, sustained=rate < 4500)
    assert tried == [3000, 5000, 4000]


def test_rate_search_climbs_then_bisects_once() -> None:
    search = RateSearch([700, 250, 500, 1000], bisections=1)
    tried = []
    outcome = {250: True, 500: True, 700: False, 600: True}
    while (rate := search.next()) is not None:
        tried.append(rate)
        search.record(rate, outcome[rate])
    assert tried == [250, 500, 700, 600]
    assert search.best == 600 and search.failed == 700


def test_rate_search_without_any_sustained_rate() -> None:
    search = RateSearch([100, 200], bisections=1, descents=0)
    assert search.next() == 100
    search.record(100, False)
    assert search.next() is None and search.best is None


def test_rate_search_all_sustained() -> None:
    search = RateSearch([100, 200], bisections=2)
    for rate in (100, 200):
        assert search.next() == rate
        search.record(rate, True)
    assert search.next() is None and search.best == 200


# --- ingest --------------------------------------------------------------------------------------------------------
PERF_OUTPUT = """
12:00:10 INFO PerformanceProducer - Throughput produced:   13256 msg ---   1325.4 msg/s ---      1.1 Mbit/s  ---
12:00:20 INFO PerformanceProducer - Throughput produced:  326269 msg ---  28246.5 msg/s ---     23.1 Mbit/s  ---
12:00:30 INFO PerformanceProducer - Throughput produced:  300000 msg ---  30000.0 msg/s ---     23.1 Mbit/s  ---
12:00:31 INFO PerformanceProducer - Aggregated throughput stats --- 639525 records sent --- 20063.539 msg/s --- 13.1
"""


def test_pulsar_perf_rate_skips_the_warm_up_interval() -> None:
    rate, how = perf_rate(PERF_OUTPUT)
    assert rate == pytest.approx((28246.5 + 30000.0) / 2)
    assert "2 10-s intervals" in how and "639525 records sent" in how
    aggregate_only = "\n".join(line for line in PERF_OUTPUT.splitlines() if "Aggregated" in line)
    assert perf_rate(aggregate_only)[0] == pytest.approx(20063.539)
    with pytest.raises(ValueError):
        perf_rate("nothing useful")


# --- queries -------------------------------------------------------------------------------------------------------
def test_untuned_copy_has_small_segments_and_no_index(settings: Settings) -> None:
    tuned = render_table(settings, "matches").table
    untuned = untuned_config(tuned, "copy")
    index = untuned["tableIndexConfig"]
    assert untuned["tableName"] == untuned["segmentsConfig"]["schemaName"] == "copy"
    assert index["sortedColumn"] == index["invertedIndexColumns"] == index["rangeIndexColumns"] == []
    assert index["streamConfigs"]["realtime.segment.flush.threshold.rows"] == "10000"
    assert index["streamConfigs"]["stream.pulsar.topic.name"] == tuned["tableIndexConfig"]["streamConfigs"][
        "stream.pulsar.topic.name"]
    assert index["enableDefaultStarTree"] is False and "starTreeIndexConfigs" not in index
    assert untuned["ingestionConfig"] == tuned["ingestionConfig"]  # same rows: time column, transforms
    assert tuned["tableIndexConfig"]["sortedColumn"] == ["product_id"]  # the original is untouched


def test_candidate_tunings(settings: Settings) -> None:
    spec = render_table(settings, "ticker_stats")
    config = spec.table
    for tuning in CANDIDATES["timesorted_raw"]:
        config = tuning(spec.schema, config)
    index = config["tableIndexConfig"]
    assert index["sortedColumn"] == ["event_time"] and index["rangeIndexColumns"] == []
    assert {"price", "ewma_mean", "rolling_var"} <= set(index["noDictionaryColumns"])
    flush = "realtime.segment.flush.threshold.rows"
    shipped = render_table(settings, "ticker_stats").table["tableIndexConfig"]["streamConfigs"][flush]
    assert index["streamConfigs"][flush] == shipped == "20000"  # unchanged


def test_minute_star_tree_candidate_adds_the_column_and_times_the_minute_sql(settings: Settings) -> None:
    spec = render_table(settings, "matches")
    schema, config = spec.schema, spec.table
    for tuning in CANDIDATES["minute_startree"]:
        config = tuning(schema, config)
    assert MINUTE_COLUMN in {f["name"] for f in schema["dateTimeFieldSpecs"]}
    assert {"columnName": MINUTE_COLUMN, "transformFunction": "round(event_ms, 60000)"} in (
        config["ingestionConfig"]["transformConfigs"])
    tree = config["tableIndexConfig"]["starTreeIndexConfigs"][0]
    assert tree["dimensionsSplitOrder"] == [MINUTE_COLUMN, "side", "product_id"] and "SUM__size" in (
        tree["functionColumnPairs"])
    assert config["tableIndexConfig"]["streamConfigs"]["realtime.segment.flush.threshold.rows"] == "20000"
    rewrite = CANDIDATE_SQL["minute_startree"]
    minute = "SELECT DATE_TRUNC('minute', event_time) AS t, SUM(size) FROM m WHERE event_time >= 1 GROUP BY t"
    assert rewrite(minute) == minute.replace("event_time", MINUTE_COLUMN)
    latest = "SELECT product_id, LASTWITHTIME(price, event_time, 'DOUBLE') FROM m GROUP BY product_id"
    assert rewrite(latest) == latest


def test_statements_and_table_substitution() -> None:
    text = "SELECT a FROM t \nWHERE x = 1 LIMIT 1;\n\nSELECT b FROM t\n LIMIT 10;\n"
    assert statements(text) == ["SELECT a FROM t \nWHERE x = 1 LIMIT 1", "SELECT b FROM t\n LIMIT 10"]
    assert statements("") == []
    sql = "SELECT t_x.a FROM bench_1_coinbase_ticker WHERE s = 'bench_1_coinbase_ticker_stats'"
    assert for_table(sql, "bench_1_coinbase_ticker", "copy") == (
        "SELECT t_x.a FROM copy WHERE s = 'bench_1_coinbase_ticker_stats'")


def test_raw_forms_ask_the_same_window_of_the_raw_table(settings: Settings) -> None:
    """Charts moved to a table built for them are timed against their question on the raw table's untuned copy,
    over the same window."""
    from rtca.superset.bundle import load_bundle, of_kind

    charts = {str(c["slice_name"]) for c in of_kind(load_bundle(settings), "chart").values()}
    assert set(RAW_FORMS) <= charts and {raw for raw, _ in RAW_FORMS.values()} <= {"matches", "ticker", "book"}
    minute = ("SELECT event_time, product_id, SUM(spread_bps_sum) / SUM(updates) \nFROM book_minute \nWHERE "
              "event_time >= '2026-11-29 00:21:09.000000' AND event_time < '2026-11-29 01:21:09.000000' GROUP BY 1, 2")
    before = raw_form("Spread (bps)", minute, "b_untuned")
    assert "AVG(spread_bps)" in before and "FROM b_untuned" in before and "book_minute" not in before
    assert "event_time >= '2026-11-29 00:21:09.000000' AND event_time < '2026-11-29 01:21:09.000000'" in before
    sql = ("SELECT CAST(DATE_TRUNC('minute', CAST(event_time AS TIMESTAMP)) AS TIMESTAMP), product_id, "
           "SUM(buy_volume + sell_volume) \nFROM bench_1_coinbase_trade_flow \nWHERE event_time >= "
           "'2026-11-29 00:21:09.000000' AND event_time < '2026-11-29 01:21:09.000000' GROUP BY 1, 2")
    raw = raw_form("Traded volume per minute", sql, "m_untuned")
    assert "FROM m_untuned" in raw and "SUM(size)" in raw and "trade_flow" not in raw
    assert "event_time >= '2026-11-29 00:21:09.000000' AND event_time < '2026-11-29 01:21:09.000000'" in raw
    latest = ("SELECT product_id, LASTWITHTIME(price, event_ms, 'DOUBLE') \nFROM bench_1_coinbase_ticker_latest"
              " \nWHERE x")
    assert raw_form("Latest ticker per product", latest, "t_untuned") == latest.replace(
        "bench_1_coinbase_ticker_latest", "t_untuned")
    with pytest.raises(ValueError, match="no time window"):
        raw_form("1-minute candles", "SELECT 1 FROM x", "y")
    candles = ("SELECT event_time, product_id, MAX(high_price) \nFROM bench_1_coinbase_trade_flow \nWHERE "
               "event_time >= '2026-11-29 00:21:09.000000' AND event_time < '2026-11-29 01:21:09.000000' GROUP BY 1, 2 "
               "ORDER BY "
               "MAX(event_ms) DESC\n LIMIT {}")
    for limit in (100, 10000):  # the untuned reference returns as many rows as the chart asks for
        before = raw_form("1-minute candles", candles.format(limit), "m_untuned")
        assert before.endswith(f"DESC\n LIMIT {limit}") and "FROM m_untuned" in before and "MAX(price)" in before


def test_consumed_records_of_tables_whose_rows_are_not_records(settings: Settings) -> None:
    latest, rollup, ticker = (render_table(settings, k) for k in ("ticker_latest", "book_minute", "ticker"))
    assert consumed_sql("t", latest.table) == "SELECT COUNT(*) FROM t OPTION(skipUpsert=true)"
    assert consumed_sql("t", rollup.table) == "SELECT SUM(updates) FROM t"
    assert consumed_sql("t", ticker.table) == "SELECT COUNT(*) FROM t"


def test_pin_now() -> None:
    context = {"queries": [{"filters": [{"op": "TEMPORAL_RANGE",
                                         "val": 'DATEADD(DATETIME("now"), -15, minute) : now'}]}],
               "form_data": {"time_range": "No filter", "viz": "now"}}
    pinned = pin_now(context, "2026-11-28T23:00:00")
    assert pinned["queries"][0]["filters"][0]["val"] == (
        'DATEADD(DATETIME("2026-11-28T23:00:00"), -15, minute) : 2026-11-28T23:00:00')
    assert pinned["form_data"] == context["form_data"]
    assert context["queries"][0]["filters"][0]["val"].endswith(": now")  # a copy


def test_tile_shifts_every_time_field() -> None:
    base = {"ticker": [{"event_ms": 1000, "received_ms": 1002, "price": 1.0}, {"event_ms": 1500, "sequence": 7}],
            "feed_health": [{"ts_ms": 1000, "last_message_ms": 999, "kind": "tick"}]}
    tiled = tile(base, tiles=3, period_ms=1000, limit={"ticker": 5})
    assert [r["event_ms"] for r in tiled["ticker"]] == [1000, 1500, 2000, 2500, 3000]
    assert tiled["ticker"][2]["received_ms"] == 2002 and tiled["ticker"][3]["sequence"] == 7
    assert [(r["ts_ms"], r["last_message_ms"]) for r in tiled["feed_health"]] == [(1000, 999), (2000, 1999),
                                                                                  (3000, 2999)]
    assert base["ticker"][0]["event_ms"] == 1000  # the base is left alone


def test_bench_rules_scale_only_price_and_spread() -> None:
    rules = [{"name": "a", "kind": "price_move", "threshold": 1.0, "clear": 0.8},
             {"name": "b", "kind": "feed_stalled", "threshold": 10.0}]
    scaled = bench_rules(rules)
    assert scaled[0]["threshold"] == pytest.approx(0.05) and scaled[0]["clear"] == pytest.approx(0.04)
    assert scaled[1] == rules[1] and rules[0]["threshold"] == 1.0


# --- start-up ------------------------------------------------------------------------------------------------------
def test_startup_environment_moves_every_port_and_the_run_dir(settings: Settings, tmp_path: Path) -> None:
    env = bench_environment(settings, tmp_path / "stack", 20_000)
    ports = port_fields(settings)
    assert {"RTCA_PULSAR__BROKER_PORT", "RTCA_PULSAR__WEB_PORT", "RTCA_PULSAR__BOOKIE_PORT",
            "RTCA_PINOT__ZOOKEEPER_PORT", "RTCA_PINOT__CONTROLLER_PORT", "RTCA_PINOT__BROKER_PORT",
            "RTCA_PINOT__SERVER_PORT", "RTCA_PINOT__SERVER_ADMIN_PORT", "RTCA_PINOT__SERVER_GRPC_PORT",
            "RTCA_SUPERSET__PORT"} == set(ports)
    for name, port in ports.items():
        assert int(env[name]) == port + 20_000
    assert env["RTCA_RUN_DIR"] == str(tmp_path / "stack")
    own = bench_settings(env)
    assert own.run_dir == tmp_path / "stack" and own.pulsar.broker_port == settings.pulsar.broker_port + 20_000
    assert own.superset.url.endswith(str(settings.superset.port + 20_000))
    assert "RTCA_RUN_DIR" not in __import__("os").environ or __import__("os").environ["RTCA_RUN_DIR"] != env[
        "RTCA_RUN_DIR"]  # our own environment is restored


def test_startup_refuses_the_projects_run_dir_or_no_offset(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        bench_environment(settings, settings.run_dir, 20_000)
    with pytest.raises(ConfigError):
        bench_environment(settings, tmp_path, 0)
    with pytest.raises(ConfigError):
        bench_environment(settings, tmp_path, 60_000)  # 8080 + 60000 is not a port


# --- CLI -----------------------------------------------------------------------------------------------------------
def test_cli_bench_arguments() -> None:
    args = build_parser().parse_args(["bench", "freshness", "queries", "--quick", "--out", "/tmp/x"])
    assert args.names == ["freshness", "queries"] and args.quick and args.out == "/tmp/x" and not args.keep
    assert build_parser().parse_args(["bench"]).names == []
    assert build_parser().parse_args(["bench", "queries", "--products", "8"]).products == 8
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--products", "0"])


def test_suite_refuses_unknown_names(settings: Settings, tmp_path: Path) -> None:
    from rtca.bench.suite import run_suite

    with pytest.raises(ConfigError):
        run_suite(settings, ["nope"], out_dir=tmp_path, say=lambda _: None)


def test_tiled_is_lazy_capped_and_stops_at_the_end() -> None:
    from rtca.bench.queries import tiled

    rows = [{"event_ms": 0}, {"event_ms": 400}]
    stream = tiled(rows, tiles=1000, period_ms=1000, cap=3)
    assert next(stream) == {"event_ms": 0}  # a generator: nothing is built ahead
    assert [r["event_ms"] for r in stream] == [400, 1000]
    ended = tiled(rows, tiles=3, period_ms=1000, until=("event_ms", 1000))
    assert [r["event_ms"] for r in ended] == [0, 400, 1000]


def test_data_plan_ends_every_table_with_the_last_ticker() -> None:
    from rtca.bench.queries import dataset

    end = 1_700_000_000_000  # the router refuses times before 1971 (Pinot's range)
    plan = dataset(300, products=3, base_tickers=100, span_ms=60_000, end_ms=end, say=lambda _: None)
    tickers = list(plan.rows("ticker"))
    assert len(tickers) == 300 == plan.info["rows"]["ticker"]
    assert plan.end_ms == max(r["event_ms"] for r in tickers)
    assert plan.tiles >= 3 and end - 60_000 <= tickers[0]["event_ms"] < plan.end_ms <= end
    for key in ("ticker_stats", "matches", "book", "feed_health"):
        field = "ts_ms" if key == "feed_health" else "event_ms"
        assert all(r[field] <= plan.end_ms for r in plan.rows(key)), key
    assert len(list(plan.rows("ticker_stats"))) == plan.info["rows"]["ticker_stats"] >= 290
    assert plan.info["rows"]["book"] > 0 and plan.info["rows"]["feed_health"] > 0


def test_queries_refuses_unknown_candidates(settings: Settings) -> None:
    from rtca.bench import queries

    with pytest.raises(ConfigError):
        queries.run(settings, candidates=["nope"], say=lambda _: None)
    args = build_parser().parse_args(["bench", "queries", "--candidates", "timesorted,rawmetrics"])
    assert args.candidates == "timesorted,rawmetrics"


def test_rate_search_descends_when_even_the_lowest_rate_fails() -> None:
    search = RateSearch([800, 1600], bisections=1, descents=2)
    tried = []
    outcome = {800: False, 400: False, 200: True, 300: True}
    while (rate := search.next()) is not None:
        tried.append(rate)
        search.record(rate, outcome[rate])
    assert tried == [800, 400, 200, 300] and search.best == 300
    search = RateSearch([800], bisections=0, descents=2)
    for rate in (800, 400, 200):
        assert search.next() == rate
        search.record(rate, False)
    assert search.next() is None and search.best is None
    # after a descent found a sustained rate, one bisection towards the lowest failed one
    search = RateSearch([800], bisections=1, descents=2)
    for rate, ok in ((800, False), (400, True)):
        assert search.next() == rate
        search.record(rate, ok)
    assert search.next() == 600


def test_functions_are_judged_against_the_identity_deployed_as_they_are() -> None:
    """The goal's reference is the publishing identity (MANUAL, our Publisher); the runtime's own identity, slower
    here, is context only: judged against it, a function doing more work than an identity came out at 122%."""
    from rtca.bench.functions_e2e import PAIRS, REFERENCE, RUNTIME, Measured, summarise

    rates = {"router": 600.0, "stats": 700.0, REFERENCE: 1000.0, RUNTIME: 500.0}
    measured = {(who, kind): Measured(rates=[rates[who]], cpu_us=[1e6 / rates[who]])
                for name, kind in PAIRS for who in (REFERENCE, RUNTIME, name)}  # fmt: skip
    rounds = [{"ratios": {f"{name}_to_{who}": rates[name] / rates[who] for name, _ in PAIRS
                          for who in (REFERENCE, RUNTIME)}}]  # fmt: skip
    figures = summarise(measured, rounds)
    assert figures["router_ratio"] == pytest.approx(0.6) and figures["stats_ratio"] == pytest.approx(0.7)
    assert figures["router_identity_ratio"] == pytest.approx(1.2)
    assert figures["router_raw_median"] == 600.0 and figures["publishing_raw_median"] == 1000.0
    assert figures["identity_ticker_median"] == 500.0
    assert figures["router_cpu_ratio"] == pytest.approx(0.6)  # the reference's CPU per message / ours

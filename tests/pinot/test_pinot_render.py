"""The Pinot definitions under infra/pinot/ render into valid, complete REALTIME tables (no Pinot needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rtca.analytics.stats import FIELDS as STATS_FIELDS
from rtca.errors import ConfigError
from rtca.functions import routing
from rtca.pinot.client import stream_configs
from rtca.pinot.tables import (
    TableSpec,
    config_differences,
    deep_merge,
    render_table,
    render_tables,
    schema_differences,
    table_keys,
)
from rtca.settings import Settings, Tables
from rtca.stack.profiles import profile

KEYS = table_keys()


def columns(spec: TableSpec) -> dict[str, dict[str, object]]:
    return {f["name"]: f for kind in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs")
            for f in spec.schema.get(kind, [])}


@pytest.fixture(scope="module")
def specs(settings: Settings) -> dict[str, TableSpec]:
    return {spec.key: spec for spec in render_tables(settings)}


def test_every_workbench_table_has_a_schema_and_a_table_file(settings: Settings) -> None:
    root = settings.infra_dir / "pinot"
    assert set(KEYS) == set(Tables.model_fields)
    assert {"ticker", "ticker_stats", "matches", "book", "trade_flow", "volatility", "alerts", "dead_letter",
            "feed_health"} <= set(KEYS)
    for key in KEYS:
        assert (root / key / "schema.json").is_file() and (root / key / "table.json").is_file(), key


@pytest.mark.parametrize("key", KEYS)
def test_table_is_a_complete_realtime_table(specs: dict[str, TableSpec], settings: Settings, key: str) -> None:
    spec, name = specs[key], getattr(settings.tables, key)
    table, segments, index = spec.table, spec.table["segmentsConfig"], spec.table["tableIndexConfig"]
    assert spec.schema["schemaName"] == table["tableName"] == segments["schemaName"] == name
    assert table["tableType"] == "REALTIME"
    # retention and replication
    assert (segments["retentionTimeUnit"], int(segments["retentionTimeValue"])) == ("DAYS", 7)
    assert int(segments["replicasPerPartition"]) == int(segments["replication"]) == profile(settings).pinot_replication
    # the time column: a TIMESTAMP that Superset charts, filled from the record's epoch milliseconds
    cols = columns(spec)
    assert segments["timeColumnName"] == "event_time"
    transforms = {t["columnName"]: t["transformFunction"] for t in table["ingestionConfig"]["transformConfigs"]}
    if key in ROLLUPS:  # one row per product and minute: the time column is the minute of the record's event_ms
        granularity = "1:MINUTES"
        assert transforms["event_time"] == "round(event_ms, 60000)"
    else:
        granularity = "1:MILLISECONDS"
        assert transforms["event_time"] in cols and cols[transforms["event_time"]]["dataType"] == "LONG"
    assert spec.schema["dateTimeFieldSpecs"] == [{"name": "event_time", "dataType": "TIMESTAMP",
                                                  "format": "1:MILLISECONDS:EPOCH", "granularity": granularity}]
    assert all(column in cols for column in transforms), "a transform fills a column the schema lacks"
    # indexes: for the dashboards' filters and time ranges, on columns that exist
    assert index["nullHandlingEnabled"] is True
    assert "event_time" in index["rangeIndexColumns"]
    assert len(index["sortedColumn"]) == 1
    assert "product_id" in index["invertedIndexColumns"]
    for kind in ("sortedColumn", "invertedIndexColumns", "rangeIndexColumns", "noDictionaryColumns"):
        assert set(index[kind]) <= set(cols), f"{kind} names a column {key} does not have"
    # the stream: our topic, rendered by the one stream_configs()
    stream = index["streamConfigs"]
    topic = settings.topic(getattr(settings.topics, TOPIC_OF.get(key, key)))
    assert stream == stream_configs(settings, topic, offset_reset="smallest", flush_rows=FLUSH_ROWS.get(key, 100_000),
                                    flush_time="1h")


#: Tables with smaller segments: the consuming (mutable) segment, which Pinot scans about half as fast as a committed
#: one, stays a small part of what the dashboards read.
FLUSH_ROWS = {"ticker_stats": 20_000}
#: Tables Pinot aggregates as it ingests them.
ROLLUPS = ("book_minute",)


def test_the_book_per_minute_is_aggregated_at_ingestion(specs: dict[str, TableSpec]) -> None:
    """Pinot sums each product's book records of a minute into one row as it consumes the book topic: the
    dimensions are product and minute only (any other dimension would keep rows apart), the metrics are sums over the
    records (an average is sum / updates) without a dictionary, as Pinot requires for aggregation."""
    rollup, book = specs["book_minute"], specs["book"]
    assert rollup.topic == book.topic
    cols = columns(rollup)
    aggregations = {a["columnName"]: a["aggregationFunction"]
                    for a in rollup.table["ingestionConfig"]["aggregationConfigs"]}  # fmt: skip
    assert aggregations == {"updates": "COUNT(spread_bps)", "spread_bps_sum": "SUM(spread_bps)",
                            "imbalance_sum": "SUM(imbalance)"}  # fmt: skip
    assert set(cols) == {"product_id", "event_time", *aggregations}
    assert set(rollup.table["tableIndexConfig"]["noDictionaryColumns"]) == set(aggregations)
    for source in ("spread_bps", "imbalance"):
        assert columns(book)[source]["dataType"] == "DOUBLE"


#: Tables over another table's topic.
TOPIC_OF = {"ticker_latest": "ticker", "book_minute": "book"}


def test_the_latest_ticker_table_is_an_upsert_table_over_the_ticker_topic(specs: dict[str, TableSpec]) -> None:
    latest, ticker = specs["ticker_latest"], specs["ticker"]
    assert latest.topic == ticker.topic
    assert latest.schema["primaryKeyColumns"] == ["product_id"]
    assert columns(latest) == columns(ticker)  # the schema extends the ticker's
    assert latest.table["upsertConfig"] == {"mode": "FULL", "comparisonColumn": "event_ms"}
    # Pinot serves an upsert table only with replica-group routing (each partition's rows on one server)
    assert latest.table["routing"]["instanceSelectorType"] == "strictReplicaGroup"
    assert "extends" not in latest.schema and "upsertConfig" not in ticker.table


def test_a_schema_extends_only_another_table(settings: Settings, tmp_path: Path) -> None:
    shutil.copytree(settings.infra_dir / "pinot", tmp_path / "pinot")
    moved = settings.model_copy(update={"infra_dir": tmp_path})
    schema = tmp_path / "pinot" / "ticker_latest" / "schema.json"
    for base in ("ticker_latest", "nothing"):
        schema.write_text(json.dumps({"extends": base, "schemaName": "${TABLE}"}))
        with pytest.raises(ConfigError, match="not another table"):
            render_table(moved, "ticker_latest")
    schema.write_text(json.dumps({"extends": "ticker", "schemaName": "${TABLE}"}))
    (tmp_path / "pinot" / "ticker" / "schema.json").write_text(json.dumps({"extends": "ticker_latest"}))
    with pytest.raises(ConfigError, match="extends it back"):
        render_table(moved, "ticker_latest")


def test_columns_carry_the_record_contract(specs: dict[str, TableSpec]) -> None:
    """The typed records' fields (router shapes, statistics) have columns of a fitting type."""
    numeric = {"DOUBLE", "LONG", "INT", "FLOAT"}
    ticker, matches, stats = columns(specs["ticker"]), columns(specs["matches"]), columns(specs["ticker_stats"])
    for table, shape in ((ticker, routing.SHAPES["ticker"]), (matches, routing.SHAPES["match"])):
        for field in shape.fields:
            assert field in table, f"{field} of {shape.channel} has no column"
    for table in (ticker, matches, stats):
        assert {"product_id", "event_ms", "received_ms"} <= set(table)
        assert table["price"]["dataType"] in numeric
    for field in STATS_FIELDS:
        assert stats[field]["dataType"] == "DOUBLE"
    dead = columns(specs["dead_letter"])
    assert {"reason", "detail", "source_topic", "source_message_id", "payload", "payload_b64",
            "payload_bytes"} <= set(dead)
    assert int(dead["payload"]["maxLength"]) >= routing.MAX_DEAD_LETTER_PAYLOAD


def test_placeholders_follow_settings(settings: Settings) -> None:
    renamed = settings.model_copy(update={"tables": Tables(ticker="my_ticker"),
                                          "topics": settings.topics.model_copy(update={"ticker": "my-ticker"})})
    spec = render_table(renamed, "ticker")
    assert spec.name == spec.table["tableName"] == spec.schema["schemaName"] == "my_ticker"
    assert spec.topic == renamed.topic("my-ticker")
    assert "${" not in json.dumps(spec.table) + json.dumps(spec.schema)


def test_unknown_placeholder_or_table_is_an_error(settings: Settings, tmp_path: Path) -> None:
    shutil.copytree(settings.infra_dir / "pinot", tmp_path / "pinot")
    table = tmp_path / "pinot" / "ticker" / "table.json"
    table.write_text(json.dumps({"metadata": {"customConfigs": {"owner": "${NOBODY}"}}}))
    with pytest.raises(ConfigError, match="NOBODY"):
        render_table(settings.model_copy(update={"infra_dir": tmp_path}), "ticker")
    with pytest.raises(ConfigError, match="unknown Pinot table"):
        render_table(settings, "nope")


def test_stream_keys_other_than_the_table_specific_ones_are_refused(settings: Settings, tmp_path: Path) -> None:
    shutil.copytree(settings.infra_dir / "pinot", tmp_path / "pinot")
    table = tmp_path / "pinot" / "ticker" / "table.json"
    table.write_text(json.dumps({"tableIndexConfig": {"streamConfigs": {"stream.pulsar.bootstrap.servers": "x"}}}))
    with pytest.raises(ConfigError, match="not table-specific"):
        render_table(settings.model_copy(update={"infra_dir": tmp_path}), "ticker")


@pytest.mark.parametrize("rows", ["20k", "0", "-5", "1e5", 1.5])
def test_a_flush_row_count_that_is_not_a_whole_number_is_a_config_error(settings: Settings, tmp_path: Path,
                                                                        rows: object) -> None:
    shutil.copytree(settings.infra_dir / "pinot", tmp_path / "pinot")
    table = tmp_path / "pinot" / "ticker" / "table.json"
    config = json.loads(table.read_text())
    config.setdefault("tableIndexConfig", {}).setdefault("streamConfigs", {})[
        "realtime.segment.flush.threshold.rows"] = rows
    table.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="ticker/table.json: realtime.segment.flush.threshold.rows"):
        render_table(settings.model_copy(update={"infra_dir": tmp_path}), "ticker")


def test_deep_merge_merges_objects_and_replaces_lists() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    assert deep_merge(base, {"a": {"y": [3]}, "c": 2}) == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}


def test_differences_ignore_what_pinot_adds_and_see_what_we_change() -> None:
    desired = {"tableName": "t", "segmentsConfig": {"retentionTimeValue": "7", "replication": "1"},
               "tableIndexConfig": {"invertedIndexColumns": ["product_id"]}}
    stored = {"tableName": "t", "isDimTable": False,
              "segmentsConfig": {"retentionTimeValue": "7", "replication": 1, "minimizeDataMovement": False},
              "tableIndexConfig": {"invertedIndexColumns": ["product_id"], "rangeIndexVersion": 2}}
    assert config_differences(desired, stored) == []
    stored["tableIndexConfig"]["invertedIndexColumns"] = []
    stored["segmentsConfig"]["retentionTimeValue"] = "3"
    assert config_differences(desired, stored) == ["/segmentsConfig/retentionTimeValue",
                                                   "/tableIndexConfig/invertedIndexColumns"]


def test_schema_differences_by_field() -> None:
    want = {"dimensionFieldSpecs": [{"name": "a", "dataType": "STRING"}],
            "metricFieldSpecs": [{"name": "m", "dataType": "DOUBLE"}]}
    have = {"dimensionFieldSpecs": [{"name": "a", "dataType": "STRING", "singleValueField": True}],
            "metricFieldSpecs": [{"name": "m", "dataType": "DOUBLE"}]}
    assert schema_differences(want, have) == []
    have["metricFieldSpecs"] = [{"name": "m", "dataType": "LONG"}, {"name": "old", "dataType": "LONG"}]
    want["dimensionFieldSpecs"].append({"name": "new", "dataType": "STRING"})
    assert schema_differences(want, have) == ["+new", "-old", "m.dataType"]


def test_a_changed_primary_key_or_a_dropped_section_is_a_difference() -> None:
    """Found by review: both read "unchanged", so the change never reached Pinot."""
    assert schema_differences({"primaryKeyColumns": ["a"]}, {"primaryKeyColumns": ["b"]}) == ["primaryKeyColumns"]
    assert schema_differences({"primaryKeyColumns": []}, {}) == []
    stored = {"tableName": "t", "upsertConfig": {"mode": "FULL"}, "routing": {"instanceSelectorType": "x"},
              "ingestionConfig": {"transformConfigs": [], "aggregationConfigs": [{"columnName": "n"}]}}
    desired = {"tableName": "t", "ingestionConfig": {"transformConfigs": []}}
    assert config_differences(desired, stored) == ["-/upsertConfig", "-/routing", "-/ingestionConfig/aggregationConfigs"]
    assert config_differences(stored, stored) == []

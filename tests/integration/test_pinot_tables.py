"""`rtca pinot apply` and `rtca pinot status` against the real stack, and the tables filled by the real pipeline."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cleanup import drop_topics
from waiting import wait_for

from rtca.pinot.client import PinotClient
from rtca.pinot.queries import candles_sql
from rtca.pinot.tables import apply_tables, delete_tables, pinot_status, render_tables, table_keys
from rtca.settings import Settings, Tables, Topics

pytestmark = pytest.mark.stack


@pytest.fixture
def pinot(stack_up: Settings) -> Iterator[PinotClient]:
    with PinotClient(stack_up) as client:
        yield client


def test_apply_twice_changes_nothing_the_second_time(stack_up: Settings, pinot: PinotClient) -> None:
    first = apply_tables(stack_up)
    second = apply_tables(stack_up)
    for result in first + second:
        print(result)
    assert [r.table for r in first] == [getattr(stack_up.tables, k) for k in table_keys()]
    assert [r.action for r in second] == ["unchanged"] * len(table_keys())
    for key in table_keys():
        name = getattr(stack_up.tables, key)
        assert pinot.table(name) is not None and pinot.schema(name) is not None, name
    listed = httpx.get(f"{stack_up.pinot.controller_url}/tables", timeout=30).json()["tables"]
    for key in table_keys():  # one table per name, no leftovers of another type
        assert listed.count(getattr(stack_up.tables, key)) == 1


@pytest.fixture
def scratch(stack_up: Settings, tmp_path: Path, unique: str) -> Iterator[Settings]:
    """Settings with the workbench's definitions copied to a temporary infra dir, on tables and topics of their own."""
    shutil.copytree(stack_up.infra_dir / "pinot", tmp_path / "pinot")
    settings = stack_up.model_copy(update={
        "infra_dir": tmp_path,
        "tables": Tables(**{k: f"it_{unique}_{v}" for k, v in stack_up.tables.model_dump().items()}),
        "topics": Topics(**{k: f"it-{unique}-{v}" for k, v in stack_up.topics.model_dump().items()}),
    })
    yield settings
    delete_tables(settings, ["ticker_stats"])
    drop_topics(stack_up, [settings.topic(settings.topics.ticker_stats)])


def test_a_changed_schema_or_table_is_updated(scratch: Settings, pinot: PinotClient) -> None:
    name = scratch.tables.ticker_stats
    (created,) = apply_tables(scratch, ["ticker_stats"])
    assert (created.schema, created.config) == ("created", "created")

    folder = scratch.infra_dir / "pinot" / "ticker_stats"
    schema = json.loads((folder / "schema.json").read_text())
    schema["metricFieldSpecs"].append({"name": "added_metric", "dataType": "DOUBLE"})
    (folder / "schema.json").write_text(json.dumps(schema))
    table = json.loads((folder / "table.json").read_text())
    table.setdefault("segmentsConfig", {})["retentionTimeValue"] = "3"
    (folder / "table.json").write_text(json.dumps(table))

    (updated,) = apply_tables(scratch, [name])  # by table name this time
    print(updated)
    assert (updated.schema, updated.config) == ("updated", "updated")
    assert "schema +added_metric" in updated.changes
    assert "table /segmentsConfig/retentionTimeValue" in updated.changes
    assert any(f["name"] == "added_metric" for f in pinot.schema(name)["metricFieldSpecs"])
    assert pinot.table(name)["segmentsConfig"]["retentionTimeValue"] == "3"
    (again,) = apply_tables(scratch, ["ticker_stats"])
    assert (again.schema, again.config) == ("unchanged", "unchanged")


def test_recreate_drops_a_table_and_it_reads_its_topic_again(scratch: Settings, pinot: PinotClient,
                                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The way out of a schema change Pinot refuses (a dropped column) or of a table that stopped taking rows."""
    import orjson

    from rtca.cli import cmd_pinot_apply
    from rtca.feed.sinks import pulsar_client

    name = scratch.tables.ticker_stats
    apply_tables(scratch, ["ticker_stats"])
    client = pulsar_client(scratch)
    try:
        producer = client.create_producer(scratch.topic(scratch.topics.ticker_stats))
        now = int(time.time() * 1000)
        for i in range(5):
            producer.send(orjson.dumps({"product_id": "RC-USD", "event_ms": now + i, "price": 1.0 + i}))
        producer.flush()
    finally:
        client.close()
    count = f"SELECT COUNT(*) FROM {name}"
    wait_rows(pinot, count, 5)
    folder = scratch.infra_dir / "pinot" / "ticker_stats"
    schema = json.loads((folder / "schema.json").read_text())
    schema["metricFieldSpecs"] = [f for f in schema["metricFieldSpecs"] if f["name"] != "ewma_var"]
    (folder / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(Exception, match="(?i)backward.compatible|incompatible|400"):
        apply_tables(scratch, ["ticker_stats"])  # Pinot refuses to drop a column in place

    assert cmd_pinot_apply(scratch, argparse.Namespace(names=["ticker_stats"], recreate=True)) == 0
    out = capsys.readouterr().out
    assert f"{name}: dropped" in out and f"{name}: created" in out
    assert not any(f["name"] == "ewma_var" for f in pinot.schema(name)["metricFieldSpecs"])
    wait_rows(pinot, count, 5)  # read again from the start of its topic


def test_a_new_table_gets_its_topic_first(scratch: Settings) -> None:
    """The plugin never creates a topic (a misspelt one was consumed empty forever): a new table's comes first."""
    topic = scratch.topic(scratch.topics.ticker_stats)
    assert not _topic_exists(scratch, topic)
    apply_tables(scratch, ["ticker_stats"])
    assert _topic_exists(scratch, topic)


def test_a_table_on_a_misspelt_topic_is_refused_and_the_topic_left_missing(scratch: Settings,
                                                                           pinot: PinotClient) -> None:
    (spec,) = render_tables(scratch, ["ticker_stats"])
    misspelt = f"{scratch.topic(scratch.topics.ticker_stats)}-typo"
    pinot.put_schema(spec.schema)
    table = json.loads(json.dumps(spec.table))
    table["tableIndexConfig"]["streamConfigs"]["stream.pulsar.topic.name"] = misspelt
    try:  # past PinotClient.put_table, which creates a new table's topic
        response = httpx.post(f"{scratch.pinot.controller_url}/tables", json=table, timeout=60)
        print(response.status_code, response.text[:500])
        assert response.status_code >= 400 and f"{misspelt} does not exist" in response.text
        assert not _topic_exists(scratch, misspelt)
    finally:
        drop_topics(scratch, [misspelt])


def _topic_exists(settings: Settings, topic: str) -> bool:
    path = f"{settings.pulsar.admin_url}/admin/v2/{topic.replace('://', '/', 1)}"
    return any(httpx.get(f"{path}/{what}", timeout=30).status_code == 200 for what in ("stats", "partitioned-stats"))


def wait_rows(pinot: PinotClient, sql: str, rows: int) -> None:
    def counted() -> bool:
        try:
            return bool(pinot.query(sql)[0][0] >= rows)
        except Exception:  # noqa: BLE001 - a table just created answers with an error until it is loaded
            return False

    wait_for(counted, timeout=120, what=f"{rows} rows: {sql}")


def test_status_and_tables_filled_by_the_pipeline(stack_up: Settings, pinot: PinotClient) -> None:
    from live_data import seed_live_data, simulator_products

    data = seed_live_data(stack_up)
    print(data)
    status = {row.table: row for row in pinot_status(stack_up)}
    for row in status.values():
        print(row)
    since = data.started_ms - 60_000
    for key in table_keys():
        name = getattr(stack_up.tables, key)
        row = status[name]
        assert row.exists and not row.error, row
        assert row.consuming >= 1, f"{name}: no consuming segment"
        assert row.rows and row.rows >= data.rows[name] > 0, f"{name}: no rows from this run"
        assert row.newest_ms is not None and row.newest_ms >= since, f"{name}: newest event is old"
    # the time column is a TIMESTAMP near the records' epoch milliseconds
    (ts, ms), = pinot.query(f"SELECT event_time, event_ms FROM {stack_up.tables.ticker} "
                            f"WHERE event_ms >= {since} ORDER BY event_ms DESC LIMIT 1")
    assert isinstance(ts, str) and ts.startswith(time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))), ts
    # JSON nulls (statistics warm-up rows) stay null in Pinot, not 0: exactly this run's records with no rolling mean,
    # counted on the seeding's simulated products, which are its own (an ingest running beside the tests, as runbook
    # 40's may on a reused stack, replays the capture's products and keeps adding their rows after the records were
    # read back)
    own = set(simulator_products(data.started_ms))
    produced = [record for record in data.records["ticker_stats"] if record["product_id"] in own]
    products = ", ".join(f"'{product}'" for product in sorted(own))
    stats, run = stack_up.tables.ticker_stats, f"product_id IN ({products})"
    nulls = sum(1 for record in produced if record.get("rolling_mean") is None)
    assert produced and nulls > 0, "the simulated products' warm-up rows"
    in_pinot = pinot.count(stats, f"WHERE {run} AND rolling_mean IS NULL")
    print(f"ticker stats of this run: {len(produced)} records, {nulls} without a rolling mean; Pinot: {in_pinot} "
          f"IS NULL, {pinot.count(stats, f'WHERE {run}')} rows")
    assert in_pinot == nulls
    assert pinot.count(stats, f"WHERE {run} AND rolling_mean IS NOT NULL") == len(produced) - nulls
    assert pinot.count(stats, "WHERE rolling_mean IS NULL") > 0  # some product warmed up at some point
    # the notebooks' candles (rtca.pinot.queries) run on the table and add up to its trades (of a simulated product:
    # an ingest beside the tests would add trades of its own between the two queries)
    (product, trades), = pinot.query(f"SELECT product_id, COUNT(*) FROM {stack_up.tables.matches} WHERE {run} AND "
                                     f"event_time > ago('PT60M') GROUP BY product_id ORDER BY COUNT(*) DESC LIMIT 1")
    bars = pinot.query(candles_sql(stack_up, product, minutes=60))
    print(f"{product}: {len(bars)} one-minute candles over {trades} trades")
    assert sum(int(bar[-1]) for bar in bars) == trades
    assert all(low <= min(o, c) <= max(o, c) <= high for _, o, high, low, c, *_ in bars)
    # the hostile frames ended as dead letters, the dropped connection and skipped trades in feed health
    dead = pinot.count(stack_up.tables.dead_letter, f"WHERE event_ms >= {since}")
    (reconnects, gaps), = pinot.query(f"SELECT MAX(reconnects), MAX(gaps) FROM {stack_up.tables.feed_health} "
                                      f"WHERE ts_ms >= {since} AND kind = 'tick'")
    print(f"dead letters {dead}, reconnects {reconnects}, gaps {gaps}")
    assert dead >= 1 and reconnects >= 1 and gaps >= 1
    # and why the connection dropped, from the first tick after it on
    errors = pinot.query(f"SELECT last_error FROM {stack_up.tables.feed_health} WHERE ts_ms >= {since} "
                         f"AND kind = 'tick' AND reconnects >= 1 AND last_error IS NOT NULL LIMIT 1")
    print("last error after the reconnect:", errors)
    assert errors and errors[0][0] and errors[0][0] != "null", errors


def test_status_exits_3_for_a_missing_table_and_names_a_service_that_is_not_pinot(
        stack_up: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`rtca pinot status` exited 0 whatever it found (unlike `rtca status`), and a broker URL that reached another
    service printed 500 characters of its HTML page on every row."""
    from rtca.cli import main

    monkeypatch.setenv("RTCA_TABLES__TICKER", "status_test_no_such_table")
    assert main(["pinot", "status"]) == 3
    out = capsys.readouterr().out
    assert "status_test_no_such_table" in out and "missing" in out and "`rtca pinot apply`" in out
    monkeypatch.delenv("RTCA_TABLES__TICKER")
    monkeypatch.setenv("RTCA_PINOT__BROKER_URL_OVERRIDE", stack_up.superset.url)  # answers, but not as Pinot
    assert main(["pinot", "status"]) == 3
    out = capsys.readouterr().out
    assert "<" not in out and "text/html" in out and out.count("hint:") == 1, out

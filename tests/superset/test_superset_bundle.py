"""The Superset bundle under infra/superset/ is consistent, portable and round-trips through export (no Superset)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import yaml

from rtca.pinot.tables import render_tables
from rtca.settings import Settings
from rtca.stack.superset import pinot_sqlalchemy_uri
from rtca.superset.bundle import (
    FOLDERS,
    bundle_dir,
    bundle_problems,
    chart_uuids_of,
    for_import,
    load_bundle,
    normalise_export,
    of_kind,
    read_bundle,
)

DASHBOARDS = {"Market overview", "Order book", "Trade flow", "Volatility and alerts", "Feed health"}
SIMPLE_VIZ = {"echarts_timeseries_line", "echarts_timeseries_bar", "big_number_total", "big_number", "table"}


@pytest.fixture(scope="module")
def files(settings: Settings) -> dict[str, dict[str, Any]]:
    return load_bundle(settings)


@pytest.fixture(scope="module")
def pinot_columns(settings: Settings) -> dict[str, set[str]]:
    return {spec.name: {f["name"] for kind in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs")
                        for f in spec.schema[kind]} for spec in render_tables(settings)}


def test_uuids_link_up_and_the_database_is_the_registered_one(files: dict[str, dict[str, Any]],
                                                              settings: Settings) -> None:
    assert bundle_problems(files, settings) == []
    (database,) = of_kind(files, "database").values()
    assert database["database_name"] == settings.superset.database_name
    assert database["uuid"] == settings.superset.database_uuid
    assert database["sqlalchemy_uri"] == pinot_sqlalchemy_uri(settings), "not the URI `rtca up` registers"


def test_files_hold_placeholders_not_hosts_or_ports(settings: Settings) -> None:
    literals = re.compile(r"127\.0\.0\.1|localhost|:(8099|9000|8088|6650)\b")
    for path in sorted(bundle_dir(settings).rglob("*.yaml")):
        text = path.read_text()
        assert not literals.search(text), f"{path} has a literal host or port: {literals.search(text)}"
    raw = read_bundle(bundle_dir(settings))
    assert "${PINOT_BROKER_URL}" in raw["databases/pinot.yaml"]["sqlalchemy_uri"]
    assert all(ds["table_name"].startswith("${TABLE_") for ds in of_kind(raw, "dataset").values())


def test_one_dataset_per_table_with_the_pinot_columns(files: dict[str, dict[str, Any]],
                                                      pinot_columns: dict[str, set[str]]) -> None:
    datasets = {ds["table_name"]: ds for ds in of_kind(files, "dataset").values()}
    assert set(datasets) == set(pinot_columns)
    for table, ds in datasets.items():
        assert {c["column_name"] for c in ds["columns"]} == pinot_columns[table], table
        temporal = [c for c in ds["columns"] if c["is_dttm"]]
        assert [(c["column_name"], c["type"]) for c in temporal] == [("event_time", "TIMESTAMP")], table
        assert ds["main_dttm_col"] == "event_time"


def _columns_used(params: dict[str, Any]) -> set[str]:
    used = set(params.get("groupby") or []) | set(params.get("all_columns") or [])
    used |= {params["x_axis"]} if isinstance(params.get("x_axis"), str) else set()
    used |= {f["subject"] for f in params.get("adhoc_filters") or [] if f.get("expressionType") == "SIMPLE"}
    return used


def test_charts_are_simple_and_query_what_their_dataset_has(files: dict[str, dict[str, Any]]) -> None:
    datasets = {ds["uuid"]: ds for ds in of_kind(files, "dataset").values()}
    for name, chart in of_kind(files, "chart").items():
        params, context = chart["params"], chart["query_context"]
        assert chart["viz_type"] in SIMPLE_VIZ and params["viz_type"] == chart["viz_type"], name
        columns = {c["column_name"] for c in datasets[chart["dataset_uuid"]]["columns"]}
        assert _columns_used(params) <= columns, f"{name} uses columns its dataset lacks"
        # a saved query context is what /api/v1/chart/{id}/data/ runs: it must be the frontend's, for these params
        assert isinstance(context, dict) and context["queries"], f"{name} has no saved query context"
        assert {k: v for k, v in context["form_data"].items() if k != "annotation_layers"} == \
            {k: v for k, v in params.items() if k != "annotation_layers"}, f"{name}: query context is stale"
        for query in context["queries"]:
            ranges = [f["val"] for f in query["filters"] if f["op"] == "TEMPORAL_RANGE"]
            # live data needs a range relative to now: "Last day" ends at today's midnight and shows nothing
            assert all("now" in r or r == "No filter" for r in ranges), f"{name}: time range {ranges} is not live"
            if params.get("x_axis"):
                assert query["columns"][0]["columnType"] == "BASE_AXIS" and query["columns"][0]["timeGrain"], name



def test_charts_label_their_time_in_utc_and_total_only_what_adds_up(files: dict[str, dict[str, Any]]) -> None:
    """smart_date drew every axis label as "09 AM" (Superset hid the duplicates); every time is UTC; a tooltip total
    of price and bands, or of spreads of several products, means nothing; SMART_NUMBER showed 0.000335 as 335µ."""
    for name, chart in of_kind(files, "chart").items():
        params = chart["params"]
        if params.get("x_axis"):
            assert params["x_axis_time_format"] in ("%H:%M", "%H:%M:%S"), name
            assert params["tooltipTimeFormat"].endswith("UTC"), name
            adds_up = all(m["sqlExpression"].startswith(("SUM(", "COUNT(")) for m in params["metrics"])
            assert adds_up or not params["showTooltipTotal"], f"{name}: a tooltip total of what does not add up"
        if chart["viz_type"] == "table":
            assert not params["show_cell_bars"], name
            assert all(params["column_config"][m["label"]]["d3NumberFormat"] != "SMART_NUMBER"
                       for m in params["metrics"]), name


#: Products whose full hour of minutes the candles table holds (a stack has stored 110, 8 to 10 of them live).
CANDLE_PRODUCTS = 150


def test_the_candles_table_holds_its_whole_window_and_pages_it(files: dict[str, dict[str, Any]]) -> None:
    """With 100 rows the table showed 10 products' 10 newest minutes and Superset's "row limit reached" (it warns
    when a query returns row_limit rows): the row limit covers the window, the table's own pages and search show
    it."""
    chart = files["charts/1_minute_candles.yaml"]
    params, (query,) = chart["params"], chart["query_context"]["queries"]
    (window,) = [f["comparator"] for f in params["adhoc_filters"] if f.get("operator") == "TEMPORAL_RANGE"]
    assert window.startswith('DATEADD(DATETRUNC(DATETIME("now"), minute), -1, hour)'), window
    assert params["groupby"] == ["product_id", "event_time"] and params["time_grain_sqla"] == "PT1M"
    assert params["row_limit"] >= CANDLE_PRODUCTS * 60, params["row_limit"]
    assert query["row_limit"] == params["row_limit"]
    # Pinot 0.11 cannot run the row-count subquery of server pagination: the browser pages what the query returned
    assert params["server_pagination"] is False and 0 < params["page_length"] <= 20
    assert params["include_search"], "a product's minutes among thousands of rows: the table's Search finds them"
    assert "a page" in chart["description"]


def test_the_latest_alerts_table_holds_its_hour_and_pages_it(files: dict[str, dict[str, Any]]) -> None:
    """Its 50 rows hid the hour's older alerts under the same warning: an hour of alerts is a few hundred."""
    chart = files["charts/latest_alerts.yaml"]
    params, (query,) = chart["params"], chart["query_context"]["queries"]
    assert params["query_mode"] == "raw" and params["order_by_cols"] == ['["event_time", false]']
    assert params["row_limit"] == query["row_limit"] >= 10_000
    assert params["server_pagination"] is False and 0 < params["page_length"] <= 20 and params["include_search"]


#: Per-minute counts of events that come now and then: a bar of one minute alone spans the whole axis (ECharts sizes
#: bars on a time axis by the smallest gap between their times, and with one time by the axis' length).
SPARSE_COUNTS = ("charts/dead_letters_per_minute_by_reason.yaml", "charts/alerts_per_minute.yaml")


def test_sparse_per_minute_counts_are_zero_filled_points_not_bars(files: dict[str, dict[str, Any]]) -> None:
    for name in SPARSE_COUNTS:
        chart = files[name]
        params = chart["params"]
        assert chart["viz_type"] == "echarts_timeseries_line", f"{name}: a lone minute's bar spans the chart"
        assert params["markerEnabled"] and params["markerSize"] >= 4, f"{name}: a lone minute draws no line"
        assert (params["resample_rule"], params["resample_method"]) == ("1T", "zerofill"), name
        assert params["time_grain_sqla"] == "PT1M" and params["metrics"][0]["sqlExpression"] == "COUNT(*)"
        assert "stack" not in params and not params["area"], name


#: Per-minute volume bars of one product: bars as wide as the gaps between its traded minutes, without zero-filling.
ZERO_FILLED_BARS = ("charts/traded_volume_per_minute.yaml", "charts/buy_and_sell_volume_per_minute.yaml")


def test_resampled_charts_save_the_query_the_frontend_builds(files: dict[str, dict[str, Any]]) -> None:
    """Superset's frontend puts its resample step after the pivot (zerofill is asfreq with fill_value 0); the saved
    query context, which the chart-data API and the benchmark run, must do the same."""
    resampled = {name for name, chart in of_kind(files, "chart").items() if chart["params"].get("resample_rule")}
    assert resampled >= set(SPARSE_COUNTS) | set(ZERO_FILLED_BARS)
    for name in ZERO_FILLED_BARS:  # a quiet product's bars as wide as its gaps: one minute, zero between
        params = files[name]["params"]
        assert params["viz_type"] == "echarts_timeseries_bar" and params["time_grain_sqla"] == "PT1M", name
        assert (params["resample_rule"], params["resample_method"]) == ("1T", "zerofill"), name
    for name in resampled:
        params = files[name]["params"]
        zero = params["resample_method"] == "zerofill"
        options = {"method": "asfreq" if zero else params["resample_method"], "rule": params["resample_rule"],
                   "fill_value": 0 if zero else None}
        step = {"operation": "resample", "options": options}
        for query in files[name]["query_context"]["queries"]:
            operations = [p["operation"] for p in query["post_processing"]]
            assert operations[:2] == ["pivot", "resample"], f"{name}: {operations}"
            assert query["post_processing"][1] == step, name


def test_dashboards_refresh_and_hold_a_few_charts_each(files: dict[str, dict[str, Any]]) -> None:
    dashboards = {d["dashboard_title"]: d for d in of_kind(files, "dashboard").values()}
    assert DASHBOARDS <= set(dashboards)
    charts = {c["uuid"] for c in of_kind(files, "chart").values()}
    placed: list[str] = []
    for title, dash in dashboards.items():
        on_it = chart_uuids_of(dash)
        assert 2 <= len(on_it) <= 5, f"{title} has {len(on_it)} charts"  # a few: one screen, no scrolling
        assert dash["metadata"]["refresh_frequency"] > 0, f"{title}: auto-refresh is off"
        assert dash["slug"] and dash["published"]
        placed += on_it
    assert sorted(placed) == sorted(charts), "every chart on exactly one dashboard"


def test_dashboards_refresh_every_chart_at_once(files: dict[str, dict[str, Any]]) -> None:
    """Superset 6.1's auto-refresh spreads a round's chart requests over max(stagger_time, 0.2 x refresh_frequency)
    (stagger_time defaults to 5 s) unless `stagger_refresh` is false, and waits refresh_frequency after a round's
    last answer before the next round: 10 s dashboards refreshed every 15.2-17.7 s, all charts at once every
    10.7-14.0 s (infra/superset/README.md)."""
    for dash in of_kind(files, "dashboard").values():
        assert dash["metadata"].get("stagger_refresh") is False, f"{dash['dashboard_title']}: staggered refresh"


def time_filter_problems(files: dict[str, dict[str, Any]]) -> list[str]:
    """Why a dashboard's "Time range" filter (Superset's native `filter_time`) would not do what analysts expect.

    Each dashboard has exactly one, that starts empty: with no value the charts keep their own windows (the frontend
    only replaces the comparator of every TEMPORAL_RANGE filter of the charts in scope when the filter has a value).
    In its scope only charts with a TEMPORAL_RANGE filter relative to now (a chart without one would ignore the
    range) and no metric that counts to now (`NOW() - MAX(...)`: the latest values, for which a past range makes no
    sense); the charts out of its scope are named in its description, which says why."""
    charts = {c["uuid"]: c for c in of_kind(files, "chart").values()}
    problems = []
    for name, dash in of_kind(files, "dashboard").items():
        natives = (dash.get("metadata") or {}).get("native_filter_configuration") or []
        found = [n for n in natives if n.get("filterType") == "filter_time"]
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} time range filters (filter_time), not 1")
            continue
        (native,) = found
        default = native.get("defaultDataMask") or {}
        if (default.get("filterState") or {}).get("value") is not None or default.get("extraFormData"):
            problems.append(f"{name}: the time range filter has a default value {default}: the dashboard would not "
                            "open on each chart's own window")
        if (native.get("controlValues") or {}).get("enableEmptyFilter"):
            problems.append(f"{name}: the time range filter requires a value")
        if native.get("name") != "Time range" or native.get("type") != "NATIVE_FILTER":
            problems.append(f"{name}: the filter_time is not a native filter named 'Time range'")
        scope = native.get("scope") or {}
        if scope.get("rootPath") != ["ROOT_ID"]:
            problems.append(f"{name}: the time range filter is not scoped from the dashboard's root")
        placed = {item["meta"]["chartId"]: charts[item["meta"]["uuid"]] for item in dash["position"].values()
                  if isinstance(item, dict) and item.get("type") == "CHART"}
        excluded = scope.get("excluded") or []
        problems += [f"{name}: the time range filter excludes chart id {i}, not on the dashboard"
                     for i in excluded if i not in placed]
        for chart_id, chart in placed.items():
            title = chart["slice_name"]
            ranges = [f["comparator"] for f in chart["params"].get("adhoc_filters") or []
                      if f.get("operator") == "TEMPORAL_RANGE"]
            metrics = [chart["params"].get("metric")] + list(chart["params"].get("metrics") or [])
            from_now = any("now()" in str((m or {}).get("sqlExpression", "")).lower() for m in metrics)
            if chart_id in excluded:
                if title not in (native.get("description") or ""):
                    problems.append(f"{name}: {title!r} is out of the time range filter's scope without a word "
                                    "in its description")
            elif not ranges or not all("now" in r for r in ranges):
                problems.append(f"{name}: {title!r} is in the time range filter's scope with time ranges {ranges}: "
                                "the filter would not apply, or measures from the newest record to now")
            elif from_now:
                problems.append(f"{name}: {title!r} is in the time range filter's scope, but a metric counts to "
                                "now (the latest values): a past range would show nonsense")
    return problems


def test_every_dashboard_has_a_time_range_filter_that_starts_empty(files: dict[str, dict[str, Any]]) -> None:
    assert time_filter_problems(files) == []
    excluded = {d["dashboard_title"]: [n for n in d["metadata"]["native_filter_configuration"]
                                       if n["filterType"] == "filter_time"][0]["scope"]["excluded"]
                for d in of_kind(files, "dashboard").values()}
    assert {title: len(ids) for title, ids in excluded.items()} == {
        "Market overview": 1, "Order book": 0, "Trade flow": 0, "Volatility and alerts": 0, "Feed health": 2}


def _time_filter(files: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    return next(n for n in files[name]["metadata"]["native_filter_configuration"] if n["filterType"] == "filter_time")


@pytest.mark.parametrize("break_it", [
    lambda d: d["dashboards/order_book.yaml"]["metadata"]["native_filter_configuration"].remove(
        _time_filter(d, "dashboards/order_book.yaml")),
    lambda d: _time_filter(d, "dashboards/order_book.yaml")["defaultDataMask"].update(
        filterState={"value": "Last day"}, extraFormData={"time_range": "Last day"}),
    lambda d: _time_filter(d, "dashboards/order_book.yaml")["defaultDataMask"].update(
        extraFormData={"time_range": "Last week"}),
    lambda d: _time_filter(d, "dashboards/order_book.yaml")["controlValues"].update(enableEmptyFilter=True),
    lambda d: _time_filter(d, "dashboards/market_overview.yaml")["scope"].update(excluded=[]),
    lambda d: _time_filter(d, "dashboards/market_overview.yaml").update(description="Time range."),
    lambda d: _time_filter(d, "dashboards/market_overview.yaml")["scope"]["excluded"].append(1),
], ids=["no time filter", "default value", "default extra form data", "value required", "latest table in scope",
        "exclusion not described", "excludes another dashboard's chart"])
def test_a_time_range_filter_that_changes_the_first_view_or_misses_charts_fails(files: dict[str, dict[str, Any]],
                                                                               break_it: Any) -> None:
    broken = copy.deepcopy(files)
    break_it(broken)
    problems = time_filter_problems(broken)
    assert problems and all(p.startswith(("dashboards/order_book.yaml", "dashboards/market_overview.yaml"))
                            for p in problems), problems


def test_import_format_serialises_query_contexts(files: dict[str, dict[str, Any]]) -> None:
    ready = for_import(files)
    for name, chart in of_kind(ready, "chart").items():
        assert orjson.loads(chart["query_context"]) == files[name]["query_context"]
    assert ready["dashboards/market_overview.yaml"] == files["dashboards/market_overview.yaml"]


def _as_superset_exports(files: dict[str, dict[str, Any]], settings: Settings) -> dict[str, bytes]:
    """What Superset's export would give for the imported bundle: a root folder, metadata.yaml, instance ids,
    query contexts as JSON strings, literal URLs (percent-encoded in the database URI), nested dataset folders."""
    root = "dashboard_export_20260101T000000"
    ids = {c["uuid"]: 100 + i for i, c in enumerate(of_kind(files, "chart").values())}
    out: dict[str, bytes] = {f"{root}/metadata.yaml": b"version: 1.0.0\ntype: Dashboard\n"}
    for name, content in files.items():
        content = copy.deepcopy(content)
        path = name
        if name.startswith("databases/"):
            uri = content["sqlalchemy_uri"]
            base, _, controller = uri.partition("?controller=")
            content["sqlalchemy_uri"] = f"{base}?controller={quote(controller, safe='')}"
        elif name.startswith("datasets/"):
            path = f"datasets/{settings.superset.database_name}/{content['table_name']}_{len(out)}.yaml"
        elif name.startswith("charts/"):
            cid = ids[content["uuid"]]
            content["params"].update(slice_id=cid, datasource="7__table", dashboards=[3])
            context = content["query_context"]
            context["datasource"] = {"id": 7, "type": "table"}
            context["form_data"].update(slice_id=cid, datasource="7__table", url_params={"slice_id": str(cid)})
            content["query_context"] = orjson.dumps(context).decode()
            path = f"charts/{re.sub('[^A-Za-z0-9]+', '_', content['slice_name'])}_{cid}.yaml"
        elif name.startswith("dashboards/"):
            stable_to_real = {}
            for item in content["position"].values():
                if isinstance(item, dict) and item.get("type") == "CHART":
                    stable_to_real[item["meta"]["chartId"]] = ids[item["meta"]["uuid"]]
                    item["meta"]["chartId"] = ids[item["meta"]["uuid"]]
            for native in content["metadata"].get("native_filter_configuration", []):
                excluded = native["scope"]["excluded"] = [stable_to_real[i] for i in native["scope"]["excluded"]]
                native["chartsInScope"] = sorted(set(stable_to_real.values()) - set(excluded))
        out[f"{root}/{path}"] = yaml.safe_dump(content, sort_keys=False).encode()
    return out


def test_export_normalisation_restores_the_files(files: dict[str, dict[str, Any]], settings: Settings) -> None:
    exported = normalise_export(_as_superset_exports(files, settings), settings)
    on_disk = {f"{folder}/{p.name}": p.read_text() for folder in FOLDERS.values()
               for p in sorted((bundle_dir(settings) / folder).glob("*.yaml"))}
    assert sorted(exported) == sorted(on_disk)
    for name, text in on_disk.items():
        assert exported[name] == text, f"{name} does not round-trip"


def test_export_puts_other_settings_back_too(files: dict[str, dict[str, Any]], settings: Settings,
                                             tmp_path: Path) -> None:
    """With other hosts and names in settings, the same export still yields the placeholders."""
    moved = settings.model_copy(update={
        "pinot": settings.pinot.model_copy(update={"host": "pinot.example", "broker_port": 18099}),
        "tables": settings.tables.model_copy(update={"ticker": "renamed_ticker"})})
    rendered = load_bundle(moved)
    assert "pinot.example:18099" in rendered["databases/pinot.yaml"]["sqlalchemy_uri"]
    exported = normalise_export(_as_superset_exports(rendered, moved), moved)
    assert exported["databases/pinot.yaml"] == (bundle_dir(settings) / "databases/pinot.yaml").read_text()
    assert exported["datasets/ticker.yaml"] == (bundle_dir(settings) / "datasets/ticker.yaml").read_text()


def test_export_keys_chart_metadata_by_the_stable_chart_ids(files: dict[str, dict[str, Any]]) -> None:
    """`expanded_slices` (a chart's description shown on the dashboard) and legacy `filter_scopes` are keyed by chart
    id: Superset's importer maps each key through the position's ids (`id_map[int(key)]`, a KeyError and an HTTP 500
    otherwise), so after export they must use the same stable ids as the position."""
    from rtca.superset.bundle import normalise_dashboard, stable_chart_id

    dashboard = copy.deepcopy(files["dashboards/order_book.yaml"])
    real: dict[int, str] = {}
    for i, item in enumerate(c for c in dashboard["position"].values()
                             if isinstance(c, dict) and c.get("type") == "CHART"):
        item["meta"]["chartId"] = 100 + i  # the instance's ids, as Superset exports them
        real[100 + i] = item["meta"]["uuid"]
    dashboard["metadata"]["expanded_slices"] = {"100": True, "555": True}  # 555: a chart no longer on it
    dashboard["metadata"]["filter_scopes"] = {"101": {"product_id": {"scope": ["ROOT_ID"], "immune": [102]}}}
    out = normalise_dashboard(dashboard)
    placed = {item["meta"]["chartId"] for item in out["position"].values()
              if isinstance(item, dict) and item.get("type") == "CHART"}
    for key in ("expanded_slices", "filter_scopes"):
        assert {int(k) for k in out["metadata"][key]} <= placed, f"{key} keys are not the position's chart ids"
    assert out["metadata"]["expanded_slices"] == {str(stable_chart_id(real[100])): True}
    scopes = out["metadata"]["filter_scopes"][str(stable_chart_id(real[101]))]
    assert scopes["product_id"]["immune"] == [stable_chart_id(real[102])]


def test_the_colours_superset_writes_when_a_dashboard_is_viewed_are_no_edit(files: dict[str, dict[str, Any]]) -> None:
    """After a browser showed it, `make up` said "dashboard 'Market overview': updated" with no file changed: the
    frontend had written its colour domain and label map into the dashboard's metadata."""
    from rtca.superset.bundle import normalise_dashboard

    stored = files["dashboards/market_overview.yaml"]
    viewed = copy.deepcopy(stored)
    viewed["metadata"].update({"color_scheme_domain": ["#1FA8C9", "#454E7C"], "map_label_colors": {"price": "#1FA8C9"},
                               "shared_label_colors": ["price"]})
    assert normalise_dashboard(viewed)["metadata"] == normalise_dashboard(stored)["metadata"] == stored["metadata"]


def test_export_leaves_out_dashboards_on_other_databases(files: dict[str, dict[str, Any]],
                                                         settings: Settings) -> None:
    """`rtca superset export` sees every dashboard in Superset: one a user built on another database must not land in
    the bundle, or `rtca superset apply` refuses the bundle from then on (`bundle_problems`)."""
    exports = _as_superset_exports(files, settings)
    root = next(iter(exports)).split("/")[0]
    foreign = {
        "databases/examples.yaml": {"database_name": "examples", "sqlalchemy_uri": "sqlite:///x.db",
                                    "uuid": "00000000-0000-4000-8000-000000000001", "version": "1.0.0"},
        "datasets/examples/sales.yaml": {"table_name": "sales", "database_uuid": "00000000-0000-4000-8000-000000000001",
                                         "uuid": "00000000-0000-4000-8000-000000000002", "columns": [], "metrics": []},
        "charts/Sales_900.yaml": {"slice_name": "Sales", "viz_type": "table", "params": {},
                                  "dataset_uuid": "00000000-0000-4000-8000-000000000002",
                                  "uuid": "00000000-0000-4000-8000-000000000003"},
        "dashboards/Sales_9.yaml": {"dashboard_title": "Sales", "slug": "sales", "metadata": {},
                                    "uuid": "00000000-0000-4000-8000-000000000004",
                                    "position": {"CHART-1": {"type": "CHART", "id": "CHART-1", "meta": {
                                        "chartId": 900, "uuid": "00000000-0000-4000-8000-000000000003"}}}},
    }
    exports.update({f"{root}/{name}": yaml.safe_dump(content).encode() for name, content in foreign.items()})
    exported = normalise_export(exports, settings)
    assert sorted(exported) == sorted(files), "the other database's dashboard, chart, dataset or database was kept"
    skipped: list[str] = []
    normalise_export(exports, settings, skipped=skipped)
    assert skipped == ["Sales"]


def test_apply_names_the_objects_edited_in_superset(files: dict[str, dict[str, Any]], settings: Settings) -> None:
    """`apply` overwrites by uuid: a chart edited in the UI and not exported yet must be named (and saved) first,
    and an untouched Superset must give no such warning."""
    from rtca.superset.bundle import drifted

    exports = _as_superset_exports(files, settings)
    assert drifted(normalise_export(exports, settings), files, settings) == {}
    name = next(n for n in exports if "/charts/Spread" in n)
    chart = yaml.safe_load(exports[name])
    chart["params"]["time_range"] = "Last week"  # the user's edit
    exports[name] = yaml.safe_dump(chart, sort_keys=False).encode()
    changed = drifted(normalise_export(exports, settings), files, settings)
    assert sorted(changed) == ["charts/spread_bps.yaml"]
    assert "Last week" in changed["charts/spread_bps.yaml"]


@pytest.mark.parametrize("break_it", [
    lambda d: d["dashboards/order_book.yaml"]["position"]["CHART-book_spread"].update(meta=None),
    lambda d: d["dashboards/order_book.yaml"]["metadata"].update(native_filter_configuration=["Product"]),
    lambda d: d["dashboards/order_book.yaml"].update(position=["CHART-book_spread"]),
    lambda d: d["charts/spread_bps.yaml"].pop("uuid"),
], ids=["meta null", "filter not a mapping", "position a list", "no uuid"])
def test_a_malformed_file_is_a_problem_not_a_traceback(files: dict[str, dict[str, Any]], settings: Settings,
                                                       break_it: Any) -> None:
    broken = copy.deepcopy(files)
    break_it(broken)
    problems = bundle_problems(broken, settings)
    assert problems and all(p.startswith(("dashboards/order_book.yaml", "charts/spread_bps.yaml")) for p in problems)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    from rtca.errors import ConfigError

    (tmp_path / "charts").mkdir()
    (tmp_path / "charts" / "x.yaml").write_bytes(b"slice_name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="x.yaml"):
        read_bundle(tmp_path)


def test_a_pinot_with_basic_auth_is_not_taken_for_an_edit(files: dict[str, dict[str, Any]],
                                                          settings: Settings) -> None:  # fmt: skip
    """Deploy puts the user and a masked password into the database URI; exported back, that URI must still give
    the file's placeholders, or every apply would back the database up as edited in Superset."""
    from rtca.stack.superset import pinot_sqlalchemy_uri
    from rtca.superset.bundle import drifted

    secured = settings.model_copy(update={"pinot": settings.pinot.model_copy(update={"username": "an@lyst"})})
    rendered = load_bundle(secured)
    rendered["databases/pinot.yaml"]["sqlalchemy_uri"] = pinot_sqlalchemy_uri(secured)  # as deploy registers it
    exported = normalise_export(_as_superset_exports(rendered, secured), secured)
    assert exported["databases/pinot.yaml"] == (bundle_dir(settings) / "databases/pinot.yaml").read_text()
    assert drifted(exported, files, secured) == {}


def test_a_second_workbench_on_the_same_superset_has_objects_of_its_own(files: dict[str, dict[str, Any]],
                                                                        settings: Settings) -> None:  # fmt: skip
    """With the files' uuids, a workbench of other tables and another database, importing into a Superset shared
    with this one, re-pointed this one's datasets at its own tables (the import overwrites by uuid)."""
    other = settings.model_copy(update={
        "superset": settings.superset.model_copy(update={"database_name": "Pinot team B",
                                                         "database_uuid": "0e4ac9d2-52a4-4bd6-9b31-2f3f5e1e9a77"}),
        "tables": settings.tables.model_copy(update={"ticker": "b_ticker"})})
    theirs = load_bundle(other)
    assert bundle_problems(theirs, other) == []  # every link still holds
    ours = {str(c["uuid"]) for c in files.values()}
    assert not ours & {str(c["uuid"]) for c in theirs.values()}, "an object both workbenches would import"
    slugs = {c.get("slug") for c in of_kind(files, "dashboard").values()}
    assert not slugs & {c.get("slug") for c in of_kind(theirs, "dashboard").values()}
    assert all(c["dashboard_title"].endswith(" (Pinot team B)") for c in of_kind(theirs, "dashboard").values())
    assert load_bundle(other) == theirs  # stable: applying again updates the same objects
    exported = normalise_export(_as_superset_exports(theirs, other), other)  # back to the files as they are
    on_disk = {f"{folder}/{p.name}": p.read_text() for folder in FOLDERS.values()
               for p in sorted((bundle_dir(settings) / folder).glob("*.yaml"))}
    assert sorted(exported) == sorted(on_disk)
    for name, text in on_disk.items():
        assert exported[name] == text, f"{name} does not round-trip"


def test_export_finds_a_dashboard_past_the_first_hundred(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A shared Superset with 150 dashboards before ours: only the first page of 100 was read, so ours were "not
    found" (and a full export would have deleted the files of those past it)."""
    import rtca.superset.bundle as bundle

    others = [{"id": i, "uuid": f"u{i}", "slug": f"o{i}", "dashboard_title": f"attendee {i}"} for i in range(150)]
    ours = {"id": 503, "uuid": "u503", "slug": "ours", "dashboard_title": "Ours"}
    exported: list[list[int]] = []

    class Client:
        def __enter__(self) -> Client:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def get(self, path: str, q: str = "") -> dict[str, Any]:
            page = int(re.search(r"page:(\d+)", q).group(1))  # type: ignore[union-attr]
            items = [*others, ours] if "dashboard" in path else []
            return {"result": items[page * 100:(page + 1) * 100]}

        def export_bundle(self, kind: str, ids: list[int]) -> dict[str, bytes]:
            exported.append(ids)
            raise bundle.DeployError("stop here: the ids are what this test checks")

    monkeypatch.setattr(bundle.SupersetClient, "from_settings", classmethod(lambda cls, settings: Client()))
    with pytest.raises(bundle.DeployError, match="stop here"):
        bundle.export_dashboards(Settings(), tmp_path, dashboards=["ours"], say=lambda line: None)
    assert exported == [[503]]

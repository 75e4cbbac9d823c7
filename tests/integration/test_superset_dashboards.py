"""`rtca superset apply` / `export` against the real stack, and every chart's data over live data."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from rtca.settings import Settings
from rtca.superset.bundle import (
    FOLDERS,
    KINDS,
    apply_dashboards,
    bundle_dir,
    chart_uuids_of,
    check_charts,
    existing_uuids,
    export_dashboards,
    load_bundle,
    of_kind,
)
from rtca.superset.client import SupersetClient

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def superset(stack_up: Settings) -> Iterator[SupersetClient]:
    with SupersetClient.from_settings(stack_up) as client:
        yield client


def _titles(client: SupersetClient, kind: str, field: str) -> Counter[str]:
    found = client.get(f"/api/v1/{kind}/", q=f"(columns:!({field}),page_size:100)")["result"]
    return Counter(str(item[field]) for item in found)


def test_apply_twice_creates_nothing_twice(stack_up: Settings, superset: SupersetClient) -> None:
    """The second apply changes nothing and says so (it re-imported everything, `updated` x 33, every chart's
    `changed_on` moved); an object edited in Superset is imported again, and only that one reads `updated`."""
    files = load_bundle(stack_up)
    first = apply_dashboards(stack_up)
    changed_on = {c["id"]: c["changed_on_utc"] for c in superset.get(
        "/api/v1/chart/", q="(columns:!(id,changed_on_utc),page_size:100)")["result"]}  # fmt: skip
    second = apply_dashboards(stack_up)
    print("\n".join(map(str, second)))
    assert len(first) == len(second) == len(files)
    assert {r.action for r in second} == {"unchanged"}
    assert changed_on == {c["id"]: c["changed_on_utc"] for c in superset.get(
        "/api/v1/chart/", q="(columns:!(id,changed_on_utc),page_size:100)")["result"]}  # fmt: skip
    edited = next(r for r in second if r.kind == "chart")
    superset.put(f"/api/v1/chart/{edited.id}", {"slice_name": f"{edited.name} (edited)"})
    third = apply_dashboards(stack_up)
    assert [(r.kind, r.name) for r in third if r.action != "unchanged"] == [("chart", edited.name)]
    for kind in KINDS:
        uuids = existing_uuids(superset, kind)
        for content in of_kind(files, kind).values():
            assert content["uuid"] in uuids, f"{kind} {content['uuid']} missing"
    charts = _titles(superset, "chart", "slice_name")
    dashboards = _titles(superset, "dashboard", "dashboard_title")
    datasets = _titles(superset, "dataset", "table_name")
    databases = _titles(superset, "database", "database_name")
    print(f"charts {sum(charts.values())}, dashboards {sum(dashboards.values())}, datasets "
          f"{sum(datasets.values())}, databases {sum(databases.values())}")
    for content in of_kind(files, "chart").values():
        assert charts[content["slice_name"]] == 1, content["slice_name"]
    chart_ids = existing_uuids(superset, "chart")
    for content in of_kind(files, "dashboard").values():
        assert dashboards[content["dashboard_title"]] == 1, content["dashboard_title"]
        found = superset.get(f"/api/v1/dashboard/{content['slug']}/charts")["result"]
        assert len(found) == len(chart_uuids_of(content)), content["dashboard_title"]
        metadata = superset.get(f"/api/v1/dashboard/{content['slug']}")["result"]
        assert '"refresh_frequency": 10' in metadata["json_metadata"]
        # the Time range filter's scope names charts by id: the import must map the files' ids to Superset's
        (in_superset,) = [n for n in orjson.loads(metadata["json_metadata"])["native_filter_configuration"]
                          if n["filterType"] == "filter_time"]
        (in_files,) = [n for n in content["metadata"]["native_filter_configuration"]
                       if n["filterType"] == "filter_time"]
        placed = {item["meta"]["chartId"]: item["meta"]["uuid"] for item in content["position"].values()
                  if isinstance(item, dict) and item.get("type") == "CHART"}
        assert sorted(in_superset["scope"]["excluded"]) == sorted(
            chart_ids[placed[i]] for i in in_files["scope"]["excluded"]), content["dashboard_title"]
        assert in_superset["defaultDataMask"] == in_files["defaultDataMask"], content["dashboard_title"]
    for content in of_kind(files, "dataset").values():
        assert datasets[content["table_name"]] == 1, content["table_name"]
    assert databases[stack_up.superset.database_name] == 1


def test_a_second_workbench_imports_objects_of_its_own_beside_this_ones(stack_up: Settings,
                                                                        superset: SupersetClient) -> None:  # fmt: skip
    """With the files' uuids, a second workbench's import (other tables, another database) re-pointed this one's
    datasets at its tables: sharing one Superset is what a workshop on shared clusters does."""
    import uuid

    tag = uuid.uuid4().hex[:8]
    other = stack_up.model_copy(update={
        "superset": stack_up.superset.model_copy(update={"database_name": f"Pinot it-{tag}",
                                                         "database_uuid": str(uuid.uuid4())}),
        "tables": stack_up.tables.model_copy(update={k: f"it_{tag}_{v}" for k, v in
                                                     stack_up.tables.model_dump().items()})})  # fmt: skip
    ours = {kind: existing_uuids(superset, kind) for kind in KINDS}
    tables = {content["uuid"]: content["table_name"] for content in of_kind(load_bundle(stack_up), "dataset").values()}
    results = []
    try:
        results = apply_dashboards(other)
        assert {r.action for r in results} == {"created"}, [str(r) for r in results if r.action != "created"]
        for dataset_uuid, table in tables.items():  # this workbench's datasets still read its own tables
            found = superset.get(f"/api/v1/dataset/{ours['dataset'][dataset_uuid]}")["result"]
            assert found["table_name"] == table, found["table_name"]
        assert {kind: existing_uuids(superset, kind).keys() >= ours[kind].keys() for kind in KINDS} == \
            dict.fromkeys(KINDS, True)
    finally:
        for kind in reversed(KINDS):  # dashboards first: what uses an object goes before it
            for result in results:
                if result.kind == kind and result.id is not None and result.uuid not in ours[kind]:  # never ours
                    superset.delete(f"/api/v1/{kind}/{result.id}")


def test_every_chart_returns_rows(stack_up: Settings) -> None:
    from live_data import seed_live_data

    print(seed_live_data(stack_up))
    checks = check_charts(stack_up, require_rows=True)  # raises, naming each chart that failed or was empty
    for check in checks:
        print(check)
    assert len(checks) == len(of_kind(load_bundle(stack_up), "chart"))


def test_export_regenerates_the_files(stack_up: Settings, tmp_path: Path) -> None:
    apply_dashboards(stack_up, say=lambda _: None)
    slugs = [d["slug"] for d in of_kind(load_bundle(stack_up), "dashboard").values()]
    # a file of an exported chart under its old name (renamed since), and one of something not exported
    chart = next(iter(of_kind(load_bundle(stack_up), "chart").values()))
    (tmp_path / "charts").mkdir()
    (tmp_path / "charts" / "renamed_since.yaml").write_text(f"uuid: {chart['uuid']}\n")
    (tmp_path / "charts" / "not_exported.yaml").write_text("uuid: 00000000-0000-4000-8000-00000000abcd\n")
    written = export_dashboards(stack_up, tmp_path, dashboards=slugs)
    print(f"exported {len(written)} files")
    assert not (tmp_path / "charts" / "renamed_since.yaml").exists()  # two files of one uuid: apply would refuse
    (tmp_path / "charts" / "not_exported.yaml").unlink()  # kept by a selective export
    for folder in FOLDERS.values():
        ours = sorted(p.name for p in (bundle_dir(stack_up) / folder).glob("*.yaml"))
        exported = sorted(p.name for p in (tmp_path / folder).glob("*.yaml"))
        assert exported == ours, folder
        for name in ours:
            assert (tmp_path / folder / name).read_text() == (bundle_dir(stack_up) / folder / name).read_text(), \
                f"{folder}/{name} differs after apply + export"

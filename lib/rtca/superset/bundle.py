"""Superset's database, datasets, charts and dashboards as code: `infra/superset/` <-> a running Superset.

The files are Superset's own export-bundle format (`databases/`, `datasets/`, `charts/`, `dashboards/`, objects
linked by uuid), with two differences that keep them readable and portable:

- hosts, ports, names and uuids that come from settings are `${PLACEHOLDERS}` (see `placeholders`), filled in by
  `load_bundle` and put back by `export_dashboards`;
- a chart's `query_context` is a YAML mapping rather than a JSON string (serialised on import, parsed on export),
  and instance-specific ids (chart ids, dataset ids) are left out or replaced by stable ones derived from uuids.

`apply_dashboards` imports the bundle once per kind, in dependency order, each time with `overwrite=true`: Superset's
dashboard import brings the charts, datasets and database it references but never updates existing ones, so an
edited chart only reaches Superset through the chart import. Objects are matched by uuid, so applying twice
updates in place and creates nothing new. The database is the one `rtca up` registers (same name and uuid from
settings), so the bundle updates it rather than colliding with it.
"""

from __future__ import annotations

import copy
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote
from uuid import UUID, uuid5

import orjson
import yaml

from rtca.errors import ConfigError, DeployError
from rtca.placeholders import fill
from rtca.settings import Settings, Tables
from rtca.superset.client import SupersetClient

Kind = Literal["database", "dataset", "chart", "dashboard"]
KINDS: tuple[Kind, ...] = ("database", "dataset", "chart", "dashboard")
#: Bundle folder of each kind.
FOLDERS: dict[Kind, str] = {"database": "databases", "dataset": "datasets", "chart": "charts",
                            "dashboard": "dashboards"}
Bundle = dict[str, dict[str, Any]]
"""Path inside the bundle (`charts/price.yaml`) -> the file's content."""
#: libyaml's loader when PyYAML has it (ten times faster on these long chart files); same result either way.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def bundle_dir(settings: Settings) -> Path:
    return settings.infra_dir / "superset"


def placeholders(settings: Settings) -> dict[str, str]:
    """Every `${NAME}` the bundle files may use, with its value from settings."""
    values = {
        "PINOT_BROKER_URL": settings.pinot.broker_url,
        "PINOT_CONTROLLER_URL": settings.pinot.controller_url,
        "DATABASE_NAME": settings.superset.database_name,
        "DATABASE_UUID": settings.superset.database_uuid,
    }
    values.update({f"TABLE_{key.upper()}": name for key, name in settings.tables.model_dump().items()})
    return values


# --- files -> import -------------------------------------------------------------------------------------------------
def read_bundle(root: Path) -> Bundle:
    """The bundle's YAML files as they are on disk (placeholders unfilled), keyed by path inside the bundle."""
    files: Bundle = {}
    for kind in KINDS:
        for path in sorted((root / FOLDERS[kind]).glob("*.yaml")):
            try:
                content = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path} is not valid YAML (UTF-8): {exc}") from None
            if not isinstance(content, dict):
                raise ConfigError(f"{path}: expected a mapping at the top")
            files[f"{FOLDERS[kind]}/{path.name}"] = content
    if not files:
        raise ConfigError(f"no Superset bundle files under {root}")
    return files


def load_bundle(settings: Settings, root: Path | None = None) -> Bundle:
    """The bundle under `root` (default `infra/superset/`) with placeholders filled from settings, under this
    workbench's own uuids, slugs and titles (`own_ids`)."""
    values = placeholders(settings)
    files = {name: fill(content, values, name) for name, content in read_bundle(root or bundle_dir(settings)).items()}
    return _renamed(files, own_ids(files, settings), settings)


def own_ids(files: Bundle, settings: Settings) -> dict[str, str]:
    """File uuid -> this workbench's uuid of each dataset, chart and dashboard: the same for the default Superset
    database, else derived from the database's uuid (`RTCA_SUPERSET__DATABASE_UUID`). Two workbenches sharing one
    Superset (a workshop's, a team's) then each have their own objects: with the files' uuids, the second one's
    import re-pointed the first one's datasets at its own tables."""
    if settings.superset.database_uuid == type(settings.superset).model_fields["database_uuid"].default:
        return {}
    namespace = UUID(settings.superset.database_uuid)
    return {str(c["uuid"]): str(uuid5(namespace, str(c["uuid"])))
            for kind in ("dataset", "chart", "dashboard") for c in of_kind(files, kind).values() if c.get("uuid")}


def _renamed(files: Bundle, ids: Mapping[str, str], settings: Settings) -> Bundle:
    """`files` with the uuids of `ids` replaced wherever they appear, and dashboards' slugs and titles marked with
    the database."""
    if not ids:
        return files
    return {path: _rename(content, path.startswith(FOLDERS["dashboard"] + "/"), ids, settings, forward=True)
            for path, content in files.items()}


def _rename(content: dict[str, Any], dashboard: bool, ids: Mapping[str, str], settings: Settings, *,
            forward: bool) -> dict[str, Any]:  # fmt: skip
    """One file's content with the uuids of `ids` replaced; a dashboard's slug and title marked with the database
    (`forward`) or unmarked (an export back to the files)."""
    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return ids.get(value, value)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    content = walk(content)
    if dashboard:
        tag, name = f"-{settings.superset.database_uuid[:8]}", f" ({settings.superset.database_name})"
        slug, title = content.get("slug"), content.get("dashboard_title")
        if isinstance(slug, str) and slug:
            content["slug"] = slug + tag if forward else slug.removesuffix(tag)
        if isinstance(title, str):
            content["dashboard_title"] = title + name if forward else title.removesuffix(name)
    return content


def for_import(files: Bundle) -> Bundle:
    """The files as Superset's importer wants them: a chart's `query_context` as a JSON string."""
    out: Bundle = {}
    for name, content in files.items():
        content = dict(content)
        if name.startswith("charts/") and isinstance(content.get("query_context"), dict):
            content["query_context"] = orjson.dumps(content["query_context"]).decode()
        out[name] = content
    return out


def of_kind(files: Bundle, kind: Kind) -> dict[str, dict[str, Any]]:
    return {name: content for name, content in files.items() if name.startswith(FOLDERS[kind] + "/")}


def chart_uuids_of(dashboard: Mapping[str, Any]) -> list[str]:
    """Chart uuids a dashboard places, in position order."""
    return [item["meta"]["uuid"] for item in (dashboard.get("position") or {}).values()
            if isinstance(item, dict) and item.get("type") == "CHART" and isinstance(item.get("meta"), dict)
            and "uuid" in item["meta"]]


def bundle_problems(files: Bundle, settings: Settings) -> list[str]:
    """Why Superset would import the bundle wrongly or not at all: broken uuid links, duplicate uuids, a database
    other than the one the stack registers, a dataset on a table the workbench does not define. Empty = fine."""
    problems: list[str] = [f"{name}: no uuid" for name, c in files.items() if not c.get("uuid")]
    for name, dash in of_kind(files, "dashboard").items():
        if not isinstance(dash.get("position"), dict) or not isinstance(dash.get("metadata") or {}, dict):
            problems.append(f"{name}: position and metadata must be mappings")
        elif not all(isinstance(native, dict)
                     for native in (dash.get("metadata") or {}).get("native_filter_configuration") or []):
            problems.append(f"{name}: every native_filter_configuration item must be a mapping")
        else:
            problems += [f"{name}: position item {key} is a CHART without meta.uuid" for key, item
                         in dash["position"].items() if isinstance(item, dict) and item.get("type") == "CHART"
                         and not (isinstance(item.get("meta"), dict) and item["meta"].get("uuid"))]
    if problems:
        return problems
    uuids = Counter(c.get("uuid") for c in files.values())
    problems += [f"uuid {u} used by {n} files" for u, n in uuids.items() if n > 1]
    databases = {c.get("uuid") for c in of_kind(files, "database").values()}
    datasets = {c.get("uuid") for c in of_kind(files, "dataset").values()}
    charts = {c.get("uuid") for c in of_kind(files, "chart").values()}
    if databases != {settings.superset.database_uuid}:
        problems.append(f"the bundle's databases {sorted(map(str, databases))} are not the registered one "
                        f"({settings.superset.database_uuid})")
    for name, db in of_kind(files, "database").items():
        if db.get("database_name") != settings.superset.database_name:
            problems.append(f"{name}: database_name {db.get('database_name')!r} != {settings.superset.database_name!r}")
    tables = set(settings.tables.model_dump().values())
    for name, ds in of_kind(files, "dataset").items():
        if ds.get("database_uuid") not in databases:
            problems.append(f"{name}: database_uuid {ds.get('database_uuid')} is not in the bundle")
        if ds.get("table_name") not in tables:
            problems.append(f"{name}: table {ds.get('table_name')!r} is not a workbench table")
    for name, chart in of_kind(files, "chart").items():
        if chart.get("dataset_uuid") not in datasets:
            problems.append(f"{name}: dataset_uuid {chart.get('dataset_uuid')} is not in the bundle")
    placed: set[str] = set()
    for name, dash in of_kind(files, "dashboard").items():
        for chart_uuid in chart_uuids_of(dash):
            placed.add(chart_uuid)
            if chart_uuid not in charts:
                problems.append(f"{name}: chart {chart_uuid} is not in the bundle")
        for native in (dash.get("metadata") or {}).get("native_filter_configuration") or []:
            for target in native.get("targets") or []:
                if target.get("datasetUuid") and target["datasetUuid"] not in datasets:
                    problems.append(f"{name}: filter {native.get('name')!r} targets dataset {target['datasetUuid']} "
                                    "that is not in the bundle")
    problems += [f"chart {u} is on no dashboard" for u in sorted(map(str, charts - placed))]
    return problems


# --- apply -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BundleResult:
    kind: Kind
    name: str
    uuid: str
    action: Literal["created", "updated", "unchanged"]
    id: int | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}: {self.action}"


def _title(kind: Kind, content: Mapping[str, Any]) -> str:
    key = {"database": "database_name", "dataset": "table_name", "chart": "slice_name",
           "dashboard": "dashboard_title"}[kind]
    return str(content.get(key, "?"))


def existing_uuids(client: SupersetClient, kind: Kind) -> dict[str, int]:
    """uuid -> id of every object of a kind in Superset."""
    return {str(item["uuid"]): int(item["id"]) for item in list_all(client, kind, ("id", "uuid"))}


def list_all(client: SupersetClient, kind: Kind, columns: Sequence[str]) -> list[dict[str, Any]]:
    """These columns of every object of a kind, page after page (the API answers 100 at most at a time: a shared
    Superset holds more)."""
    items: list[dict[str, Any]] = []
    page = 0
    while True:
        found = client.get(f"/api/v1/{kind}/", q=f"(columns:!({','.join(columns)}),page:{page},page_size:100)")
        items += found["result"]
        if len(found["result"]) < 100 or len(items) >= found.get("count", float("inf")):  # the last page
            return items
        page += 1


def apply_dashboards(settings: Settings, *, root: Path | None = None,
                     say: Callable[[str], None] = print) -> list[BundleResult]:
    """`rtca superset apply`: import the bundle (database, datasets, charts, dashboards), creating what is missing
    and overwriting the rest by uuid; then check that every object is there and every dashboard holds its charts."""
    files = load_bundle(settings, root)
    problems = bundle_problems(files, settings)
    if problems:
        raise ConfigError("the Superset bundle is inconsistent:\n  " + "\n  ".join(problems),
                          hint=f"fix the files under {root or bundle_dir(settings)}")
    to_import = for_import(files)
    from rtca.stack.superset import pinot_passwords, pinot_sqlalchemy_uri

    passwords: dict[str, str] = {}
    for name in of_kind(to_import, "database"):
        if settings.pinot.username:  # the file's URI has no user: the one `rtca deploy` registers does
            to_import[name] = {**to_import[name], "sqlalchemy_uri": pinot_sqlalchemy_uri(settings)}
        passwords.update(pinot_passwords(settings, name))
    results: list[BundleResult] = []
    with SupersetClient.from_settings(settings) as client:
        changed = _back_up_edits(client, settings, files, say)
        # Superset's export masks the database's password (and the comparison drops user:mask): it cannot show
        # that the one Superset holds is the one in the settings, so a database with a password is imported
        changed |= set(passwords)
        held = {kind: existing_uuids(client, kind) for kind in KINDS}
        if not changed and all(str(c["uuid"]) in held[kind] for kind in KINDS for c in of_kind(files, kind).values()):
            say("- Superset holds every object as the files have it: nothing to import")
            results = [BundleResult(kind, _title(kind, c), str(c["uuid"]), "unchanged", held[kind][str(c["uuid"])])
                       for kind in KINDS for c in of_kind(files, kind).values()]  # fmt: skip
            _check_dashboards(client, files, {r.uuid: r.id for r in results if r.kind == "dashboard"})
            return results
        for position, kind in enumerate(KINDS):
            before = existing_uuids(client, kind)
            # each import carries what its objects reference (the importer resolves uuids inside the zip)
            subset = {n: c for n, c in to_import.items() if any(n.startswith(FOLDERS[k] + "/")
                                                                for k in KINDS[:position + 1])}
            say(f"- importing {len(of_kind(files, kind))} {FOLDERS[kind]} ...")
            client.import_bundle(kind, subset, passwords=passwords)
            after = existing_uuids(client, kind)
            for name, content in of_kind(files, kind).items():
                uuid = str(content["uuid"])
                if uuid not in after:
                    raise DeployError(f"Superset accepted the {kind} import but has no {kind} {uuid} ({name})")
                action = "created" if uuid not in before else "updated" if name in changed else "unchanged"
                results.append(BundleResult(kind, _title(kind, content), uuid, action, after.get(uuid)))
        _check_dashboards(client, files, {r.uuid: r.id for r in results if r.kind == "dashboard"})
    return results


def drifted(current: Mapping[str, str], files: Bundle, settings: Settings) -> dict[str, str]:
    """Superset's version (`normalise_export` texts) of each bundle object that differs from its file: bundle path ->
    Superset's text. Objects Superset does not hold, or holds as in the files, are not in it."""
    by_uuid = {str(content.get("uuid")): (name, content) for name, content in files.items()}
    values = placeholders(settings)
    out: dict[str, str] = {}
    for path, text in current.items():
        content = fill(yaml.load(text, Loader=_Loader), values, path)
        name, wanted = by_uuid.get(str(content.get("uuid")), (None, None))
        if name is not None and content != wanted:
            out[name] = text
    return out


def _back_up_edits(client: SupersetClient, settings: Settings, files: Bundle, say: Callable[[str], None]
                   ) -> set[str]:  # fmt: skip
    """Before the import overwrites them: save and name the bundle's objects that Superset holds in another version
    than the files' (edited in Superset and not exported yet, or edited in the files), so no edit is lost unseen.
    Returns the bundle paths of the objects to import: those, and those Superset's export did not show as the
    files have them (missing, or not comparable)."""
    ours = {str(content.get("uuid")) for content in files.values()}
    exported: dict[str, bytes] = {}
    for kind in ("dashboard", "dataset"):  # a dashboard's export brings its charts and database
        ids = [i for uuid, i in existing_uuids(client, kind).items() if uuid in ours]
        if ids:
            exported.update({f"{kind}_export/{k.split('/', 1)[1]}": v
                             for k, v in client.export_bundle(kind, ids).items()})
    skipped: list[str] = []
    current = normalise_export(exported, settings, skipped=skipped)
    changed = drifted(current, files, settings)
    for title in skipped:  # not comparable with the files, so not saved: said, at least
        say(f"- dashboard {title!r} in Superset now uses datasets outside the workbench (edited there?): "
            "overwriting it with the files' version, which is not saved")
    values = placeholders(settings)
    shown = {str(fill(yaml.load(text, Loader=_Loader), values, path).get("uuid")) for path, text in current.items()}
    unseen = {name for name, content in files.items() if str(content.get("uuid")) not in shown}
    if not changed:
        return unseen
    backup = settings.run_dir / "superset-backups" / time.strftime("%Y%m%dT%H%M%S")
    for name, text in sorted(changed.items()):
        path = backup / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        say(f"- {name} differs in Superset (edited there and not exported?): overwriting it; Superset's version "
            f"is saved as {path}")
    return unseen | set(changed)


def _check_dashboards(client: SupersetClient, files: Bundle, ids: Mapping[str, int | None]) -> None:
    """Every dashboard holds exactly the charts its position places (the link a POST-created dashboard lacks)."""
    for name, dash in of_kind(files, "dashboard").items():
        dashboard_id = ids.get(str(dash["uuid"]))
        wanted = len(set(chart_uuids_of(dash)))
        linked = len(client.get(f"/api/v1/dashboard/{dashboard_id}/charts")["result"])
        if linked != wanted:
            raise DeployError(f"dashboard {dash.get('dashboard_title')!r} ({name}) holds {linked} charts, "
                              f"its position places {wanted}")


@dataclass(frozen=True)
class ChartCheck:
    """What one chart's data endpoint answered: `error` is None when every query of the chart succeeded."""

    chart: str
    rows: int
    error: str | None

    def __str__(self) -> str:
        said = f"{self.rows} rows" if self.rows else "query ok, no rows yet (no data in its time range)"
        return f"{self.chart:<40} {'ERROR ' + self.error if self.error else said}"


def check_charts(settings: Settings, *, require_rows: bool = False) -> list[ChartCheck]:
    """Run every bundled chart's saved query (`/api/v1/chart/{id}/data/?force=true`); raise if any fails.

    `require_rows` also fails a chart that answers with no rows (after data has flowed)."""
    files = load_bundle(settings)
    checks = []
    with SupersetClient.from_settings(settings) as client:
        ids = existing_uuids(client, "chart")
        for chart in sorted(of_kind(files, "chart").values(), key=lambda c: str(c["slice_name"])):
            name = str(chart["slice_name"])
            if chart["uuid"] not in ids:
                checks.append(ChartCheck(name, 0, "not in Superset (run `rtca superset apply`)"))
                continue
            try:
                result = client.get(f"/api/v1/chart/{ids[chart['uuid']]}/data/", force="true")["result"]
            except DeployError as exc:
                checks.append(ChartCheck(name, 0, str(exc)))
                continue
            errors = [str(q.get("error") or q["status"]) for q in result if q["status"] != "success" or q.get("error")]
            rows = sum(int(q.get("rowcount") or 0) for q in result)
            if not errors and require_rows and rows == 0:
                errors = ["no rows"]
            checks.append(ChartCheck(name, rows, "; ".join(errors) or None))
    failed = [c for c in checks if c.error]
    if failed:
        raise DeployError("charts failed:\n  " + "\n  ".join(map(str, failed)))
    return checks


# --- export ----------------------------------------------------------------------------------------------------------
def stable_chart_id(uuid: str) -> int:
    """A chart id for the files that does not depend on the Superset instance: the importer maps ids found in a
    dashboard's position back to the real ones through the uuid next to them, so any unique number works."""
    return int(uuid.replace("-", "")[:7], 16)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "unnamed"


#: Keys that name instance ids (the chart's, its dataset's, its dashboards'): the importer sets what it needs.
_INSTANCE_KEYS = ("slice_id", "dashboards", "datasource", "dashboardId", "url_params")


def _strip_ids(form_data: dict[str, Any]) -> None:
    for key in _INSTANCE_KEYS:
        form_data.pop(key, None)


def normalise_chart(chart: dict[str, Any]) -> dict[str, Any]:
    """An exported chart without its instance ids, `query_context` as a mapping."""
    chart = copy.deepcopy(chart)
    _strip_ids(chart.get("params") or {})
    context = chart.get("query_context")
    if isinstance(context, str) and context:
        try:
            context = orjson.loads(context)
        except orjson.JSONDecodeError:
            context = None
    if isinstance(context, dict):
        context.pop("datasource", None)
        _strip_ids(context.get("form_data") or {})
        for query in context.get("queries") or []:
            _strip_ids(query)
    chart["query_context"] = context or None
    return chart


#: Metadata mappings keyed by chart id (as a string). The importer maps each key through the dashboard's position
#: (`id_map[int(key)]`, a KeyError for a key it cannot map), so the keys must be the stable ids too.
_KEYED_BY_CHART = ("chart_configuration", "expanded_slices", "filter_scopes")


def _remap_ids(value: Any, id_map: Mapping[int, int]) -> Any:
    """Chart ids inside dashboard metadata -> stable ids; lists of chart ids computed by the frontend (chartsInScope)
    are dropped, since the importer would not remap them and the frontend recomputes them from the scope."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "chartsInScope":
                continue
            if key in _KEYED_BY_CHART and isinstance(item, dict):
                # a key of a chart no longer on the dashboard would make the import fail: left out
                out[key] = {str(id_map[int(k)]) if str(k).isdigit() else k: _remap_ids(v, id_map)
                            for k, v in item.items() if not str(k).isdigit() or int(k) in id_map}
            elif key in ("id", "chartId") and isinstance(item, int):
                out[key] = id_map.get(item, item)
            elif key in ("excluded", "immune", "timed_refresh_immune_slices") and isinstance(item, list):
                out[key] = [id_map.get(i, i) if isinstance(i, int) else i for i in item]
            else:
                out[key] = _remap_ids(item, id_map)
        return out
    if isinstance(value, list):
        return [_remap_ids(v, id_map) for v in value]
    return value


def normalise_dashboard(dashboard: dict[str, Any]) -> dict[str, Any]:
    """An exported dashboard with stable chart ids (derived from the chart uuids) instead of the instance's."""
    dashboard = copy.deepcopy(dashboard)
    position = dashboard.get("position") or {}
    id_map = {int(item["meta"]["chartId"]): stable_chart_id(item["meta"]["uuid"])
              for item in position.values()
              if isinstance(item, dict) and item.get("type") == "CHART" and "chartId" in item.get("meta", {})}
    dashboard["position"] = _remap_ids(position, id_map)
    metadata = _remap_ids(dashboard.get("metadata") or {}, id_map)
    # written by Superset's frontend each time a dashboard is viewed (the colours it happened to give the series
    # drawn): not an edit, so neither a difference from the files nor something for an export to keep
    metadata.update({"shared_label_colors": [], "color_scheme_domain": []})
    metadata.pop("map_label_colors", None)
    dashboard["metadata"] = metadata
    return dashboard


def normalise_dataset(dataset: dict[str, Any]) -> dict[str, Any]:
    """An exported dataset with columns and metrics in name order (Superset exports them in no stable order)."""
    dataset = copy.deepcopy(dataset)
    dataset["columns"] = sorted(dataset.get("columns") or [], key=lambda c: str(c.get("column_name")))
    dataset["metrics"] = sorted(dataset.get("metrics") or [], key=lambda m: str(m.get("metric_name")))
    return dataset


def _literal_forms(value: str) -> list[str]:
    """A URL as it may appear in an exported file: as is, and percent-encoded inside a query string."""
    return [value, quote(value, safe="")]


def to_placeholders(kind: Kind, content: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Put settings back as `${PLACEHOLDERS}`: URLs anywhere in strings, names and uuids where they are fields."""
    urls = [(form, "${" + name + "}") for name in ("PINOT_BROKER_URL", "PINOT_CONTROLLER_URL")
            for form in _literal_forms(placeholders(settings)[name])]
    # the longer (encoded, or with a path) forms first so a shorter one cannot split them
    urls.sort(key=lambda pair: -len(pair[0]))

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            for literal, placeholder in urls:
                value = value.replace(literal, placeholder)
            return value
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    if kind == "database" and isinstance(content.get("sqlalchemy_uri"), str):
        # Superset percent-encodes the URI's query string (`controller=http%3A%2F%2F...`): compare it decoded
        uri = unquote(content["sqlalchemy_uri"])
        if settings.pinot.username:  # the user and masked password deploy adds (`pinot_sqlalchemy_uri`), not filed
            from rtca.stack.superset import PASSWORD_MASK

            uri = uri.replace(f"://{settings.pinot.username}:{PASSWORD_MASK}@", "://", 1)
        content = {**content, "sqlalchemy_uri": uri}
    content = walk(content)
    s = settings.superset
    if kind == "database":
        if content.get("database_name") == s.database_name:
            content["database_name"] = "${DATABASE_NAME}"
        if content.get("uuid") == s.database_uuid:
            content["uuid"] = "${DATABASE_UUID}"
    if kind == "dataset":
        if content.get("database_uuid") == s.database_uuid:
            content["database_uuid"] = "${DATABASE_UUID}"
        key = table_key(settings, str(content.get("table_name")))
        if key:
            content["table_name"] = "${TABLE_" + key.upper() + "}"
    return content


def table_key(settings: Settings, table_name: str) -> str | None:
    """The `Tables` field whose value is `table_name`, if any."""
    return next((k for k in Tables.model_fields if getattr(settings.tables, k) == table_name), None)


def file_name(kind: Kind, content: Mapping[str, Any], settings: Settings) -> str:
    """A file name that does not depend on instance ids: the table key, the chart or dashboard title, the slug."""
    if kind == "dataset":
        stem = table_key(settings, str(content.get("table_name"))) or _slug(str(content.get("table_name")))
    elif kind == "database":
        stem = "pinot"  # the one database of the bundle, whatever it is named (`RTCA_SUPERSET__DATABASE_NAME`)
    elif kind == "dashboard":
        stem = _slug(str(content.get("slug") or content.get("dashboard_title")))
    else:
        stem = _slug(_title(kind, content))
    return f"{FOLDERS[kind]}/{stem}.yaml"


def normalise_export(files: Mapping[str, bytes], settings: Settings, *,
                     skipped: list[str] | None = None) -> dict[str, str]:
    """Superset's export zip -> the bundle's files (path -> YAML text): no root folder, no metadata.yaml, no
    instance ids, settings as placeholders, names stable.

    Only what `apply_dashboards` accepts back is kept (`bundle_problems`): a dashboard with a chart or a filter on a
    dataset that is not a workbench table of the registered database (another database, a virtual dataset) is left
    out, with its charts, datasets and database; its title goes to `skipped`."""
    parsed: list[tuple[Kind, dict[str, Any]]] = []
    seen: set[Any] = set()
    # this workbench's own uuids, slugs and titles back to the files' (`own_ids`)
    back = {new: old for old, new in own_ids(read_bundle(bundle_dir(settings)), settings).items()}
    for path, raw in sorted(files.items()):
        parts = path.split("/")
        if len(parts) < 3 or parts[1] not in FOLDERS.values():
            continue  # metadata.yaml, or anything that is not one of the four kinds
        kind = next(k for k, folder in FOLDERS.items() if folder == parts[1])
        content = yaml.load(raw.decode("utf-8"), Loader=_Loader)
        if back:  # before the ids that derive from uuids are made (`stable_chart_id`)
            content = _rename(content, kind == "dashboard", back, settings, forward=False)
        if kind == "chart":
            content = normalise_chart(content)
        elif kind == "dashboard":
            content = normalise_dashboard(content)
        elif kind == "dataset":
            content = normalise_dataset(content)
        if content.get("uuid") in seen:
            continue
        seen.add(content.get("uuid"))
        parsed.append((kind, content))
    keep = _workbench_uuids(parsed, settings, skipped if skipped is not None else [])
    out: dict[str, str] = {}
    for kind, content in parsed:
        if str(content.get("uuid")) not in keep:
            continue
        name = file_name(kind, content, settings)
        if name in out:
            name = name.replace(".yaml", f"_{str(content.get('uuid'))[:8]}.yaml")
        out[name] = dump_yaml(to_placeholders(kind, content, settings))
    return out


def _workbench_uuids(parsed: list[tuple[Kind, dict[str, Any]]], settings: Settings, skipped: list[str]) -> set[str]:
    """uuids of the exported objects that belong in the bundle; titles of the dashboards left out go to `skipped`."""
    tables = set(settings.tables.model_dump().values())
    datasets = {str(c.get("uuid")) for k, c in parsed if k == "dataset"
                and str(c.get("database_uuid")) == settings.superset.database_uuid and c.get("table_name") in tables}
    chart_dataset = {str(c.get("uuid")): str(c.get("dataset_uuid")) for k, c in parsed if k == "chart"}
    keep = set(datasets) | {settings.superset.database_uuid}
    for kind, dash in parsed:
        if kind != "dashboard":
            continue
        charts = set(chart_uuids_of(dash))
        used = {chart_dataset.get(u) for u in charts}
        natives = (dash.get("metadata") or {}).get("native_filter_configuration") or []
        used |= {str(target["datasetUuid"]) for native in natives for target in native.get("targets") or []
                 if target.get("datasetUuid")}
        if used <= datasets:
            keep |= charts | {str(dash.get("uuid"))}
        else:
            skipped.append(str(dash.get("dashboard_title")))
    return keep


def _file_uuid(path: Path) -> str | None:
    try:
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return str(content.get("uuid")) if isinstance(content, dict) else None


def dump_yaml(content: Mapping[str, Any]) -> str:
    return yaml.dump(dict(content), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def export_dashboards(settings: Settings, out_dir: Path | None = None, *,
                      dashboards: Iterable[str] | None = None, say: Callable[[str], None] = print) -> list[Path]:
    """`rtca superset export [DIR]`: regenerate the bundle files from the running Superset.

    Exports every workbench dashboard (or those whose slug, title or uuid is in `dashboards`) with the charts,
    datasets and database they use; dashboards on other datasets are left out, named through `say`. When exporting
    every dashboard, the YAML files of the four folders under `out_dir` (default `infra/superset/`) are replaced by
    the export, so a chart deleted in Superset disappears from the files too; other files there stay. A selective
    export only writes its dashboards' files (the others' would be lost).
    """
    out_dir = out_dir or bundle_dir(settings)
    wanted = set(dashboards) if dashboards is not None else None
    with SupersetClient.from_settings(settings) as client:
        found = list_all(client, "dashboard", ("id", "uuid", "slug", "dashboard_title"))
        ids = [int(d["id"]) for d in found
               if wanted is None or wanted & {d.get("slug"), d.get("dashboard_title"), str(d.get("uuid"))}]
        if not ids:
            raise DeployError("no dashboard to export" + (f" matching {sorted(wanted)}" if wanted else ""))
        exported = client.export_bundle("dashboard", ids)
        # datasets of workbench tables that no chart uses yet would be lost with a dashboard export alone
        tables = set(settings.tables.model_dump().values())
        datasets = list_all(client, "dataset", ("id", "table_name"))
        ours = [int(d["id"]) for d in datasets if d["table_name"] in tables]
        if ours:
            exported.update({f"datasets_export/{k.split('/', 1)[1]}": v
                             for k, v in client.export_bundle("dataset", ours).items()})
    skipped: list[str] = []
    files = normalise_export(exported, settings, skipped=skipped)
    for title in skipped:
        say(f"- left out dashboard {title!r}: it uses datasets other than the workbench tables of database "
            f"{settings.superset.database_name!r}, which `rtca superset apply` would refuse")
    if not of_kind({name: {} for name in files}, "dashboard"):
        raise DeployError("no workbench dashboard to export (every one found uses other datasets)")
    exported_uuids = {str(yaml.load(text, Loader=_Loader).get("uuid")) for text in files.values()}
    for folder in FOLDERS.values():  # all files, or (a selective export) those of what it exported: a renamed
        for old in (out_dir / folder).glob("*.yaml"):  # chart would otherwise leave two files of one uuid
            if wanted is None or _file_uuid(old) in exported_uuids:
                old.unlink()
    written = []
    for name, text in files.items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


"""Pinot schemas and REALTIME tables as code: render them from `infra/pinot/` and settings, apply them idempotently.

Layout of `infra/pinot/` (one folder per table, named after its `rtca.settings.Tables` field):

- `realtime-table.json`: what every REALTIME table shares (time column, retention, null handling, default indexes,
  the `event_time` ingestion transform, stream thresholds);
- `<key>/schema.json`: the table's schema, complete;
- `<key>/table.json`: only what differs from `realtime-table.json`, deep-merged over it (objects merge key by key;
  lists and values replace).

Placeholders: `${TABLE}` (the table name from settings), `${TOPIC}` (the full name of the Pulsar topic with the
same `Topics` key) and `${TOPIC_<KEY>}` (any topic, e.g. `${TOPIC_TICKER}`: a second table over one topic).
`<key>/schema.json` may start from another table's schema: `"extends": "<key>"` (deep-merged like table.json).
The rest of `streamConfigs` (service URL, consumer factory of the backend, decoder) comes from
`rtca.pinot.client.stream_configs`, the one place that knows it; the files hold only the table-specific stream keys.
Replication comes from the backend profile (`rtca.stack.profiles.segments_replication`).

Why the time column is a TIMESTAMP `event_time` filled by an ingestion transform from the record's `event_ms`
(`ts_ms` for feed health): Superset 6.1 charts an epoch-millisecond LONG x-axis wrongly, a TIMESTAMP correctly, and the
records keep Coinbase's own field names (the record contract), so the conversion belongs to the table, not the
producers. `event_ms` stays as a LONG column for notebooks and exact comparisons.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson

from rtca.errors import ConfigError, DeployError
from rtca.pinot.client import PinotClient, stream_configs
from rtca.placeholders import fill
from rtca.settings import Settings, Tables, Topics, name_list
from rtca.stack.profiles import segments_replication
from rtca.stack.remote import http_options

Action = Literal["created", "updated", "unchanged"]

TEMPLATE = "realtime-table.json"
#: The stream keys a table file may set, and the `stream_configs()` argument each one becomes.
_STREAM_ARGS = {
    "stream.pulsar.topic.name": "topic",
    "stream.pulsar.consumer.prop.auto.offset.reset": "offset_reset",
    "realtime.segment.flush.threshold.rows": "flush_rows",
    "realtime.segment.flush.threshold.time": "flush_time",
}


def table_keys() -> list[str]:
    """Every table the workbench defines, as `Tables` field names (also the folder names under infra/pinot/)."""
    return list(Tables.model_fields)


# --- rendering -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableSpec:
    """One table, rendered: its `Tables` key, name, schema and complete REALTIME table config."""

    key: str
    name: str
    schema: dict[str, Any]
    table: dict[str, Any]

    @property
    def topic(self) -> str:
        return str(self.table["tableIndexConfig"]["streamConfigs"]["stream.pulsar.topic.name"])


def _load(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"missing Pinot definition {path}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`: objects merge key by key, anything else (lists included) replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _stream(settings: Settings, declared: Mapping[str, Any], where: Path) -> dict[str, str]:
    unknown = sorted(set(declared) - set(_STREAM_ARGS))
    if unknown:
        raise ConfigError(f"{where}: streamConfigs keys {unknown} are not table-specific",
                          hint=f"tables set only {', '.join(_STREAM_ARGS)}; "
                               "the rest comes from rtca.pinot.client.stream_configs")
    args: dict[str, Any] = {_STREAM_ARGS[k]: v for k, v in declared.items()}
    if "topic" not in args:
        raise ConfigError(f"{where}: streamConfigs needs stream.pulsar.topic.name")
    if "flush_rows" in args:
        rows = str(args["flush_rows"])
        if not (rows.isascii() and rows.isdigit() and int(rows) > 0):
            raise ConfigError(f"{where}: realtime.segment.flush.threshold.rows is {args['flush_rows']!r}",
                              hint="a whole number of rows, e.g. \"100000\"")
        args["flush_rows"] = int(rows)
    return stream_configs(settings, **args)


def render_table(settings: Settings, key: str) -> TableSpec:
    """The schema and table config of one table (`key` = a `Tables` field name), ready for Pinot's REST API."""
    if key not in Tables.model_fields:
        raise ConfigError(f"unknown Pinot table {key!r}", hint=f"known: {', '.join(table_keys())}")
    root = settings.infra_dir / "pinot"
    name = getattr(settings.tables, key)
    values = {f"TOPIC_{k.upper()}": settings.topic(t) for k, t in settings.topics.model_dump().items()}
    values["TABLE"] = name
    if key in Topics.model_fields:
        values["TOPIC"] = settings.topic(getattr(settings.topics, key))
    schema = _schema(root, key, values)
    # merged before filling: a table over another table's topic replaces the template's `${TOPIC}`
    table = fill(deep_merge(_load(root / TEMPLATE), _load(root / key / "table.json")), values,
                 f"{root / key / 'table.json'} (over {TEMPLATE})")
    index = table.setdefault("tableIndexConfig", {})
    index["streamConfigs"] = _stream(settings, index.get("streamConfigs") or {}, root / key / "table.json")
    table.setdefault("segmentsConfig", {}).update(segments_replication(settings))
    return TableSpec(key, name, schema, table)


def _schema(root: Path, key: str, values: Mapping[str, str], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = root / key / "schema.json"
    schema = fill(_load(path), values, str(path))
    base = schema.pop("extends", None)
    if base is None:
        return schema
    if base not in Tables.model_fields or base in (key, *seen):
        raise ConfigError(f"{path}: extends {base!r}, which is not another table (or extends it back)",
                          hint=f"one of {table_keys()}")
    return deep_merge(_schema(root, base, values, (*seen, key)), schema)


def render_tables(settings: Settings, keys: Iterable[str] | None = None) -> list[TableSpec]:
    return [render_table(settings, key) for key in (table_keys() if keys is None else keys)]


# --- comparing with what Pinot has ---------------------------------------------------------------------------------
SCHEMA_KEYS = ("primaryKeyColumns",)
"""Schema keys besides the fields that a change of ours must reach Pinot with (an upsert table's key)."""
OPTIONAL_SECTIONS = (("upsertConfig",), ("dedupConfig",), ("routing",), ("ingestionConfig", "aggregationConfigs"),
                     ("ingestionConfig", "filterConfig"))  # fmt: skip
"""Table sections only some tables set: one Pinot has and the rendered config no longer sets is a change too."""
def _fields(schema: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {spec["name"]: {"kind": kind, **spec}
            for kind in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs")
            for spec in schema.get(kind) or []}


def schema_differences(desired: Mapping[str, Any], existing: Mapping[str, Any]) -> list[str]:
    """What differs between two schemas, field by field; Pinot's filled-in defaults (keys we do not set) are ignored.

    Why not compare the JSON as is: the controller adds defaults (e.g. `singleValueField`) to what it stores, so a
    byte comparison would call every schema changed and every apply would update (and reload) every table.
    """
    want, have = _fields(desired), _fields(existing)
    diffs = [f"+{name}" for name in want.keys() - have.keys()] + [f"-{name}" for name in have.keys() - want.keys()]
    for name in want.keys() & have.keys():
        changed = sorted(k for k, v in want[name].items() if have[name].get(k) != v)
        diffs += [f"{name}.{k}" for k in changed]
    diffs += [key for key in SCHEMA_KEYS if (desired.get(key) or None) != (existing.get(key) or None)]
    return sorted(diffs)


def config_differences(desired: Any, existing: Any, path: str = "") -> list[str]:
    """Paths where `desired` is not contained in `existing` (keys Pinot added and we never set are ignored), and
    the optional sections (`OPTIONAL_SECTIONS`) Pinot has that `desired` dropped.

    Every list the template sets (index columns, transforms) is set explicitly, even empty, so removing an index
    shows up as a changed list rather than as a key we stopped mentioning.
    """
    if not path:
        dropped = [f"-/{'/'.join(keys)}" for keys in OPTIONAL_SECTIONS
                   if _at(existing, keys) is not None and _at(desired, keys) is None]  # fmt: skip
        return dropped + config_differences(desired, existing, "/")
    if isinstance(desired, Mapping):
        if not isinstance(existing, Mapping):
            return [path or "/"]
        return [d for k, v in desired.items()
                for d in config_differences(v, existing.get(k), f"{path.rstrip('/')}/{k}")]  # fmt: skip
    if desired != existing and not (_scalar(desired) and str(desired) == str(existing)):
        return [path or "/"]
    return []


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _at(config: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        config = config.get(key) if isinstance(config, Mapping) else None
    return config


# --- applying ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApplyResult:
    table: str
    schema: Action
    config: Action
    changes: tuple[str, ...] = ()

    @property
    def action(self) -> Action:
        if "created" in (self.schema, self.config):
            return "created"
        return "updated" if "updated" in (self.schema, self.config) else "unchanged"

    def __str__(self) -> str:
        detail = f" ({', '.join(self.changes)})" if self.changes else ""
        return f"{self.table}: {self.action} (schema {self.schema}, table {self.config}){detail}"


def apply_tables(settings: Settings, names: str | Sequence[str] | None = None) -> list[ApplyResult]:
    """`rtca pinot apply [NAME...]`: create each missing schema and table, update what changed, leave the rest.

    `names` are table names or `Tables` keys (all tables by default). An updated table has its segments reloaded,
    so committed segments pick up new columns and indexes (the consuming segment does at its next commit).
    """
    specs = render_tables(settings, selected_keys(settings, names))
    with PinotClient(settings) as pinot:
        return [_apply_one(settings, pinot, spec) for spec in specs]


def selected_keys(settings: Settings, names: str | Sequence[str] | None) -> list[str]:
    """`Tables` keys of `names` (table names or keys, a list or one comma-separated string; None: all)."""
    names = name_list(names)
    if names is None:
        return table_keys()
    by_name = {getattr(settings.tables, key): key for key in table_keys()}
    keys = [by_name.get(n, n) for n in names]
    unknown = [n for n, k in zip(names, keys) if k not in Tables.model_fields]
    if unknown:
        raise ConfigError(f"unknown Pinot table(s): {', '.join(unknown)}", hint=f"known: {', '.join(by_name)}")
    return keys


def _apply_one(settings: Settings, pinot: PinotClient, spec: TableSpec) -> ApplyResult:
    existing_schema = pinot.schema(spec.name)
    schema_changes = [] if existing_schema is None else schema_differences(spec.schema, existing_schema)
    schema_action: Action = "created" if existing_schema is None else "updated" if schema_changes else "unchanged"
    if schema_action != "unchanged":
        pinot.put_schema(spec.schema)

    existing_table = pinot.table(spec.name)
    table_changes = [] if existing_table is None else config_differences(spec.table, _as_posted(existing_table))
    table_action: Action = "created" if existing_table is None else "updated" if table_changes else "unchanged"
    if table_action != "unchanged":
        pinot.put_table(spec.table)
    if existing_table is not None and "updated" in (schema_action, table_action):
        _reload(settings, spec.name)
    return ApplyResult(spec.name, schema_action, table_action,
                       tuple(f"schema {c}" for c in schema_changes) + tuple(f"table {c}" for c in table_changes))


def _as_posted(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored table config as it was posted: the controller answers with the physical name (`<name>_REALTIME`)."""
    config = dict(stored)
    config["tableName"] = str(config.get("tableName", "")).removesuffix("_REALTIME")
    return config


def _reload(settings: Settings, table: str) -> None:
    """Reload the table's segments so existing data gets the new columns and indexes."""
    response = httpx.post(f"{settings.pinot.controller_url}/segments/{table}/reload", params={"type": "REALTIME"},
                          timeout=60, **http_options(settings, "pinot"))
    if not response.is_success:
        raise DeployError(f"Pinot could not reload {table}: HTTP {response.status_code} {response.text[:300]}")


def delete_tables(settings: Settings, names: Sequence[str] | None = None) -> list[str]:
    """Drop tables and their schemas (all of the workbench's by default); returns the names that existed."""
    deleted = []
    with PinotClient(settings) as pinot:
        for spec in render_tables(settings, selected_keys(settings, names)):
            existed = pinot.table(spec.name) is not None or pinot.schema(spec.name) is not None
            pinot.delete_table(spec.name)
            if existed:
                deleted.append(spec.name)
    return deleted


# --- status --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableStatus:
    """One table as `rtca pinot status` shows it; `error` holds why a count failed (e.g. the table is missing)."""

    table: str
    exists: bool
    rows: int | None = None
    consuming: int = 0
    committed: int = 0
    newest_ms: int | None = None
    error: str = ""
    #: What to do about `error`, shown once under the table rather than on every row.
    hint: str = ""

    def __str__(self) -> str:
        if not self.exists:
            return f"{self.table}: missing"
        rows = "?" if self.rows is None else f"{self.rows:,}"
        fresh = "" if self.newest_ms is None else f", newest event {self.newest_ms}"
        error = f", error: {self.error}" if self.error else ""
        return (f"{self.table}: {rows} rows, {self.consuming} consuming / {self.committed} committed segments"
                f"{fresh}{error}")


def pinot_status(settings: Settings) -> list[TableStatus]:
    """`rtca pinot status`: per workbench table, row count, consuming and committed segments, newest event time."""
    rows = []
    with PinotClient(settings) as pinot:
        for key in table_keys():
            name = getattr(settings.tables, key)
            if pinot.table(name) is None:
                rows.append(TableStatus(name, exists=False))
                continue
            states = [set(s.values()) for s in pinot.segments(name).values()]
            consuming = sum(1 for s in states if "CONSUMING" in s)
            committed = sum(1 for s in states if "ONLINE" in s)
            try:
                count, newest = pinot.query(f"SELECT COUNT(*), MAX(event_time) FROM {name}")[0]
                rows.append(TableStatus(name, True, int(count), consuming, committed,
                                        int(newest) if count and newest is not None else None))
            except (DeployError, IndexError, TypeError, ValueError) as exc:
                message = exc.args[0] if isinstance(exc, DeployError) else str(exc)
                rows.append(TableStatus(name, True, None, consuming, committed, error=str(message)[:200],
                                        hint=getattr(exc, "hint", None) or ""))
    return rows


def format_status(rows: Sequence[TableStatus]) -> str:
    """A fixed-width table of `pinot_status` rows, for the CLI."""
    lines = [f"{'table':<24}{'rows':>12}{'consuming':>11}{'committed':>11}  newest event (UTC)"]
    for row in rows:
        if not row.exists:
            lines.append(f"{row.table:<24}{'missing':>12}")
            continue
        newest = "-" if row.newest_ms is None else _iso(row.newest_ms)
        count = "?" if row.rows is None else f"{row.rows:,}"
        lines.append(f"{row.table:<24}{count:>12}{row.consuming:>11}{row.committed:>11}  {newest}"
                     + (f"  error: {row.error}" if row.error else ""))
    lines += [f"  hint: {hint}" for hint in dict.fromkeys(row.hint for row in rows if row.hint)]
    if any(not row.exists for row in rows):
        lines.append("  hint: `rtca pinot apply` creates the missing tables")
    return "\n".join(lines)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

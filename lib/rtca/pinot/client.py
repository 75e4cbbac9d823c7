"""Pinot's controller (schemas, tables, segments) and broker (SQL) over REST, with clear errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from rtca.errors import DeployError
from rtca.settings import Settings
from rtca.stack.profiles import CONSUMER_FACTORY, profile, stream_connection_configs
from rtca.stack.pulsar import ensure_topic
from rtca.stack.remote import http_options, json_answer, origin

__all__ = ["CONSUMER_FACTORY", "JSON_DECODER", "PinotClient", "stream_configs"]

JSON_DECODER = "org.apache.pinot.plugin.inputformat.json.JSONMessageDecoder"
#: How long one fetch of a consuming segment waits for a first message (Pinot's default: 5,000 ms). A fetch returns
#: as soon as a message arrives, so this costs no freshness; but Pinot stops a table's consumer by waiting for its
#: current fetch to end, table after table: at 5 s, a Pinot server with a dozen idle tables took 30 s to exit.
FETCH_TIMEOUT_MS = 500


def stream_configs(settings: Settings, topic: str, *, offset_reset: str = "smallest",
                   flush_rows: int = 100_000, flush_time: str = "6h") -> dict[str, str]:
    """`streamConfigs` of a REALTIME table reading `topic` (full Pulsar name); the plugin class and the Pulsar
    credentials come from the backend's profile (`rtca.stack.profiles`), the rest is the same on every backend."""
    return {
        "streamType": "pulsar",
        "stream.pulsar.topic.name": topic,
        "stream.pulsar.bootstrap.servers": settings.pulsar.service_url,
        "stream.pulsar.consumer.type": "lowlevel",
        "stream.pulsar.consumer.factory.class.name": profile(settings).consumer_factory,
        "stream.pulsar.decoder.class.name": JSON_DECODER,
        "stream.pulsar.consumer.prop.auto.offset.reset": offset_reset,
        "realtime.segment.flush.threshold.rows": str(flush_rows),
        "realtime.segment.flush.threshold.time": flush_time,
        "stream.pulsar.fetch.timeout.millis": str(FETCH_TIMEOUT_MS),
        **stream_connection_configs(settings),
    }


class PinotClient:
    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self._settings = settings
        options = http_options(settings, "pinot")  # basic auth and TLS of a secured (external) Pinot
        self._controller = httpx.Client(base_url=settings.pinot.controller_url, timeout=timeout, **options)
        self._broker = httpx.Client(base_url=settings.pinot.broker_url, timeout=timeout, **options)

    @staticmethod
    def _check(response: httpx.Response, what: str) -> Any:
        if not response.is_success:
            kind = response.headers.get("content-type", "")
            if "json" not in kind and "text/plain" not in kind:  # another service's page (HTML), not Pinot's answer
                raise DeployError(f"Pinot could not {what}: HTTP {response.status_code} ({kind or 'no content type'}) "
                                  f"from {origin(response.request.url)}",
                                  hint="is that Pinot's controller / broker? `rtca config` shows the URLs in use")
            raise DeployError(f"Pinot could not {what}: HTTP {response.status_code} {response.text[:500]}")
        return json_answer(response, f"{what} (Pinot)") if response.content else None

    # --- controller ----------------------------------------------------------------------------------------------
    def schema(self, name: str) -> dict[str, Any] | None:
        response = self._controller.get(f"/schemas/{name}")
        return None if response.status_code == 404 else self._check(response, f"read schema {name}")

    def put_schema(self, schema: Mapping[str, Any]) -> None:
        name = schema["schemaName"]
        if self.schema(name) is None:
            self._check(self._controller.post("/schemas", json=dict(schema)), f"create schema {name}")
        else:
            self._check(self._controller.put(f"/schemas/{name}", json=dict(schema)), f"update schema {name}")

    def table(self, name: str) -> dict[str, Any] | None:
        """The REALTIME table config, or None."""
        found = self._check(self._controller.get(f"/tables/{name}", params={"type": "realtime"}), f"read {name}")
        return found.get("REALTIME") if found else None

    def put_table(self, table: Mapping[str, Any]) -> None:
        """Create or update a table; a new one gets its topic first (the plugin refuses a topic that does not
        exist, rather than creating a misspelt one)."""
        name = table["tableName"]
        if self.table(name) is None:
            topic = _at(table, ("tableIndexConfig", "streamConfigs", "stream.pulsar.topic.name"))
            if isinstance(topic, str):
                ensure_topic(self._settings, topic)
            self._check(self._controller.post("/tables", json=dict(table)), f"create table {name}")
        else:
            self._check(self._controller.put(f"/tables/{name}", json=dict(table)), f"update table {name}")

    def delete_table(self, name: str, *, attempts: int = 3) -> None:
        """Delete a table and its schema. A loaded controller can take longer than the timeout to drop a table's
        segments: the delete is asked again (it answers 404 once the first one finished)."""
        steps = ((f"/tables/{name}", {"type": "realtime"}, "table"), (f"/schemas/{name}", {}, "schema"))
        for path, params, what in steps:
            for attempt in range(1, attempts + 1):
                try:
                    response = self._controller.delete(path, params=params)
                    break
                except httpx.TimeoutException:
                    if attempt == attempts:
                        raise
            if response.status_code not in (200, 404):
                self._check(response, f"delete {what} {name}")

    def segments(self, table: str) -> dict[str, dict[str, str]]:
        """Segment name -> {server: state} from the external view (CONSUMING or ONLINE)."""
        view = self._check(self._controller.get(f"/tables/{table}/externalview"), f"read segments of {table}")
        return dict((view or {}).get("REALTIME") or {})

    def committed_segments(self, table: str) -> int:
        return sum(1 for states in self.segments(table).values() if "ONLINE" in states.values())

    # --- broker --------------------------------------------------------------------------------------------------
    def execute(self, sql: str) -> dict[str, Any]:
        """The broker's whole answer to a SQL query (rows, `timeUsedMs`, docs scanned, ...); a Pinot-side exception
        becomes a DeployError with its message."""
        result = self._check(self._broker.post("/query/sql", json={"sql": sql}), "run a query")
        if result.get("exceptions"):
            raise DeployError(f"Pinot query failed: {result['exceptions'][0].get('message', '')[:500]}")
        return dict(result)

    def query(self, sql: str) -> list[list[Any]]:
        """Rows of a SQL query; a Pinot-side exception becomes a DeployError with its message."""
        return list(self.execute(sql).get("resultTable", {}).get("rows", []))

    def count(self, table: str, where: str = "") -> int:
        rows = self.query(f"SELECT COUNT(*) FROM {table} {where}")
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        self._controller.close()
        self._broker.close()

    def __enter__(self) -> PinotClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _at(config: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    value: Any = config
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value

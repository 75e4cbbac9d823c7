"""Function specs rendered from settings, and idempotent create-or-update against a mocked admin API."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from rtca.analytics.alerts import SOURCES
from rtca.errors import ConfigError, DeployError
from rtca.functions import deploy as fdeploy
from rtca.functions import routing
from rtca.functions.deploy import FINGERPRINT_KEY, code_files, function_specs
from rtca.settings import Settings, Topics


def test_specs_take_every_topic_from_settings() -> None:
    settings = Settings(topics=Topics(raw="r", ticker="tk", ticker_stats="ts", dead_letter="dl"))
    router, stats, *derived = function_specs(settings, name_prefix="x-")
    assert [spec.name for spec in derived] == ["x-coinbase-book", "x-coinbase-trade-flow", "x-coinbase-volatility",
                                               "x-coinbase-alerts"]
    assert derived[-1].user_config["rules"], "the alert rules travel in the function's config"
    alerts_inputs = derived[-1].user_config["inputs"]  # what each input topic's records are
    assert set(alerts_inputs) == set(derived[-1].inputs) and sorted(alerts_inputs.values()) == sorted(SOURCES)
    assert alerts_inputs["persistent://feeds/realtime/tk"] == "ticker"
    assert router.name == "x-coinbase-router" and router.inputs == ("persistent://feeds/realtime/r",)
    assert set(router.user_config["topics"]) == {*routing.CHANNELS, routing.DEAD_LETTER}
    assert router.user_config["topics"]["ticker"] == "persistent://feeds/realtime/tk"
    assert stats.inputs == ("persistent://feeds/realtime/tk",) and stats.output == "persistent://feeds/realtime/ts"
    assert stats.user_config["dead_letter"] == "persistent://feeds/realtime/dl"
    config = stats.function_config(settings)
    assert config["className"] == "rtca.functions.stats.TickerStatsFunction"
    assert config["processingGuarantees"] == "MANUAL" and config["retainOrdering"] is True
    assert config["inputSpecs"]["persistent://feeds/realtime/tk"]["serdeClassName"].endswith("RawSerDe")
    assert (config["tenant"], config["namespace"]) == ("feeds", "realtime")


def test_fingerprint_is_stable_and_follows_config() -> None:
    settings = Settings()
    spec = function_specs(settings)[1]
    first = spec.function_config(settings)["userConfig"][FINGERPRINT_KEY]
    assert spec.function_config(settings)["userConfig"][FINGERPRINT_KEY] == first
    other = Settings(topics=Topics(ticker_stats="elsewhere"))
    assert function_specs(other)[1].function_config(other)["userConfig"][FINGERPRINT_KEY] != first


def test_code_files_follow_imports_into_analytics() -> None:
    names = {p.name for p in code_files("rtca.functions.stats")}
    assert {"stats.py", "routing.py", "runtime.py"} <= names
    assert any(p.parent.name == "analytics" for p in code_files("rtca.functions.stats"))


class FakeAdmin:
    """The few admin API routes deploy uses, in memory."""

    def __init__(self) -> None:
        self.functions: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.compaction: int | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/admin/v2/persistent/"):  # topic creation and compaction policy
            self.calls.append(f"topic {request.method} {request.url.path.rsplit('/', 1)[-1]}")
            if request.method == "POST":
                self.compaction = orjson.loads(request.content)
            if request.method == "GET":
                return httpx.Response(200, text=str(self.compaction))
            return httpx.Response(204)
        parts = request.url.path.split("/")  # /admin/v3/functions/t/ns/name[/status]
        name = parts[6] if len(parts) > 6 else ""
        self.calls.append(f"{request.method} {'/'.join(parts[6:])}")
        if request.method in ("POST", "PUT") and len(parts) == 7:
            body = request.content
            config = orjson.loads(body[body.index(b"{"): body.index(b"}\r\n") + 1])
            if request.method == "POST" and name in self.functions:
                return httpx.Response(400, text="exists")
            self.functions[name] = config
            return httpx.Response(204)
        if name not in self.functions:
            return httpx.Response(404, json={"reason": "not found"})
        if request.method == "GET" and len(parts) == 7:
            return httpx.Response(200, json=self.functions[name])
        if request.method == "GET" and parts[7] == "status":
            return httpx.Response(200, json={"numInstances": 1, "numRunning": 1, "instances": [
                {"instanceId": 0, "status": {"running": True, "error": "", "numRestarts": 0, "numReceived": 5,
                 "numSuccessfullyProcessed": 4, "numUserExceptions": 1, "numSystemExceptions": 0,
                 "averageLatency": 0.25, "latestUserExceptions": [{"exceptionString": "boom", "timestampMs": 5}],
                 "latestSystemExceptions": []}}]})  # fmt: skip
        if request.method == "DELETE":
            del self.functions[name]
            return httpx.Response(204)
        return httpx.Response(500)


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> FakeAdmin:
    fake = FakeAdmin()
    monkeypatch.setattr(fdeploy, "_admin", lambda settings, timeout=60.0: httpx.Client(
        base_url="http://admin", transport=httpx.MockTransport(fake.handler)))
    monkeypatch.setattr(fdeploy.time, "sleep", lambda s: None)
    return fake


def test_deploy_creates_then_is_a_no_op_then_updates(admin: FakeAdmin) -> None:
    settings = Settings()
    lines: list[str] = []
    first = fdeploy.deploy_functions(settings, say=lines.append)
    assert [r.action for r in first] == ["created"] * len(function_specs(Settings()))
    assert admin.calls.count("POST coinbase-router") == 1
    def function_writes() -> int:
        return len([c for c in admin.calls if c.startswith(("POST coinbase", "PUT coinbase"))])

    writes = function_writes()
    again = fdeploy.deploy_functions(settings, say=lines.append)
    assert [r.action for r in again] == ["unchanged"] * len(function_specs(Settings()))
    assert function_writes() == writes
    moved = Settings(topics=Topics(raw="moved"))
    assert [r.action for r in fdeploy.deploy_functions(moved, ["coinbase-router"], say=lines.append)] == ["updated"]
    assert "PUT coinbase-router" in admin.calls
    assert any("running" in line for line in lines)
    assert admin.compaction == fdeploy.COMPACTION_THRESHOLD_BYTES  # the statistics' output topic is compacted


def test_status_reports_instances_counts_and_exceptions(admin: FakeAdmin) -> None:
    settings = Settings()
    fdeploy.deploy_functions(settings, ["coinbase-ticker-stats"], say=lambda _: None)
    router, stats, *_ = fdeploy.function_status(settings)
    assert not router.deployed and "not deployed" in str(router)
    assert stats.deployed and (stats.running, stats.processed, stats.failed) == (1, 4, 1)
    assert stats.latest_exceptions == ("boom",) and "exception: boom" in str(stats)


def test_unknown_names_and_delete(admin: FakeAdmin) -> None:
    settings = Settings()
    with pytest.raises(ConfigError):
        fdeploy.deploy_functions(settings, ["nope"])
    fdeploy.deploy_functions(settings, say=lambda _: None)
    assert fdeploy.delete_functions(settings) == [spec.name for spec in function_specs(settings)]
    assert fdeploy.delete_functions(settings) == []


def test_unreachable_admin_is_a_deploy_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    monkeypatch.setattr(fdeploy, "_admin", lambda settings, timeout=60.0: httpx.Client(
        base_url="http://admin", transport=httpx.MockTransport(refuse)))
    with pytest.raises(DeployError, match="refused"):
        fdeploy.deploy_functions(Settings(), say=lambda _: None)

"""Function specs rendered from settings, and idempotent create-or-update against a mocked admin API."""

from __future__ import annotations

from pathlib import Path
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
        if request.url.path.startswith("/admin/v2/persistent/"):  # topics: creation, compaction, subscriptions
            self.calls.append(f"topic {request.method} {request.url.path.rsplit('/', 1)[-1]}")
            if "/subscription/" in request.url.path or request.url.path.endswith("/stats"):
                self.calls[-1] = f"topic {request.method} {request.url.path.split('/')[6]}/" + "/".join(
                    request.url.path.split("/")[7:])  # topic/subscription/<name> or topic/stats
                return httpx.Response(200, json={"subscriptions": {}}) if request.method == "GET" else \
                    httpx.Response(204)
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


def use_admin(monkeypatch: pytest.MonkeyPatch, fake: FakeAdmin) -> FakeAdmin:
    """`deploy`'s admin API is `fake` (and its waits do not sleep)."""
    monkeypatch.setattr(fdeploy, "_admin", lambda settings, timeout=60.0: httpx.Client(
        base_url="http://admin", transport=httpx.MockTransport(fake.handler)))
    monkeypatch.setattr(fdeploy.time, "sleep", lambda s: None)
    return fake


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> FakeAdmin:
    return use_admin(monkeypatch, FakeAdmin())


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
    # Pulsar cannot change inputs in place: keep the subscriptions, delete, create; drop the old input's subscription
    changed = admin.calls[admin.calls.index("PUT coinbase-router"):]
    assert changed.index("DELETE coinbase-router") < changed.index("POST coinbase-router")
    assert f"topic DELETE {settings.topics.raw}/subscription/feeds/realtime/coinbase-router" in changed
    assert set(admin.functions["coinbase-router"]["inputSpecs"]) == {moved.topic("moved")}
    assert admin.functions["coinbase-router"]["cleanupSubscription"] is True
    stats = Settings(topics=Topics(ticker="elsewhere"))
    assert [r.action for r in fdeploy.deploy_functions(stats, ["coinbase-ticker-stats"], say=lines.append)] == [
        "updated"]
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


class PackagesAdmin(FakeAdmin):
    """FakeAdmin plus Pulsar's package management as standalone runs it: a function's code is stored as package
    `name@version` on create (version 0) and update, and deleting the function leaves its packages
    (apache/pulsar#20930), which then blocks a create of the same name."""

    def __init__(self) -> None:
        super().__init__()
        self.packages: dict[str, set[int]] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        if request.url.path.startswith("/admin/v3/packages/function/"):  # .../function/t/ns/name[/version[/metadata]]
            versions = self.packages.setdefault(parts[7], set())
            if len(parts) == 8:
                return httpx.Response(200, json=[str(v) for v in sorted(versions)])
            exists = int(parts[8]) in versions
            if request.method == "DELETE":
                versions.discard(int(parts[8]))
                return httpx.Response(204 if exists else 404)
            return httpx.Response(200 if exists else 404, json={})
        if request.url.path.startswith("/admin/v3/functions/") and len(parts) == 7 and request.method in ("POST",
                                                                                                    "PUT"):
            versions = self.packages.setdefault(parts[6], set())
            if request.method == "POST" and parts[6] not in self.functions:
                if 0 in versions:
                    return httpx.Response(500, json={"reason": f"Package 'function://t/ns/{parts[6]}@0' metadata "
                                                               f"already exists"})
                versions.add(0)
            elif request.method == "PUT":
                versions.add(max(versions, default=-1) + 1)
        return super().handler(request)


@pytest.fixture
def packages_admin(monkeypatch: pytest.MonkeyPatch) -> PackagesAdmin:
    fake = PackagesAdmin()
    use_admin(monkeypatch, fake)
    return fake


def test_a_deleted_function_can_be_deployed_again(packages_admin: PackagesAdmin) -> None:
    """`rtca functions delete NAME` then `rtca functions deploy NAME` (what a refused update's hint says to do)."""
    settings = Settings()
    quiet = {"say": lambda _: None}
    fdeploy.deploy_functions(settings, ["coinbase-router"], **quiet)
    fdeploy.deploy_functions(Settings(topics=Topics(dead_letter="moved")), ["coinbase-router"], **quiet)  # @1
    assert fdeploy.delete_functions(settings, ["coinbase-router"]) == ["coinbase-router"]
    assert not any(packages_admin.packages["coinbase-router"]), "the deleted function's code packages are gone"
    assert [r.action for r in fdeploy.deploy_functions(settings, ["coinbase-router"], **quiet)] == ["created"]


def test_deploy_heals_a_name_blocked_by_a_package_left_behind(packages_admin: PackagesAdmin) -> None:
    """A function deleted without its package (pulsar-admin, an older rtca) is created again all the same."""
    packages_admin.packages["coinbase-book"] = {0}
    assert [r.action for r in fdeploy.deploy_functions(Settings(), ["coinbase-book"], say=lambda _: None)] == [
        "created"]


@pytest.mark.parametrize("text, said", [
    ("rules:\n  - name: wide\n    kind: spread_bp\n    threshold: 50\n", "unknown kind 'spread_bp'"),
    ("rules:\n  - name: wide\n    kind: spread_bps\n    threshold: 50\n    clear: 60\n", "clear 60.0 is above"),
    ("rules:\n  - name: wide\n    kind: spread_bps\n    treshold: 50\n", "unknown keys"),
    ("rules:\n  - name: wide\n    kind: spread_bps\n", "threshold"),
    ("rules:\n  - name: x\n    kind: spread_bps\n  threshold: 1\n", "not valid YAML"),
    ("rule:\n  - name: x\n", "under `rules:`"),
    (None, "cannot read the alert rules"),
])  # fmt: skip
def test_bad_alert_rules_are_a_config_error_before_anything_is_deployed(
    admin: FakeAdmin, tmp_path: Path, text: str | None, said: str
) -> None:
    """A rule the alerts function cannot parse would keep it from ever starting while deploy reports it running."""
    if text is not None:
        (tmp_path / "alerts.yaml").write_text(text)
    settings = Settings(infra_dir=tmp_path)
    with pytest.raises(ConfigError, match=said):
        fdeploy.deploy_functions(settings, say=lambda _: None)
    assert not admin.functions


def test_status_and_delete_do_not_need_the_alert_rules(admin: FakeAdmin, tmp_path: Path) -> None:
    """A broken or missing infra/alerts.yaml concerns deploying the alerts function, not looking at or removing any
    function."""
    fdeploy.deploy_functions(Settings(), ["coinbase-router"], say=lambda _: None)
    broken = Settings(infra_dir=tmp_path)  # no alerts.yaml there
    assert [s.deployed for s in fdeploy.function_status(broken, ["coinbase-router", "coinbase-alerts"])] == [True,
                                                                                                          False]
    assert len(fdeploy.function_status(broken)) == len(function_specs(Settings()))
    assert fdeploy.delete_functions(broken, ["coinbase-router"]) == ["coinbase-router"]
    with pytest.raises(ConfigError, match="unknown function"):
        fdeploy.function_status(broken, ["nope"])


def test_names_are_the_specs_names() -> None:
    assert fdeploy.NAMES == tuple(spec.name for spec in function_specs(Settings()))


def test_deploy_waits_for_every_instance_the_scale_setting_asks_for(admin: FakeAdmin,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """RTCA_SCALE__FUNCTION_PARALLELISM=3: deployed with 3 instances, so not done while only 1 of them runs."""
    handler = admin.handler

    def one_running(request: httpx.Request) -> httpx.Response:
        response = handler(request)
        if request.url.path.endswith("/status") and response.status_code == 200:
            wanted = admin.functions[request.url.path.split("/")[6]]["parallelism"]
            return httpx.Response(200, json={"numInstances": wanted, "numRunning": 1, "instances": []})
        return response

    monkeypatch.setattr(fdeploy, "_admin", lambda settings, timeout=60.0: httpx.Client(
        base_url="http://admin", transport=httpx.MockTransport(one_running)))
    scaled = Settings(scale={"function_parallelism": 3})
    with pytest.raises(DeployError, match=r"not running after .*\(1/3 running\)"):
        fdeploy.deploy_functions(scaled, ["coinbase-router"], wait=0.05, say=lambda _: None)
    assert admin.functions["coinbase-router"]["parallelism"] == 3


@pytest.mark.parametrize("exists, verb", [(False, "create"), (True, "update")])
def test_a_refused_create_or_update_says_which(monkeypatch: pytest.MonkeyPatch, exists: bool, verb: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            inputs = {Settings().topic(Settings().topics.raw): {}}  # the same inputs: an update in place
            if exists:
                return httpx.Response(200, json={"userConfig": {}, "inputSpecs": inputs})
            return httpx.Response(404, json={"reason": "Function coinbase-router doesn't exist"})  # as Pulsar says
        return httpx.Response(400, json={"reason": "Namespace does not exist"})

    monkeypatch.setattr(fdeploy, "_admin", lambda settings, timeout=60.0: httpx.Client(
        base_url="http://admin", transport=httpx.MockTransport(refuse)))
    with pytest.raises(DeployError, match=rf"^{verb} function coinbase-router: HTTP 400"):
        fdeploy.deploy_functions(Settings(), ["coinbase-router"], say=lambda _: None)


def test_a_crash_looping_function_shows_its_restarts_and_its_log(admin: FakeAdmin, monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """An instance that cannot start (a class name typo, an import error) is restarted every few seconds: the wait
    says so as it happens, and its timeout names the instance log and what the log says last."""
    handler, restarts = admin.handler, iter(range(1, 10_000))

    def crash_loop(request: httpx.Request) -> httpx.Response:
        response = handler(request)
        if request.url.path.endswith("/status") and response.status_code == 200:
            return httpx.Response(200, json={"numInstances": 1, "numRunning": 0, "instances": [
                {"instanceId": 0, "status": {"running": False, "error": "UNAVAILABLE: io exception",
                                             "numRestarts": next(restarts)}}]})  # fmt: skip
        return response

    monkeypatch.setattr(fdeploy, "_admin", lambda settings, timeout=60.0: httpx.Client(
        base_url="http://admin", transport=httpx.MockTransport(crash_loop)))
    settings = Settings(run_dir=tmp_path)
    folder = settings.logs_dir / "functions" / "functions" / "feeds" / "realtime" / "coinbase-router"
    folder.mkdir(parents=True)
    (folder / "coinbase-router-0.log").write_text("starting\nNameError: Could not import User Function Module x\n")
    lines: list[str] = []
    with pytest.raises(DeployError) as raised:
        fdeploy.deploy_functions(settings, ["coinbase-router"], wait=0.05, say=lines.append)
    assert any("restarted 1 times" in line for line in lines) and any("restarted 2 times" in line for line in lines)
    assert "Could not import User Function Module x" in str(raised.value) and str(folder) in str(raised.value)


def test_recreating_refuses_when_the_consumers_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stats the admin may not read (403) were taken for "no consumers": the function was deleted at once while its
    instances still ran with cleanupSubscription on (its subscriptions, and places, gone with it)."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        calls.append(f"{request.method} {path.rsplit('/', 1)[-1]}")
        if path.endswith("stats"):
            return httpx.Response(403, json={"reason": "not authorized"})
        return httpx.Response(204 if request.method == "DELETE" else 200, json=[] if request.method == "GET" else {})

    settings = Settings()
    admin = httpx.Client(base_url="http://pulsar", transport=httpx.MockTransport(handler))
    existing = {"inputSpecs": {settings.topic("a"): {}, settings.topic("b"): {}}}
    with pytest.raises(DeployError, match="consumers of"):  # refused: it cannot see the instances
        fdeploy._recreate(admin, settings, "rev-fn", existing, {settings.topic("a")}, lambda _: None)
    assert "DELETE rev-fn" not in calls, calls

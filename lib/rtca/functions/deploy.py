"""Deploy, inspect and remove the workbench's Pulsar Functions through Pulsar's admin REST API (v3).

On the local backend the functions run on the stack's functions worker with the project's virtualenv as their
interpreter, so they import `rtca` itself, and each is created or updated with its module's source as the uploaded
code file; on docker and external clusters the upload is a zip of `rtca` (`rtca.stack.profiles`). Deploying is
idempotent: a function whose config and code (the `rtca` modules it imports, hashed) are unchanged is left alone;
otherwise it is updated, which restarts it with the new code. A function whose input topics change (a topic renamed
in the settings) is deleted and created again, as Pulsar cannot change inputs in place; it keeps its subscriptions
on the inputs it still reads.

    deploy_functions(settings)              create or update every function (router, statistics, book, flow, ...)
    function_status(settings)               instances, processed and failed counts, latest exceptions
    delete_functions(settings, names)       remove functions (and their subscriptions)
    restart_function(settings, name)        restart a function's instances
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson
import yaml

from rtca.errors import ConfigError, DeployError
from rtca.functions import routing
from rtca.functions.runtime import RAW_SERDE
from rtca.settings import Settings, name_list
from rtca.stack.profiles import build_function_package, profile
from rtca.stack.remote import http_options, json_answer, origin, pulsar_topic_path
from rtca.stack.progress import say

Guarantee = Literal["ATLEAST_ONCE", "ATMOST_ONCE", "EFFECTIVELY_ONCE", "MANUAL"]
Action = Literal["created", "updated", "unchanged"]
FINGERPRINT_KEY = "rtca_fingerprint"


@dataclass(frozen=True)
class FunctionSpec:
    """One Pulsar Function as the workbench deploys it (topics are full names, rendered from settings)."""

    name: str
    module: str
    class_name: str
    inputs: tuple[str, ...]
    output: str | None = None
    user_config: Mapping[str, Any] = field(default_factory=dict)
    parallelism: int = 1
    #: MANUAL: our functions acknowledge an input once its output is stored (see `runtime.Publisher`).
    processing_guarantees: Guarantee = "MANUAL"
    #: Failover subscription: one consumer at a time, in order (statistics depend on the order of prices).
    retain_ordering: bool = True
    #: Earliest: a new subscription also gets what was published before the function first started.
    subscription_position: Literal["Earliest", "Latest"] = "Earliest"
    #: Have Pulsar compact the output topic (latest record per key), so that a restarted function that rebuilds its
    #: state from its output reads one record per product plus the recent tail, not the whole history.
    compact_output: bool = False
    #: Other topics it keeps its state in (checkpoints read back after a restart), compacted like the output.
    state_topics: tuple[str, ...] = ()

    @property
    def source_file(self) -> Path:
        found = importlib.util.find_spec(self.module)
        if found is None or found.origin is None:
            raise ConfigError(f"function {self.name}: module {self.module} not found")
        return Path(found.origin)

    def code(self, settings: Settings) -> tuple[str, bytes]:
        """(file name, bytes) to upload: the module's own file where the worker's Python has `rtca` (local), else
        the whole package built for the backend (docker, external: see `rtca.stack.profiles`)."""
        if profile(settings).function_code == "package":
            package = build_function_package(settings)
            return package.name, package.read_bytes()
        return self.upload_name, self.source_file.read_bytes()

    def function_config(self, settings: Settings) -> dict[str, Any]:
        """The admin API's FunctionConfig, with a fingerprint of config and code in userConfig."""
        upload_name, code = self.code(settings)
        config: dict[str, Any] = {
            "tenant": settings.pulsar.tenant,
            "namespace": settings.pulsar.namespace,
            "name": self.name,
            "runtime": "PYTHON",
            "py": upload_name,
            "className": f"{self.module}.{self.class_name}",
            "inputSpecs": {topic: {"serdeClassName": RAW_SERDE} for topic in self.inputs},
            "parallelism": self.instances(settings),
            "processingGuarantees": self.processing_guarantees,
            "retainOrdering": self.retain_ordering,
            "subscriptionPosition": self.subscription_position,
            "cleanupSubscription": True,
            "userConfig": dict(self.user_config),
        }
        if self.output:
            config["output"] = self.output
        digest = hashlib.sha256(orjson.dumps(config, option=orjson.OPT_SORT_KEYS))
        digest.update(code)
        for path in code_files(self.module):
            digest.update(path.read_bytes())
        config["userConfig"][FINGERPRINT_KEY] = digest.hexdigest()[:16]
        return config

    def instances(self, settings: Settings) -> int:
        """How many instances it runs: its own parallelism, or the backend's (`RTCA_SCALE__FUNCTION_PARALLELISM`)."""
        return max(self.parallelism, profile(settings).function_parallelism)

    @property
    def upload_name(self) -> str:
        """File name of the uploaded code: distinct from any importable module name (the instance puts its
        directory first on sys.path)."""
        return f"rtca_fn_{self.module.rsplit('.', 1)[-1]}.py"


#: Size of a compacted topic's not-yet-compacted tail at which the broker compacts it again.
COMPACTION_THRESHOLD_BYTES = 16 * 1024 * 1024

ROUTER = "coinbase-router"
TICKER_STATS = "coinbase-ticker-stats"
BOOK = "coinbase-book"
TRADE_FLOW = "coinbase-trade-flow"
VOLATILITY = "coinbase-volatility"
ALERTS = "coinbase-alerts"
#: The functions `rtca functions` manages, in `function_specs` order: status and delete need their names only, not
#: their specs (which read infra/alerts.yaml).
NAMES = (ROUTER, TICKER_STATS, BOOK, TRADE_FLOW, VOLATILITY, ALERTS)


def function_specs(settings: Settings, *, name_prefix: str = "") -> list[FunctionSpec]:
    """The functions `rtca functions deploy` manages, with topics from settings. Tests pass settings with their own
    topic names and a `name_prefix`, so they deploy the same specs beside the real ones."""
    t, topic = settings.topics, settings.topic
    routes = {channel: topic(getattr(t, channel)) for channel in (*routing.CHANNELS, routing.DEAD_LETTER)}
    return [
        FunctionSpec(
            name=name_prefix + ROUTER, module="rtca.functions.router", class_name="Router",
            inputs=(topic(t.raw),), user_config={"topics": routes},
        ),
        FunctionSpec(
            name=name_prefix + TICKER_STATS, module="rtca.functions.stats", class_name="TickerStatsFunction",
            inputs=(topic(t.ticker),), output=topic(t.ticker_stats),
            user_config={"dead_letter": topic(t.dead_letter), "span": 10, "window": 5}, compact_output=True,
        ),
        FunctionSpec(
            name=name_prefix + BOOK, module="rtca.functions.book", class_name="OrderBookFunction",
            inputs=(topic(t.level2),), output=topic(t.book),
            user_config={"dead_letter": topic(t.dead_letter), "alerts": topic(t.alerts), "cadence_ms": 1000,
                         "depth_bps": 50},
            compact_output=True,
        ),
        FunctionSpec(
            name=name_prefix + TRADE_FLOW, module="rtca.functions.flow", class_name="TradeFlowFunction",
            inputs=(topic(t.matches),), output=topic(t.trade_flow),
            user_config={"dead_letter": topic(t.dead_letter), "window_ms": 60_000}, compact_output=True,
        ),
        FunctionSpec(
            name=name_prefix + VOLATILITY, module="rtca.functions.volatility", class_name="VolatilityFunction",
            inputs=(topic(t.ticker),), output=topic(t.volatility),
            user_config={"dead_letter": topic(t.dead_letter), "window_ms": 60_000}, compact_output=True,
        ),
        FunctionSpec(
            name=name_prefix + ALERTS, module="rtca.functions.alerts", class_name="AlertsFunction",
            inputs=(topic(t.ticker), topic(t.book), topic(t.volatility), topic(t.feed_health)),
            output=topic(t.alerts),
            user_config={"dead_letter": topic(t.dead_letter), "rules": alert_rules(settings),
                         "state_topic": topic(t.alerts_state),
                         "inputs": {topic(t.ticker): "ticker", topic(t.book): "book",
                                    topic(t.volatility): "volatility", topic(t.feed_health): "feed_health"}},
            compact_output=True, state_topics=(topic(t.alerts_state),),
        ),
    ]  # fmt: skip


def alert_rules(settings: Settings) -> list[dict[str, Any]]:
    """The rules of `infra/alerts.yaml`, passed in the function's config (a worker need not have the file).

    Checked here as the function parses them: a rule it cannot parse would keep it from starting, for good (it
    retries its start before every record, processing none, and counts no failure).
    """
    from rtca.analytics.alerts import parse_rules

    path = settings.infra_dir / "alerts.yaml"
    hint = "fix the file (its header describes each rule kind and key); RTCA_INFRA_DIR sets the infra directory"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the alert rules: {exc.strerror}: {path}", hint=hint) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"alert rules {path}: not valid YAML: {exc}", hint=hint) from None
    rules = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
        raise ConfigError(f"alert rules {path}: expected a list of rules (mappings) under `rules:`", hint=hint)
    try:
        parse_rules(rules)
    except (TypeError, ValueError) as exc:  # TypeError: a rule without name, kind or threshold
        raise ConfigError(f"alert rules {path}: {exc}", hint=hint) from None
    return rules


def identity_spec(name: str, input_topic: str, output_topic: str) -> FunctionSpec:
    """An identity function: same runtime, same input serde, the runtime's own publish and auto-ack (the smoke
    test's function, and the benchmarks' second baseline)."""
    return FunctionSpec(
        name=name, module="rtca.functions.identity", class_name="Identity", inputs=(input_topic,),
        output=output_topic, processing_guarantees="ATLEAST_ONCE",
    )  # fmt: skip


def publishing_identity_spec(name: str, input_topic: str, output_topic: str) -> FunctionSpec:
    """The benchmarks' reference: an identity deployed as the router and the statistics are (``MANUAL``, our
    `Publisher`), so a ratio to it is the cost of their processing alone."""
    return FunctionSpec(
        name=name, module="rtca.functions.identity", class_name="PublishingIdentity", inputs=(input_topic,),
        output=output_topic,
    )  # fmt: skip


# --- the code a function runs ---------------------------------------------------------------------------------------
def code_files(module: str) -> list[Path]:
    """Source files of `module` and of every `rtca` module it imports, transitively (for the fingerprint)."""
    seen: dict[str, Path] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # `from module import function`: not a module
            continue
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        path = seen[name] = Path(spec.origin)
        pending += [name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)]  # parent packages run too
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if isinstance(node, ast.Import):
                pending += [a.name for a in node.names if a.name.split(".")[0] == "rtca"]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                if base.split(".")[0] == "rtca":
                    pending.append(base)
                    pending += [f"{base}.{a.name}" for a in node.names]  # `from pkg import module`
    return [seen[name] for name in sorted(seen)]


# --- admin API ------------------------------------------------------------------------------------------------------
def _admin(settings: Settings, timeout: float = 60.0) -> httpx.Client:
    return httpx.Client(base_url=settings.pulsar.admin_url, timeout=timeout, **http_options(settings, "pulsar"))


def _path(settings: Settings, name: str = "", suffix: str = "") -> str:
    base = f"/admin/v3/functions/{settings.pulsar.tenant}/{settings.pulsar.namespace}"
    return f"{base}/{name}{suffix}" if name else base


def _fail(what: str, response: httpx.Response, hint: str | None = None) -> DeployError:
    return DeployError(f"{what}: HTTP {response.status_code} {response.text[:500]}", hint=hint)


def _request(call: Callable[[], httpx.Response], what: str) -> httpx.Response:
    try:
        return call()
    except httpx.HTTPError as exc:
        try:
            where = f" at {origin(exc.request.url)}"
        except RuntimeError:  # an error raised before any request was built
            where = ""
        raise DeployError(f"{what}{where}: {exc}", hint="is Pulsar up with its functions worker? `rtca status`, and "
                                                        "`rtca config` for the admin URL in use") from exc


def _no_such_function(response: httpx.Response) -> bool:
    """A 404 of the functions API (a JSON `reason`): the function does not exist. Any other 404 comes from something
    that is not Pulsar's admin API (another service on the port), which reported every function as not deployed."""
    if response.status_code != 404:
        return False
    try:
        if isinstance(response.json().get("reason"), str):
            return True
    except (ValueError, AttributeError):
        pass
    raise DeployError(f"{origin(response.request.url)} answered HTTP 404 "
                      f"({response.headers.get('content-type') or 'no content type'}), not as Pulsar's functions API",
                      hint="is that Pulsar's admin URL? `rtca config` shows the one in use (RTCA_PULSAR__WEB_PORT, "
                           "RTCA_PULSAR__ADMIN_URL_OVERRIDE)")


def _get_config(admin: httpx.Client, settings: Settings, name: str) -> dict[str, Any] | None:
    response = _request(lambda: admin.get(_path(settings, name)), f"read function {name}")
    if _no_such_function(response):
        return None
    if not response.is_success:
        raise _fail(f"read function {name}", response)
    return json_answer(response, f"read function {name}")


@dataclass(frozen=True)
class DeployResult:
    name: str
    action: Action
    running: int
    instances: int

    def __str__(self) -> str:
        return f"{self.name}: {self.action}, {self.running}/{self.instances} instances running"


def deploy(
    settings: Settings, specs: Sequence[FunctionSpec], *, wait: float = 180.0, say: Callable[[str], None] = say
) -> list[DeployResult]:
    """Create or update each function, then wait until all of their instances run."""
    results: list[tuple[FunctionSpec, Action]] = []
    with _admin(settings) as admin:
        for spec in specs:
            config = spec.function_config(settings)
            existing = _get_config(admin, settings, spec.name)
            if existing is not None and (existing.get("userConfig") or {}).get(FINGERPRINT_KEY) == config[
                "userConfig"][FINGERPRINT_KEY]:
                say(f"- {spec.name}: unchanged")
                results.append((spec, "unchanged"))
                continue
            action: Action = "created" if existing is None else "updated"
            files = {
                "functionConfig": (None, orjson.dumps(config), "application/json"),
                "data": (config["py"], spec.code(settings)[1], "application/octet-stream"),
            }
            recreated = existing is not None and set(existing.get("inputSpecs") or {}) != set(config["inputSpecs"])
            if existing is not None and recreated:
                _recreate(admin, settings, spec.name, existing, set(config["inputSpecs"]), say)
                existing = None  # created below, under the subscription it already had on the inputs it keeps
            else:
                say(f"- {spec.name}: {'creating' if existing is None else 'updating'} ({config['className']}) ...")
            send = admin.post if existing is None else admin.put
            response = _request(lambda: send(_path(settings, spec.name), files=files), f"deploy {spec.name}")
            if existing is None and _stale_package(response):  # deleted before its package was (older rtca)
                say(f"  {spec.name}: deleting the code package a deleted function of this name left in Pulsar")
                _delete_packages(admin, settings, spec.name)
                response = _request(lambda: send(_path(settings, spec.name), files=files), f"deploy {spec.name}")
            if not response.is_success:
                hint = None
                if existing is not None and response.status_code == 400:
                    hint = (f"Pulsar refuses to change some settings of a running function: "
                            f"`rtca functions delete {spec.name}` then deploy again")  # fmt: skip
                elif recreated:  # deleted to change its inputs: say so, the user is left without it
                    hint = (f"{spec.name} was deleted to change its inputs and is not deployed now (its "
                            f"subscriptions are kept): `rtca functions deploy {spec.name}` creates it again")
                raise _fail(f"{'create' if existing is None else 'update'} function {spec.name}", response, hint)
            results.append((spec, action))
        for spec in specs:
            for topic in (*([spec.output] if spec.compact_output and spec.output else []), *spec.state_topics):
                _ensure_compaction(admin, topic)
        # an unchanged function may have been left stopped (after a Pulsar restart on a backend rtca does not run,
        # where no `rtca up` revives it): deploying again starts it rather than waiting for it in vain
        began = time.monotonic()
        revive_functions(settings, [spec.name for spec, action in results if action == "unchanged"], timeout=wait,
                         say=say)  # fmt: skip
        wait = max(min(wait, 5.0), wait - (time.monotonic() - began))  # one wait in all, not one per step
        return [_wait_running(admin, settings, spec, action, wait, say) for spec, action in results]


def _recreate(admin: httpx.Client, settings: Settings, name: str, existing: Mapping[str, Any], inputs: set[str],
              say: Callable[[str], None]) -> None:  # fmt: skip
    """Delete function `name` so that it can be created with other inputs, keeping its place on those it keeps.

    Pulsar cannot change a function's inputs in place: an update that adds one is refused ("Input Topics cannot be
    altered") and one that only removes some keeps reading them (it merges the two lists). Deleting the function
    would also delete its subscriptions, so that the new one read its kept inputs again from the earliest message
    retained (the namespace's retention: 7 days by default). So the function is first updated to keep them, and deleted
    only once its instances run that update (the worker stops an instance with the settings it was started with);
    then the subscriptions on the inputs it no longer reads are deleted (their backlog would grow for ever)."""
    before = sorted(existing.get("inputSpecs") or {})
    removed, added = sorted(set(before) - inputs), sorted(inputs - set(before))
    say(f"- {name}: its inputs change ({', '.join(f'-{t}' for t in removed)}{', ' if removed and added else ''}"
        f"{', '.join(f'+{t}' for t in added)}); Pulsar cannot change them in place: recreating it ...")
    subscription = existing.get("subName") or f"{settings.pulsar.tenant}/{settings.pulsar.namespace}/{name}"
    old = _consumers(admin, before, subscription)
    keep = {"tenant": settings.pulsar.tenant, "namespace": settings.pulsar.namespace, "name": name,
            "cleanupSubscription": False}  # fmt: skip
    response = _request(lambda: admin.put(_path(settings, name), files={
        "functionConfig": (None, orjson.dumps(keep), "application/json")}), f"update function {name}")  # fmt: skip
    if not response.is_success:
        raise _fail(f"update function {name} to keep its subscriptions", response)
    if any(old.values()):  # instances run: wait for their restart with the update (new consumers on every input)
        _wait_consumers(admin, before, subscription, lambda now: all(now[t] and not now[t] & old[t] for t in now),
                        f"{name}'s instances to restart with the update")  # fmt: skip
    response = _request(lambda: admin.delete(_path(settings, name)), f"delete function {name}")
    if not response.is_success:
        raise _fail(f"delete function {name} (to change its inputs)", response)
    _delete_packages(admin, settings, name)  # else Pulsar refuses the name (see `delete_functions`)
    # The worker stops the instances after the delete returns: one still running would subscribe again to a
    # topic whose subscription is deleted below, and read alongside the new function.
    _wait_consumers(admin, before, subscription, lambda now: not any(now.values()), f"{name}'s instances to stop")
    for topic in removed:
        path = f"{pulsar_topic_path(topic)}/subscription/{quote(subscription, safe='')}"
        response = _request(lambda p=path: admin.delete(p, params={"force": "true"}),  # type: ignore[misc]
                            f"delete subscription {subscription} on {topic}")  # fmt: skip
        if not (response.is_success or response.status_code == 404):
            raise _fail(f"delete subscription {subscription} on {topic}", response)


def _consumers(admin: httpx.Client, topics: Sequence[str], subscription: str) -> dict[str, set[str]]:
    """Per topic, the names of the consumers attached to `subscription` (random per instance start)."""
    found = {}
    for topic in topics:
        base = pulsar_topic_path(topic)
        response = _request(lambda b=base: admin.get(f"{b}/stats"), f"stats of {topic}")  # type: ignore[misc]
        if response.status_code == 404:  # a partitioned topic (or none: nothing attached)
            response = _request(lambda b=base: admin.get(f"{b}/partitioned-stats"),  # type: ignore[misc]
                                f"stats of {topic}")  # fmt: skip
        if not (response.is_success or response.status_code == 404):  # unseen consumers are not "none": the
            # waits would pass at once and delete the function while it runs with cleanupSubscription on
            raise _fail(f"read the consumers of {subscription} on {topic} (to recreate the function in its place)",
                        response, hint="the admin credentials need the topics' stats: `rtca functions delete` "
                                       "then deploy recreates it reading its inputs from their start")  # fmt: skip
        stats = json_answer(response, f"read the stats of {topic}") if response.is_success else {}
        consumers = ((stats.get("subscriptions") or {}).get(subscription) or {}).get("consumers") or []
        found[topic] = {str(c.get("consumerName")) for c in consumers}
    return found


def _wait_consumers(admin: httpx.Client, topics: Sequence[str], subscription: str,
                    done: Callable[[dict[str, set[str]]], bool], what: str, timeout: float = 120.0
                    ) -> None:  # fmt: skip
    """Wait until the consumers on `subscription` satisfy `done`."""
    deadline = time.monotonic() + timeout
    while not done(_consumers(admin, topics, subscription)):
        if time.monotonic() > deadline:
            raise DeployError(f"gave up waiting for {what} after {timeout:.0f} s",
                              hint="the worker's log: `rtca logs pulsar`")  # fmt: skip
        time.sleep(0.5)


def _ensure_compaction(admin: httpx.Client, topic: str) -> None:
    """Create `topic` if needed and set its compaction threshold (a topic policy; idempotent)."""
    path = pulsar_topic_path(topic)
    response = _request(lambda: admin.put(path), f"create topic {topic}")
    if not (response.is_success or response.status_code == 409):
        raise _fail(f"create topic {topic}", response)
    current = _request(lambda: admin.get(f"{path}/compactionThreshold"), f"compaction threshold of {topic}")
    if current.is_success and current.text.strip() == str(COMPACTION_THRESHOLD_BYTES):
        return
    response = _request(lambda: admin.post(f"{path}/compactionThreshold", json=COMPACTION_THRESHOLD_BYTES),
                        f"set compaction threshold of {topic}")  # fmt: skip
    if not response.is_success:
        raise _fail(f"set compaction threshold of {topic}", response)


def _wait_running(
    admin: httpx.Client, settings: Settings, spec: FunctionSpec, action: Action, wait: float,
    say: Callable[[str], None],
) -> DeployResult:  # fmt: skip
    started = time.monotonic()
    wanted = spec.instances(settings)
    if action != "unchanged":
        time.sleep(1.0)  # the worker (re)schedules asynchronously: don't read the old instance's status
    last = ""
    while True:
        status = _status_json(admin, settings, spec.name)
        running = int(status.get("numRunning") or 0) if status else 0
        instances = [i.get("status") or {} for i in (status or {}).get("instances") or []]
        errors = [i["error"] for i in instances if i.get("error")]
        restarts = sum(int(i.get("numRestarts") or 0) for i in instances)  # a crash loop: each restart is news
        if running >= wanted:
            if action != "unchanged" or last:  # an unchanged function found running: its "unchanged" line says it
                say(f"  {spec.name}: {running}/{wanted} running ({time.monotonic() - started:.1f} s)")
            return DeployResult(spec.name, action, running, int(status.get("numInstances") or 0))
        now = (f"{running}/{wanted} running" + (f", restarted {restarts} times" if restarts else "")
               + (f", last error: {errors[-1][:200]}" if errors else ""))  # fmt: skip
        if now != last:
            say(f"  {spec.name}: {now} ...")
            last = now
        if time.monotonic() - started > wait:
            logs, logged = _instance_logs(settings, spec.name)
            raise DeployError(f"function {spec.name} not running after {wait:.0f} s ({now})"
                              + (f"; its log ends: {logged}" if logged else ""),
                              hint=f"the worker's log: `rtca logs pulsar`; the instances' logs: {logs}")
        time.sleep(1.0)


def _instance_logs(settings: Settings, name: str) -> tuple[str, str]:
    """Where a function's instances log (on the local backend: the folder, and the last line of instance 0's log,
    where an instance that cannot start says why; the status only has the worker's "UNAVAILABLE")."""
    where = f"functions/{settings.pulsar.tenant}/{settings.pulsar.namespace}/{name}"
    if profile(settings).backend != "local":
        return f"under the Pulsar logs directory, {where}", ""
    folder = settings.logs_dir / "functions" / where  # the worker's logDirectory is <logs>/functions
    try:
        with (folder / f"{name}-0.log").open("rb") as log:
            log.seek(max(0, log.seek(0, 2) - 4096))
            lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return str(folder), lines[-1][-300:] if lines else ""


def _status_json(admin: httpx.Client, settings: Settings, name: str) -> dict[str, Any] | None:
    response = _request(lambda: admin.get(_path(settings, name, "/status")), f"status of {name}")
    if _no_such_function(response):
        return None
    if not response.is_success:
        raise _fail(f"status of {name}", response)
    return json_answer(response, f"read the status of {name}")


def _select(settings: Settings, names: str | Iterable[str] | None) -> list[FunctionSpec]:
    wanted = _names(settings, names, known_only=True)
    known = {spec.name: spec for spec in function_specs(settings)}
    return [known[n] for n in wanted]


def _names(settings: Settings, names: str | Iterable[str] | None, known_only: bool) -> list[str]:
    """The workbench's function names (checked), or with `known_only=False` any names (tests, benchmarks)."""
    wanted = name_list(names)
    if wanted is None:
        return list(NAMES)
    if known_only:
        unknown = [n for n in wanted if n not in NAMES]
        if unknown:
            raise ConfigError(f"unknown function(s): {', '.join(unknown)}", hint=f"known: {', '.join(NAMES)}")
    return wanted


def deploy_functions(
    settings: Settings, names: str | list[str] | None = None, *, wait: float = 180.0,
    say: Callable[[str], None] = say
) -> list[DeployResult]:
    """`rtca functions deploy [NAME...]`: create or update the workbench's functions (all by default)."""
    return deploy(settings, _select(settings, names), wait=wait, say=say)


# --- status ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstanceStatus:
    instance_id: int
    running: bool
    error: str
    restarts: int
    received: int
    processed: int
    user_exceptions: int
    system_exceptions: int
    avg_latency_ms: float | None


@dataclass(frozen=True)
class FunctionStatus:
    """One function: its instances and counts since they started, plus the latest exceptions (newest first)."""

    name: str
    deployed: bool
    instances: tuple[InstanceStatus, ...] = ()
    latest_exceptions: tuple[str, ...] = ()

    @property
    def running(self) -> int:
        return sum(i.running for i in self.instances)

    @property
    def processed(self) -> int:
        return sum(i.processed for i in self.instances)

    @property
    def received(self) -> int:
        return sum(i.received for i in self.instances)

    @property
    def failed(self) -> int:
        return sum(i.user_exceptions + i.system_exceptions for i in self.instances)

    def __str__(self) -> str:
        if not self.deployed:
            return f"{self.name}: not deployed"
        lines = [f"{self.name}: {self.running}/{len(self.instances)} running, received {self.received}, "
                 f"processed {self.processed}, failed {self.failed}"]  # fmt: skip
        for i in self.instances:
            state = "running" if i.running else f"DOWN {i.error}".rstrip()
            latency = f", avg {i.avg_latency_ms:.2f} ms" if i.avg_latency_ms is not None else ""
            if len(self.instances) == 1 and i.running and not i.restarts:  # nothing the first line does not say
                lines[0] += f" (avg {i.avg_latency_ms:.2f} ms)" if i.avg_latency_ms is not None else ""
            else:
                lines.append(f"  instance {i.instance_id}: {state}, restarts {i.restarts}{latency}")
        lines += [f"  exception: {text}" for text in self.latest_exceptions]
        return "\n".join(lines)


def _instance(raw: Mapping[str, Any]) -> tuple[InstanceStatus, list[tuple[int, str]]]:
    s = raw.get("status") or {}
    latency = s.get("averageLatency")
    exceptions = [
        (int(e.get("timestampMs") or e.get("msSinceEpoch") or 0), str(e.get("exceptionString", "")))
        for e in (s.get("latestUserExceptions") or []) + (s.get("latestSystemExceptions") or [])
    ]
    return InstanceStatus(
        instance_id=int(raw.get("instanceId", 0)), running=bool(s.get("running")), error=str(s.get("error") or ""),
        restarts=int(s.get("numRestarts") or 0), received=int(s.get("numReceived") or 0),
        processed=int(s.get("numSuccessfullyProcessed") or 0), user_exceptions=int(s.get("numUserExceptions") or 0),
        system_exceptions=int(s.get("numSystemExceptions") or 0),
        avg_latency_ms=float(latency) if latency is not None else None,
    ), exceptions  # fmt: skip


def function_status(
    settings: Settings, names: list[str] | None = None, *, known_only: bool = True
) -> list[FunctionStatus]:
    """`rtca functions status [NAME...]`: each function's instances, counts and latest exceptions (all of the
    workbench's by default)."""
    wanted = _names(settings, names, known_only)
    with _admin(settings, timeout=30) as admin:
        return [_function_status(admin, settings, name) for name in wanted]


def _function_status(admin: httpx.Client, settings: Settings, name: str) -> FunctionStatus:
    status = _status_json(admin, settings, name)
    if status is None:
        return FunctionStatus(name, deployed=False)
    instances, exceptions = [], []
    for raw in status.get("instances") or []:
        instance, errors = _instance(raw)
        instances.append(instance)
        exceptions += errors
    latest = tuple(text for _, text in sorted(exceptions, reverse=True)[:5])
    return FunctionStatus(name, True, tuple(sorted(instances, key=lambda i: i.instance_id)), latest)


# --- lifecycle -------------------------------------------------------------------------------------------------------
def restart_function(settings: Settings, name: str) -> None:
    """Restart every instance of `name` (they rebuild their state as after a crash)."""
    with _admin(settings) as admin:
        response = _request(lambda: admin.post(_path(settings, name, "/restart")), f"restart {name}")
        if not response.is_success:
            raise _fail(f"restart function {name}", response)


def revive_functions(settings: Settings, names: Iterable[str] | None = None, *, timeout: float = 120.0,
                     say: Callable[[str], None] = say) -> list[str]:  # fmt: skip
    """Restart deployed functions (of the namespace, or those of `names`) whose instances are not running; returns
    their names. Waits up to `timeout` for them to run, saying so every 10 s, and names those that do not (their
    code may be broken: it is not ours to fix here).

    Pulsar standalone's worker fetches each function's code from the broker's package service while that service
    is still starting (HTTP 503) and does not retry, so after a Pulsar restart some functions stay down.
    """
    if names is None:
        with _admin(settings) as admin:
            listed = _request(lambda: admin.get(_path(settings)), "list functions")
            names = list(json_answer(listed, "list functions")) if listed.is_success else []
    revived = []
    for name in names:
        status = function_status(settings, [name], known_only=False)[0]
        if status.deployed and status.running < len(status.instances):
            restart_function(settings, name)
            revived.append(name)
    if not revived:
        return revived
    say(f"- restarting functions the worker left stopped: {', '.join(revived)} ...")
    began = time.monotonic()
    said = began
    while True:
        statuses = function_status(settings, revived, known_only=False)
        down = [s.name for s in statuses if not (s.instances and s.running == len(s.instances))]
        waited = time.monotonic() - began
        if not down:
            say(f"  running ({waited:.0f} s)")
            break
        if waited >= timeout:
            say(f"  not running after {timeout:.0f} s: {', '.join(down)} (`rtca functions status`, "
                f"logs in {settings.logs_dir / 'functions'})")
            break
        if time.monotonic() - said >= 10:
            say(f"  waiting for {', '.join(down)} ({waited:.0f} s)")
            said = time.monotonic()
        time.sleep(2)
    return revived


def delete_functions(
    settings: Settings, names: Iterable[str] | None = None, *, known_only: bool = True
) -> list[str]:
    """`rtca functions delete [NAME...]`: remove functions (all of the workbench's by default) with their
    subscriptions; returns the names that existed. `known_only=False` admits any name (tests, benchmarks)."""
    wanted = _names(settings, names, known_only)
    deleted = []
    with _admin(settings) as admin:
        for name in wanted:
            response = _request(lambda n=name: admin.delete(_path(settings, n)), f"delete {name}")  # type: ignore[misc]
            if response.status_code != 404 and not response.is_success:
                raise _fail(f"delete function {name}", response)
            _delete_packages(admin, settings, name)  # also a deleted function's, left by an older rtca
            if response.status_code != 404:
                deleted.append(name)
    return deleted


def _stale_package(response: httpx.Response) -> bool:
    """Whether a create was refused for the code package of a function deleted earlier (apache/pulsar#20930)."""
    return response.status_code == 500 and "metadata already exists" in response.text


def _delete_packages(admin: httpx.Client, settings: Settings, name: str) -> None:
    """Delete the code packages (`function://tenant/namespace/name@version`) Pulsar keeps when a function is deleted.

    With package management on (`pulsar standalone` turns it on) Pulsar does not delete them (apache/pulsar#20930)
    and then refuses to create a function of the same name again (HTTP 500 "Package ...@0 metadata already
    exists"). Without package management the listing is refused and the code went with the function.
    """
    base = f"/admin/v3/packages/function/{settings.pulsar.tenant}/{settings.pulsar.namespace}/{name}"
    listed = _request(lambda: admin.get(base), f"list the code packages of {name}")
    if not listed.is_success:  # package management disabled
        return
    for version in json_answer(listed, f"list the code packages of {name}"):
        # A deleted version's folder stays in the package storage, listed, its metadata gone.
        path = f"{base}/{version}"
        if _request(lambda: admin.get(f"{path}/metadata"), f"package {name}@{version}").status_code != 200:
            continue
        response = _request(lambda: admin.delete(path), f"delete package {name}@{version}")
        if not (response.is_success or response.status_code == 404):
            raise _fail(f"delete the code package {name}@{version}", response)

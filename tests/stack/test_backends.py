"""The docker and external backends, and what differs between backends (rtca.stack.profiles).

Without a Docker engine (CI, this machine) the compose file is checked against a schema of the Compose keys it may
use plus the project's rules (pinned tags, health checks, named volumes, memory); `docker compose config` runs too
where the Compose plugin exists. The external backend is exercised against the running local stack's URLs as if
they were a remote cluster: `up` only checks, then a table, a function (uploaded as the zip package) and Superset's
database are deployed there and checked.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psutil
import pytest
import yaml

from rtca import stack as rtca_stack
from rtca.errors import PrerequisiteError, ServiceError
from rtca.pinot.client import PinotClient, stream_configs
from rtca.settings import PROJECT_ROOT, Settings, load_settings
from rtca.stack import docker, external, profiles, remote
from rtca.stack.process import ServiceState
from rtca.stack.secrets import superset_secrets
from rtca.superset.client import SupersetClient
from cleanup import drop_topics
from waiting import wait_for

COMPOSE = PROJECT_ROOT / "infra" / "docker" / "compose.yaml"
SCHEMA = Path(__file__).with_name("compose-subset.schema.json")
STATEFUL = ("pulsar", "zookeeper", "pinot-controller", "pinot-server", "superset")
MEMORY_BUDGET = 12 * 1024**3  # of a 16 GB laptop


# --- compose file -------------------------------------------------------------------------------------------------
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation (`${V}`, `${V:-default}`, `${V:?error}`, `$$`) over a loaded file."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.groups()
        found = env.get(name)
        if op in (":-", "-"):
            return found if found or (op == "-" and found is not None) else arg
        if op in (":?", "?") and not found:
            raise KeyError(f"${{{name}}} is required: {arg}")
        return found or ""

    return _VARIABLE.sub(replace, value)


def variables(value: Any) -> dict[str, str | None]:
    """Every variable the file uses -> its inline default (None when it has none)."""
    found: dict[str, str | None] = {}
    for match in _VARIABLE.finditer(json.dumps(value)):
        if match.group(1):
            default = match.group(3) if match.group(2) in (":-", "-") else None
            found.setdefault(match.group(1), default)
    return found


def memory_bytes(limit: str) -> int:
    return int(limit[:-1]) * {"k": 1024, "m": 1024**2, "g": 1024**3}[limit[-1]]


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def rendered_env() -> dict[str, str]:
    settings = load_settings()
    return {**docker.compose_env(settings, secrets=False), "SUPERSET_SECRET_KEY": "test-only",
            "SUPERSET_ADMIN_PASSWORD": "test-only"}


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], rendered_env: dict[str, str]) -> dict[str, Any]:
    return interpolate(raw_compose, rendered_env)


def compose_plugin_available() -> bool:
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not compose_plugin_available(), reason="no `docker compose` plugin here: the schema test covers it")
def test_docker_compose_config_accepts_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERSET_SECRET_KEY", "test-only")
    monkeypatch.setenv("SUPERSET_ADMIN_PASSWORD", "test-only")
    result = docker.config(load_settings(backend="docker"), "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_file_matches_the_schema(compose: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA.read_text()))
    errors = sorted(jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).iter_errors(compose),
                    key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_services_are_consistent(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert tuple(services) == docker.SERVICES
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert "healthcheck" in services[dependency]
        if name != "net":  # one network namespace: only `net` publishes ports
            assert service["network_mode"] == "service:net", name
            assert "ports" not in service, name
    assert all(port.startswith("127.0.0.1:") for port in services["net"]["ports"]), "published beyond loopback"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and re.match(r"^\d", tag), f"{name}: {image} is not pinned"
        if "build" in service:  # a thin layer of ours: its base image is pinned too
            dockerfile = COMPOSE.parent / service["build"]["context"] / service["build"].get("dockerfile",
                                                                                            "Dockerfile")
            bases = re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.MULTILINE)
            assert bases, dockerfile
            for base in bases:
                assert re.match(r"^[\w./-]+:\d[\w.-]*$", base), f"{dockerfile}: FROM {base} is not pinned"


def test_versions_match_the_local_stack(compose: dict[str, Any]) -> None:
    settings = load_settings()
    pulsar_base = (COMPOSE.parent / "pulsar" / "Dockerfile").read_text()
    superset_base = (COMPOSE.parent / "superset" / "Dockerfile").read_text()
    assert f"FROM apachepulsar/pulsar:{settings.pulsar.version}\n" in pulsar_base
    assert f"FROM apache/superset:{settings.superset.version}\n" in superset_base
    assert compose["services"]["pinot-controller"]["image"].startswith("apachepinot/pinot:1.")
    # The extra Python packages carry the project's own pins.
    orjson_pin = re.search(r'"(orjson==[^"]+)"', (PROJECT_ROOT / "pyproject.toml").read_text())
    assert orjson_pin and orjson_pin.group(1) in pulsar_base
    superset_pins = (PROJECT_ROOT / "infra" / "superset" / "requirements.txt").read_text()
    for pin in re.findall(r"(pinotdb==\S+|cachetools==\S+)", superset_base):
        assert pin in superset_pins, f"{pin} differs from infra/superset/requirements.txt"


def test_every_service_has_a_health_check_and_a_memory_limit_within_budget(compose: dict[str, Any]) -> None:
    total = 0
    for name, service in compose["services"].items():
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        total += memory_bytes(service["mem_limit"])
    assert total <= MEMORY_BUDGET, f"memory limits add up to {total / 1024**3:.1f} GiB"
    # Each JVM's maximum heap fits inside its container's limit.
    heaps = {"pulsar": "PULSAR_MEM", "pinot-controller": "JAVA_OPTS", "pinot-broker": "JAVA_OPTS",
             "pinot-server": "JAVA_OPTS", "zookeeper": "JVMFLAGS"}
    for name, variable in heaps.items():
        xmx = re.search(r"-Xmx(\d+)([kmg])", compose["services"][name]["environment"][variable])
        assert xmx, name
        assert memory_bytes(xmx.group(1) + xmx.group(2)) < memory_bytes(compose["services"][name]["mem_limit"])


def test_data_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source in declared, f"{name}: {mount} is not a named volume"
            used.add(source)
        if name in STATEFUL:
            assert service.get("volumes"), f"{name} keeps its data outside a named volume"
    assert used == declared


def test_compose_variables_are_rendered_from_settings(raw_compose: dict[str, Any], default_env: None) -> None:
    used = variables(raw_compose)
    settings = load_settings(pulsar={"broker_port": 16650, "web_port": 18080}, superset={"port": 18088})
    env = docker.compose_env(settings, secrets=False)
    without_default = {name for name, default in used.items() if default is None}
    assert without_default <= set(env) | {"SUPERSET_SECRET_KEY", "SUPERSET_ADMIN_PASSWORD"}
    assert set(env) <= set(used), f"rendered but unused: {set(env) - set(used)}"
    # The file's own defaults are the settings' defaults, so a bare `docker compose up` matches `rtca up`.
    defaults = docker.compose_env(load_settings(), secrets=False)
    for name, default in used.items():
        if default is not None and name in defaults:
            assert default == defaults[name], f"{name}: file default {default!r} != settings {defaults[name]!r}"
    # Moved ports move the published ports and the services' own ports together.
    rendered = interpolate(raw_compose, {**env, "SUPERSET_SECRET_KEY": "x", "SUPERSET_ADMIN_PASSWORD": "x"})
    assert "127.0.0.1:16650:16650" in rendered["services"]["net"]["ports"]
    assert rendered["services"]["pulsar"]["environment"]["brokerServicePort"] == "16650"
    assert rendered["services"]["superset"]["environment"]["SUPERSET_PORT"] == "18088"


def test_the_docker_backend_refuses_services_on_different_hosts() -> None:
    """It publishes every port on the Pulsar host: rtca looked for Pinot and Superset where no container listened."""
    from rtca.errors import ConfigError

    settings = load_settings(pinot={"host": "127.0.0.2"}, superset={"host": "127.0.0.3"})
    with pytest.raises(ConfigError, match="RTCA_PINOT__HOST=127.0.0.2, RTCA_SUPERSET__HOST=127.0.0.3"):
        docker.compose_env(settings, secrets=False)


def test_superset_secrets_are_required_not_defaulted(raw_compose: dict[str, Any],
                                                     rendered_env: dict[str, str]) -> None:
    env = {k: v for k, v in rendered_env.items() if k != "SUPERSET_SECRET_KEY"}
    with pytest.raises(KeyError, match="SUPERSET_SECRET_KEY"):
        interpolate(raw_compose, env)


# --- docker backend without an engine -----------------------------------------------------------------------------
def test_docker_backend_names_the_missing_prerequisite(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(backend="docker")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PrerequisiteError, match="`docker` is not on PATH") as missing:
        rtca_stack.up(settings)
    assert "local backend" in str(missing.value)


def docker_engine_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(docker_engine_available(), reason="a Docker engine answers here")
def test_docker_up_without_an_engine_is_a_prerequisite_error_and_changes_nothing() -> None:
    settings = load_settings(backend="docker")
    for call in (rtca_stack.up, rtca_stack.status):
        with pytest.raises(PrerequisiteError, match="Docker engine|docker"):
            call(settings)


def test_compose_ps_output_becomes_service_states() -> None:
    settings = load_settings(backend="docker")
    lines = "\n".join(json.dumps({"Service": name, "State": "running", "Health": "healthy"})
                      for name in docker.SERVICES[:-1])
    lines += "\n" + json.dumps({"Service": "superset", "State": "running", "Health": "starting"})
    states = docker.states_from_ps(settings, docker.parse_ps(lines))
    assert [s.name for s in states if not s.healthy] == ["superset"]
    as_array = docker.parse_ps(json.dumps([{"Service": "pulsar", "State": "exited", "Health": ""}]))
    assert not docker.states_from_ps(settings, as_array)[1].healthy
    assert docker.parse_ps("") == {}
    assert next(s for s in states if s.name == "pinot-broker").url == settings.pinot.broker_url


# --- per-backend configuration ------------------------------------------------------------------------------------
def test_stream_configs_differ_only_in_the_consumer_factory() -> None:
    rendered = {backend: stream_configs(load_settings(backend=backend), "persistent://feeds/realtime/t")
                for backend in ("local", "docker", "external")}
    key = "stream.pulsar.consumer.factory.class.name"
    assert rendered["local"][key] == "io.rtca.pinot.pulsar.PulsarConsumerFactory"
    assert rendered["docker"][key] == "org.apache.pinot.plugin.stream.pulsar.PulsarConsumerFactory"
    assert rendered["external"][key] == "org.apache.pinot.plugin.stream.pulsar.PulsarConsumerFactory"
    for backend in ("docker", "external"):
        assert {k: v for k, v in rendered[backend].items() if k != key} == {
            k: v for k, v in rendered["local"].items() if k != key}
    assert profiles.CONSUMER_FACTORY["local"] == rendered["local"][key]


def test_every_table_renders_for_every_backend_differing_only_in_the_plugin_class() -> None:
    """The project's own table files (infra/pinot) through rtca.pinot.tables, per backend."""
    from rtca.pinot.tables import render_tables

    key = "stream.pulsar.consumer.factory.class.name"

    def without_factory(table: dict[str, Any]) -> dict[str, Any]:
        copy = json.loads(json.dumps(table))
        del copy["tableIndexConfig"]["streamConfigs"][key]
        return copy

    rendered = {b: render_tables(load_settings(backend=b)) for b in ("local", "docker", "external")}
    assert rendered["local"], "no tables under infra/pinot"
    for local, docker_, external_ in zip(rendered["local"], rendered["docker"], rendered["external"], strict=True):
        assert local.table["tableIndexConfig"]["streamConfigs"][key] == profiles.RTCA_CONSUMER_FACTORY
        assert docker_.table["tableIndexConfig"]["streamConfigs"][key] == profiles.PINOT_CONSUMER_FACTORY
        assert without_factory(docker_.table) == without_factory(local.table) == without_factory(external_.table)
        assert docker_.schema == local.schema
        segments = local.table["segmentsConfig"]
        assert segments["replication"] == segments["replicasPerPartition"] == "1"


def test_external_settings_reach_table_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTCA_BACKEND", "external")
    monkeypatch.setenv("RTCA_PULSAR__SERVICE_URL_OVERRIDE", "pulsar+ssl://pulsar.example.com:6651")
    monkeypatch.setenv("RTCA_PULSAR__AUTH_TOKEN", "token-for-pinot")
    monkeypatch.setenv("RTCA_PINOT__CONSUMER_FACTORY", profiles.RTCA_CONSUMER_FACTORY)
    monkeypatch.setenv("RTCA_SCALE__PINOT_REPLICATION", "3")
    monkeypatch.setenv("RTCA_SCALE__TOPIC_PARTITIONS", "8")
    settings = load_settings()
    configs = stream_configs(settings, "persistent://feeds/realtime/t")
    assert configs["stream.pulsar.bootstrap.servers"] == "pulsar+ssl://pulsar.example.com:6651"
    assert configs["stream.pulsar.authenticationToken"] == "token-for-pinot"
    assert configs["stream.pulsar.consumer.factory.class.name"] == profiles.RTCA_CONSUMER_FACTORY
    assert profiles.segments_replication(settings) == {"replication": "3", "replicasPerPartition": "3"}
    chosen = profiles.profile(settings)
    assert (chosen.topic_partitions, chosen.function_parallelism, chosen.function_code) == (8, 1, "package")
    assert "token-for-pinot" not in json.dumps(settings.describe())


def test_profiles_per_backend() -> None:
    local, docker_, external_ = (profiles.profile(load_settings(backend=b)) for b in ("local", "docker", "external"))
    assert local.function_code == "virtualenv" and docker_.function_code == external_.function_code == "package"
    assert local.manages_services and docker_.manages_services and not external_.manages_services
    assert {local.topic_partitions, local.pinot_replication, local.function_parallelism} == {1}


def test_http_options_carry_credentials_and_tls(tmp_path: Path) -> None:
    ca = tmp_path / "missing.pem"
    settings = load_settings(pulsar={"auth_token": "t0k"}, pinot={"username": "u", "password": "p"},
                             tls={"verify": False})
    assert remote.http_options(settings, "pulsar")["headers"] == {"Authorization": "Bearer t0k"}
    assert isinstance(remote.http_options(settings, "pinot")["auth"], httpx.BasicAuth)
    assert remote.http_options(settings, "superset") == {"verify": False}
    client = remote.pulsar_client_options(settings)
    assert client["tls_allow_insecure_connection"] is True and "authentication" in client
    with pytest.raises(Exception, match="missing.pem"):
        remote.http_options(load_settings(tls={"ca_file": ca}), "pinot")


# --- the functions package ----------------------------------------------------------------------------------------
def test_function_package_layout_is_what_pulsars_runtime_unpacks(tmp_path: Path) -> None:
    settings = load_settings(run_dir=tmp_path / "run")
    package = profiles.build_function_package(settings)
    assert package == tmp_path / "run" / "packages" / "rtca-functions.zip"
    names = zipfile.ZipFile(package).namelist()
    assert all(name.startswith("rtca-functions/src/rtca/") for name in names)
    assert {"rtca-functions/src/rtca/__init__.py", "rtca-functions/src/rtca/functions/router.py",
            "rtca-functions/src/rtca/functions/stats.py", "rtca-functions/src/rtca/analytics/stats.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or "captures" in n or n.endswith(".pyc")]
    first = package.read_bytes()
    assert profiles.build_function_package(settings).read_bytes() == first  # reproducible


def test_function_package_adds_dependency_wheels(tmp_path: Path) -> None:
    wheel = tmp_path / "orjson-0-py3-none-any.whl"
    wheel.write_bytes(b"not really a wheel")
    package = profiles.build_function_package(load_settings(), wheels=[wheel], dest=tmp_path)
    assert "rtca-functions/deps/orjson-0-py3-none-any.whl" in zipfile.ZipFile(package).namelist()
    with pytest.raises(Exception, match="not a wheel"):
        profiles.build_function_package(load_settings(), wheels=[tmp_path / "x.txt"], dest=tmp_path)


def test_functions_import_from_the_package_without_the_workbenchs_dependencies(tmp_path: Path) -> None:
    """What the Pulsar container has is pulsar-client and orjson: the function modules must need nothing else."""
    package = profiles.build_function_package(load_settings(), dest=tmp_path)
    zipfile.ZipFile(package).extractall(tmp_path)
    src = tmp_path / "rtca-functions" / "src"
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import rtca, rtca.functions.router, rtca.functions.stats, rtca.functions.identity;"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'pydantic_settings', 'httpx', 'yaml',"
        " 'pandas', 'psutil'});"
        "print(rtca.__file__); print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(src)], capture_output=True, text=True, check=True)
    location, heavy = result.stdout.splitlines()
    assert location.startswith(str(src)), location
    assert heavy == "", f"the functions import {heavy}, which a Pulsar cluster does not have"


# --- the external backend, against the running local stack -------------------------------------------------------
def test_external_down_stops_nothing(tmp_path: Path) -> None:
    assert external.down(load_settings(backend="external", run_dir=tmp_path), wipe=True) == []


def test_every_backend_is_dispatched() -> None:
    for backend, module in (("local", "rtca.stack.local"), ("docker", "rtca.stack.docker"),
                            ("external", "rtca.stack.external")):
        assert rtca_stack._backend(load_settings(backend=backend)).__name__ == module


def as_external(settings: Settings, **pinot: Any) -> Settings:
    """The local stack's URLs given to the external backend as if they were a remote cluster's, with Superset's
    admin password given as a user of an external Superset gives it (never read from the run directory)."""
    return load_settings(
        backend="external", run_dir=settings.run_dir,
        pulsar={"tenant": settings.pulsar.tenant, "namespace": settings.pulsar.namespace,
                "service_url_override": settings.pulsar.service_url, "admin_url_override": settings.pulsar.admin_url},
        pinot={"controller_url_override": settings.pinot.controller_url,
               "broker_url_override": settings.pinot.broker_url, **pinot},
        superset={"url_override": settings.superset.url, "admin_password": superset_secrets(settings).admin_password},
    )  # fmt: skip


def pid_files(settings: Settings) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(settings.pids_dir.glob("*.json"))}


@pytest.mark.stack
def test_external_up_only_checks(stack_up: Settings) -> None:
    remote_settings = as_external(stack_up)
    before = pid_files(stack_up)
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    states = rtca_stack.up(remote_settings)
    assert {s.name: s.healthy for s in states} == dict.fromkeys(
        ("pulsar-admin", "pulsar-broker", "pinot-controller", "pinot-broker", "superset"), True)
    assert {s.url for s in states} >= {stack_up.pulsar.admin_url, stack_up.pinot.broker_url, stack_up.superset.url}
    assert pid_files(stack_up) == before, "the external backend started or stopped a local service"
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children_before
    assert all(isinstance(s, ServiceState) and s.pid is None for s in rtca_stack.status(remote_settings))


@pytest.mark.stack
def test_external_bad_url_is_named(stack_up: Settings) -> None:
    bad = as_external(stack_up, broker_url_override="http://127.0.0.1:1")
    with pytest.raises(ServiceError) as failed:
        rtca_stack.up(bad)
    message = str(failed.value)
    assert "pinot-broker" in message and "http://127.0.0.1:1/health" in message
    assert "RTCA_PINOT__BROKER_URL_OVERRIDE" in message
    assert "pinot-controller" not in message.split("hint")[0]  # only the failing URL is blamed
    states = {s.name: s.healthy for s in rtca_stack.status(bad)}
    assert states["pinot-broker"] is False and states["pinot-controller"] is True


def test_rejected_credentials_are_named() -> None:
    """A secured service answering 401 is reported as a credentials problem, naming the URL and the settings."""
    from fake_http import answering, serving

    with serving(answering(401)) as url:
        settings = load_settings(backend="external", pinot={"controller_url_override": url})
        problems = {state.name: problem for state, problem in remote.check(settings)}
        assert problems["pinot-controller"] == f"{url}/health rejected the credentials (HTTP 401)"
        with pytest.raises(ServiceError, match="RTCA_PINOT__USERNAME") as failed:
            remote.require_healthy(settings, only=["pinot-controller"])
        assert str(failed.value).startswith(f"pinot-controller: {url}/health rejected")  # named once, not twice


@pytest.fixture
def remote_settings(stack_up: Settings) -> Settings:
    # The "remote" Pinot is the local 0.11 stack: it runs rtca's plugin, so this cluster says so in configuration.
    return as_external(stack_up, consumer_factory=profiles.RTCA_CONSUMER_FACTORY)


@pytest.fixture
def pulsar_admin(remote_settings: Settings) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=remote_settings.pulsar.admin_url, timeout=60,
                      **remote.http_options(remote_settings, "pulsar")) as client:
        yield client


@pytest.mark.stack
def test_external_deploy_table_and_dashboards_database(remote_settings: Settings, pulsar_admin: httpx.Client,
                                                      unique: str) -> None:
    import pulsar

    remote.prepare(remote_settings)  # namespace policies + Superset's Pinot database, all over the URLs
    topic = remote_settings.topic(f"external-{unique}")
    name = f"external_{unique}"
    schema = {"schemaName": name, "dimensionFieldSpecs": [{"name": "id", "dataType": "LONG"}],
              "dateTimeFieldSpecs": [{"name": "event_ms", "dataType": "LONG", "format": "1:MILLISECONDS:EPOCH",
                                      "granularity": "1:MILLISECONDS"}]}
    table = {"tableName": name, "tableType": "REALTIME", "tenants": {}, "metadata": {},
             "segmentsConfig": {"timeColumnName": "event_ms", "schemaName": name,
                                **profiles.segments_replication(remote_settings)},
             "tableIndexConfig": {"loadMode": "MMAP", "streamConfigs": stream_configs(remote_settings, topic)}}
    client = pulsar.Client(remote_settings.pulsar.service_url, operation_timeout_seconds=30,
                           **remote.pulsar_client_options(remote_settings))
    with PinotClient(remote_settings) as pinot:
        try:
            producer = client.create_producer(topic)
            now = int(time.time() * 1000)
            for i in range(25):
                producer.send(json.dumps({"id": i, "event_ms": now + i}).encode())
            pinot.put_schema(schema)
            pinot.put_table(table)
            wait_for(lambda: _count(pinot, name) >= 25, timeout=120, what="25 rows through the external backend")
            assert pinot.count(name) == 25
        finally:
            client.close()
            pinot.delete_table(name)
            drop_topics(remote_settings, [topic])
    with SupersetClient.from_settings(remote_settings) as superset:
        assert superset.database_id(remote_settings.superset.database_name) is not None


def _count(pinot: PinotClient, name: str) -> int:
    try:
        return pinot.count(name)
    except Exception:  # noqa: BLE001 - a new table answers with an error for a moment
        return 0


PROBE = '''\
from pulsar import Function


class Probe(Function):
    """Answers with where `rtca` was imported from: the uploaded package, not the worker's virtualenv."""

    def process(self, input, context):
        import rtca
        import rtca.functions.router  # noqa: F401 - the real functions import from the same place

        return rtca.__file__
'''


@pytest.mark.stack
def test_external_functions_run_from_the_uploaded_package(remote_settings: Settings, pulsar_admin: httpx.Client,
                                                          unique: str, tmp_path: Path) -> None:
    import pulsar

    package = profiles.build_function_package(remote_settings, dest=tmp_path)
    buffer = io.BytesIO(package.read_bytes())
    with zipfile.ZipFile(buffer, "a") as archive:  # the real package plus a probe module beside `rtca`
        archive.writestr(f"{profiles.PACKAGE_NAME}/src/rtca_package_probe.py", PROBE)
    p = remote_settings.pulsar
    name = f"package-probe-{unique}"
    inputs, output = remote_settings.topic(f"probe-in-{unique}"), remote_settings.topic(f"probe-out-{unique}")
    config = {"tenant": p.tenant, "namespace": p.namespace, "name": name, "runtime": "PYTHON",
              "py": package.name, "className": "rtca_package_probe.Probe", "inputs": [inputs], "output": output,
              "parallelism": profiles.profile(remote_settings).function_parallelism,
              "subscriptionPosition": "Earliest", "cleanupSubscription": True}
    path = f"/admin/v3/functions/{p.tenant}/{p.namespace}/{name}"
    client = pulsar.Client(p.service_url, operation_timeout_seconds=30, **remote.pulsar_client_options(remote_settings))
    try:
        created = pulsar_admin.post(path, files={
            "functionConfig": (None, json.dumps(config), "application/json"),
            "data": (package.name, buffer.getvalue(), "application/octet-stream")})
        assert created.is_success, created.text
        consumer = client.subscribe(output, f"probe-{unique}",
                                    initial_position=pulsar.InitialPosition.Earliest)
        client.create_producer(inputs).send(b"where is rtca?")
        message = consumer.receive(timeout_millis=120_000)
        location = message.data().decode()
        assert location.endswith(f"{profiles.PACKAGE_NAME}/src/rtca/__init__.py"), location
        assert not location.startswith(str(PROJECT_ROOT / "lib")), location
    finally:
        pulsar_admin.delete(path)
        client.close()
        drop_topics(remote_settings, [inputs, output])


@pytest.mark.stack
def test_scaled_namespace_creates_partitioned_topics(stack_up: Settings, pulsar_admin: httpx.Client,
                                                     unique: str) -> None:
    """RTCA_SCALE__TOPIC_PARTITIONS reaches Pulsar through `prepare` (on a throwaway namespace of the stack)."""
    import pulsar

    scaled = load_settings(backend="external", run_dir=stack_up.run_dir, scale={"topic_partitions": 3},
                           pulsar={"namespace": f"scale-{unique}", "admin_url_override": stack_up.pulsar.admin_url,
                                   "service_url_override": stack_up.pulsar.service_url},
                           pinot={"controller_url_override": stack_up.pinot.controller_url,
                                  "broker_url_override": stack_up.pinot.broker_url},
                           superset={"url_override": stack_up.superset.url,
                                     "admin_password": superset_secrets(stack_up).admin_password})
    namespace = f"{scaled.pulsar.tenant}/{scaled.pulsar.namespace}"
    client = pulsar.Client(scaled.pulsar.service_url, operation_timeout_seconds=30)
    try:
        remote.prepare(scaled)
        client.create_producer(scaled.topic("scaled")).close()
        metadata = pulsar_admin.get(f"/admin/v2/persistent/{namespace}/scaled/partitions").json()
        assert metadata["partitions"] == 3
    finally:
        client.close()
        drop_topics(scaled, [scaled.topic("scaled")])
        pulsar_admin.delete(f"/admin/v2/namespaces/{namespace}").raise_for_status()


def test_down_stops_the_ingest_on_every_backend(tmp_path: Path) -> None:
    """The ingest is a process of this machine on every backend; `rtca down` on external (whose clusters it does
    not stop) still stops it, as on local (where it did already)."""
    import sys

    from rtca.feed.service import NAME, ingest_state
    from rtca.runbook import RunbookCheckFailed, check_stopped
    from rtca.stack import down
    from rtca.stack.process import Launch, Service, Supervisor

    settings = load_settings(backend="external", run_dir=tmp_path)
    stand_in = Service(NAME, lambda: Launch([sys.executable, "-c", "import time; time.sleep(300)"]), url="")
    process = Supervisor(settings).start(stand_in)
    assert ingest_state(settings) is not None
    with pytest.raises(RunbookCheckFailed, match=f"still running: {NAME}"):  # runbook 90's check
        check_stopped(settings)
    assert down(settings) == [NAME]
    assert not process.is_running() or process.status() == "zombie"
    assert ingest_state(settings) is None and down(settings) == []
    check_stopped(settings)  # the external clusters answering are not ours


def test_docker_s_prepare_uses_the_password_rtca_generated_for_its_superset(monkeypatch: pytest.MonkeyPatch,
                                                                            tmp_path: Path) -> None:
    """Only a Superset rtca did not set up needs the password given: docker's is the run directory's."""
    from rtca.stack import pulsar, remote, superset

    monkeypatch.delenv("SUPERSET_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("RTCA_SUPERSET__ADMIN_PASSWORD", raising=False)
    settings = load_settings(run_dir=tmp_path, backend="docker")
    superset_secrets(settings)  # as compose_env generates and stores them before `docker compose up`
    registered: list[str] = []
    monkeypatch.setattr(pulsar, "ensure_namespace", lambda s: None)
    monkeypatch.setattr(superset, "register_pinot", lambda s: registered.append("pinot"))
    remote.prepare(settings)  # what `rtca up` runs once the containers are healthy
    assert registered == ["pinot"]

"""The `docker` backend: the stack as containers from infra/docker/compose.yaml, driven by `docker compose`.

Every call runs `docker compose --project-name rtca --file infra/docker/compose.yaml ...` with the compose
variables rendered from settings (`compose_env`: ports, heaps, Superset's secrets), so the containers answer on
the same URLs as the local backend's processes and nothing else changes for the runbooks. Needs a Docker engine
and the Compose v2 plugin (`docker compose`, 2.20 or later for `up --wait-timeout`).

`up` is idempotent like the local backend's: a healthy project is left alone; otherwise `up --build --wait` starts
what is missing, then the Pulsar namespace and Superset's Pinot database are configured. If that fails on a stack
that was not running before, the containers are stopped again (kept, so `docker compose logs` still works).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from rtca.errors import ConfigError, PrerequisiteError, RtcaError, ServiceError
from rtca.settings import Settings
from rtca.stack import remote
from rtca.stack.process import ServiceState
from rtca.stack.progress import say, step
from rtca.stack.secrets import superset_secrets

PROJECT = "rtca"
#: Services of compose.yaml in start order (`net` only holds the shared network namespace and the published ports).
SERVICES = ("net", "pulsar", "zookeeper", "pinot-controller", "pinot-broker", "pinot-server", "superset")


def compose_file(settings: Settings) -> Path:
    return settings.infra_dir / "docker" / "compose.yaml"


def compose_env(settings: Settings, *, secrets: bool = True) -> dict[str, str]:
    """The variables compose.yaml interpolates, from settings (the file's own defaults equal the settings' ones).
    Every port is published on one address, so the services' hosts must be that one (else rtca would look for
    Pinot or Superset where no container listens)."""
    p, pinot, s = settings.pulsar, settings.pinot, settings.superset
    hosts = {"RTCA_PULSAR__HOST": p.host, "RTCA_PINOT__HOST": pinot.host, "RTCA_SUPERSET__HOST": s.host}
    if len(set(hosts.values())) > 1:
        raise ConfigError("the docker backend publishes every service on one address, but the hosts differ: "
                          + ", ".join(f"{name}={host}" for name, host in hosts.items()),
                          hint="give them one value (default 127.0.0.1), or use the local or external backend")
    env = {
        "RTCA_BIND_HOST": p.host,
        "RTCA_COMPOSE_PULSAR_BROKER_PORT": str(p.broker_port),
        "RTCA_COMPOSE_PULSAR_WEB_PORT": str(p.web_port),
        "RTCA_COMPOSE_PULSAR_MEM": p.heap,
        "RTCA_COMPOSE_PINOT_CLUSTER": pinot.cluster,
        "RTCA_COMPOSE_PINOT_CONTROLLER_PORT": str(pinot.controller_port),
        "RTCA_COMPOSE_PINOT_BROKER_PORT": str(pinot.broker_port),
        "RTCA_COMPOSE_PINOT_SERVER_PORT": str(pinot.server_port),
        "RTCA_COMPOSE_PINOT_SERVER_ADMIN_PORT": str(pinot.server_admin_port),
        "RTCA_COMPOSE_PINOT_CONTROLLER_HEAP": pinot.controller_heap,
        "RTCA_COMPOSE_PINOT_BROKER_HEAP": pinot.broker_heap,
        "RTCA_COMPOSE_PINOT_SERVER_HEAP": pinot.server_heap,
        "RTCA_COMPOSE_ZOOKEEPER_HEAP": pinot.zookeeper_heap,
        "RTCA_COMPOSE_SUPERSET_PORT": str(s.port),
        "SUPERSET_ADMIN_USER": s.admin_user,
    }
    if secrets:
        found = superset_secrets(settings)
        env["SUPERSET_SECRET_KEY"] = found.secret_key
        env["SUPERSET_ADMIN_PASSWORD"] = found.admin_password
    return env


def compose_command(settings: Settings, *args: str) -> list[str]:
    return ["docker", "compose", "--project-name", PROJECT, "--file", str(compose_file(settings)), *args]


def check_prerequisites() -> None:
    """A clear PrerequisiteError unless the docker CLI, a reachable engine and the Compose v2 plugin are there."""
    fallback = "or use the local backend, which needs no Docker (RTCA_BACKEND=local, the default)"
    if shutil.which("docker") is None:
        raise PrerequisiteError("the docker backend needs Docker, and `docker` is not on PATH",
                                hint=f"install Docker Engine (or Docker Desktop), {fallback}")
    try:
        engine = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                                text=True, timeout=60, check=False)
        answered, reason = engine.returncode == 0 and bool(engine.stdout.strip()), engine.stderr.strip()
    except subprocess.TimeoutExpired:
        answered, reason = False, "`docker info` got no answer within 60 s"
    if not answered:
        reason = (reason.splitlines() or ["no answer"])[-1]
        raise PrerequisiteError(f"no Docker engine answers ({reason})",
                                hint=f"start Docker (`systemctl start docker`, or Docker Desktop) and check "
                                     f"`docker context ls` / DOCKER_HOST; {fallback}")
    plugin = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True,
                            timeout=60, check=False)
    if plugin.returncode != 0:
        raise PrerequisiteError("`docker compose` (the Compose v2 plugin) is not installed",
                                hint=f"install docker-compose-plugin (Docker's apt/yum repository) or Docker "
                                     f"Desktop; {fallback}")


def _compose(settings: Settings, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **compose_env(settings)}
    return subprocess.run(compose_command(settings, *args), env=env, text=True, check=False,
                          capture_output=capture, cwd=compose_file(settings).parent)


def parse_ps(output: str) -> dict[str, dict[str, Any]]:
    """`docker compose ps --format json` by service: a JSON array (Compose < 2.21) or one object per line."""
    text = output.strip()
    if not text:
        return {}
    rows: list[dict[str, Any]] = json.loads(text) if text.startswith("[") else [
        json.loads(line) for line in text.splitlines() if line.strip()]
    return {str(row.get("Service")): row for row in rows}


def _url(settings: Settings, service: str) -> str:
    return {
        "pulsar": settings.pulsar.service_url,
        "pinot-controller": settings.pinot.controller_url,
        "pinot-broker": settings.pinot.broker_url,
        "pinot-server": f"http://{settings.pinot.host}:{settings.pinot.server_admin_port} (in the container)",
        "superset": settings.superset.url,
        "zookeeper": "127.0.0.1:2181 (in the container)",
    }.get(service, "-")


def states_from_ps(settings: Settings, rows: dict[str, dict[str, Any]]) -> list[ServiceState]:
    """A service is healthy when its container runs and its compose health check passes."""
    states = []
    for name in SERVICES:
        row = rows.get(name) or {}
        healthy = row.get("State") == "running" and row.get("Health") == "healthy"
        states.append(ServiceState(name, None, healthy, _url(settings, name), None))
    return states


def status(settings: Settings) -> list[ServiceState]:
    check_prerequisites()
    result = _compose(settings, "ps", "--all", "--format", "json", capture=True)
    if result.returncode != 0:
        raise ServiceError("docker", f"`docker compose ps` failed: {result.stderr.strip()[-500:]}")
    return states_from_ps(settings, parse_ps(result.stdout))


def up(settings: Settings) -> list[ServiceState]:
    check_prerequisites()
    before = status(settings)
    if all(state.healthy for state in before):
        remote.prepare(settings)  # idempotent: a retention changed since the start applies now
        say("the stack is already up; nothing started (the namespace's policies applied)")
        return before
    was_running = any(state.healthy for state in before)
    try:
        with step("starting the containers (the first run pulls and builds images: several GB)"):
            started = _compose(settings, "up", "--detach", "--build", "--wait",
                               "--wait-timeout", str(int(settings.start_timeout)))
            if started.returncode != 0:
                raise ServiceError("docker", f"`docker compose up` failed (exit {started.returncode})",
                                   hint=f"see `{' '.join(compose_command(settings, 'ps'))}` and `... logs SERVICE`")
        with step("configuring Pulsar namespace and Superset's Pinot database"):
            remote.prepare(settings)
    except (RtcaError, KeyboardInterrupt):
        if not was_running:
            say("start-up failed: stopping the containers (kept for `docker compose logs`)")
            _compose(settings, "stop")
        raise
    return status(settings)


def down(settings: Settings, *, wipe: bool = False) -> list[str]:
    """Stop and remove the project's containers; with `wipe`, its named volumes (all data) too."""
    check_prerequisites()
    running = [state.name for state in status(settings) if state.healthy]
    result = _compose(settings, "down", *(["--volumes"] if wipe else []))
    if result.returncode != 0:
        raise ServiceError("docker", f"`docker compose down` failed (exit {result.returncode})")
    return running


def logs(settings: Settings, service: str, *, lines: int = 50) -> str:
    """The end of one container's log (what `rtca logs SERVICE` shows on this backend)."""
    check_prerequisites()
    if service not in SERVICES:
        raise RtcaError(f"no service '{service}' in {compose_file(settings)}", hint=f"one of: {', '.join(SERVICES)}")
    result = _compose(settings, "logs", "--no-color", "--tail", str(lines), service, capture=True)
    return result.stdout + result.stderr


def config(settings: Settings, *extra: str) -> subprocess.CompletedProcess[str]:
    """`docker compose config` with the rendered variables (validation; needs the Compose plugin, not an engine)."""
    return _compose(settings, "config", *extra, capture=True)


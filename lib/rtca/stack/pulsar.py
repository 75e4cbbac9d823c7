"""Pulsar standalone (broker + bookie + RocksDB metadata + functions worker) as a local process.

The distribution lives read-only in the cache; each run gets its own copy of the configuration (loopback binding,
ports, topic retention) and its own data and logs under the run directory. The functions worker starts Python
functions with the first `python3` on PATH, so the project's virtualenv goes first: functions can `import rtca`.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import httpx

from rtca.errors import ServiceError
from rtca.settings import Settings
from rtca.stack.artifacts import bind_env, pulsar_home
from rtca.stack.process import Launch, Service
from rtca.stack.profiles import profile
from rtca.stack.remote import http_options, json_answer, pulsar_topic_path

#: Retention -1 = unlimited for the broker's other namespaces; the workbench's own has the settings' retention
#: (`ensure_namespace`): Pinot reads with a Reader, which is not a subscription, so nothing else keeps data.
_BROKER_OVERRIDES = {
    "brokerDeleteInactiveTopicsEnabled": "false",
    "defaultRetentionTimeInMinutes": "-1",
    "defaultRetentionSizeInMB": "-1",
    "brokerDeduplicationEnabled": "true",
    "allowAutoTopicCreationType": "non-partitioned",
}


def render_conf(template: str, overrides: dict[str, str]) -> str:
    """`key=value` lines of a Pulsar .conf with `overrides` applied (appended when the key is absent)."""
    remaining = dict(overrides)

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        return f"{key}={remaining.pop(key)}" if key in remaining else match.group(0)

    text = re.sub(r"^([A-Za-z0-9_.]+)=.*$", replace, template, flags=re.MULTILINE)
    return text + "".join(f"\n{key}={value}" for key, value in remaining.items()) + "\n"


def render_worker_yaml(template: str, overrides: dict[str, str]) -> str:
    """Top-level `key: value` lines of functions_worker.yml with overrides (the file is too big to re-dump)."""
    text = template
    for key, value in overrides.items():
        text, count = re.subn(rf"^{key}:.*$", f"{key}: {value}", text, flags=re.MULTILINE)
        if count == 0:
            text += f"\n{key}: {value}\n"
    return text


def service(settings: Settings) -> Service:
    p = settings.pulsar
    return Service(name="pulsar", launch=lambda: _launch(settings), url=p.service_url,
                   ports=(p.broker_port, p.web_port, p.bookie_port), health_url=f"{p.admin_url}/admin/v2/clusters",
                   ready=lambda: _worker_ready(settings), host=p.host)


def _launch(settings: Settings) -> Launch:
    home = pulsar_home(settings)
    p = settings.pulsar
    conf_dir = settings.run_dir / "conf" / "pulsar"
    data = settings.data_dir / "pulsar"
    logs = settings.logs_dir
    for folder in (conf_dir, data, logs / "functions"):
        folder.mkdir(parents=True, exist_ok=True)

    # STORAGE_PATH: where standalone keeps uploaded function code (its default is relative to the distribution,
    # which is shared by every checkout: a second stack would find the first one's packages there).
    # allowEphemeralPorts: without it, standalone's embedded bookie ignores --bookkeeper-port and takes a free port
    # of its own (BKCluster, 4.0), which its cookie then keeps for later starts: a port nobody checks or configures.
    # A bookie started before keeps the port in its cookie.
    broker = {**_BROKER_OVERRIDES, "bindAddress": p.host, "advertisedAddress": p.host,
              "brokerServicePort": str(p.broker_port), "webServicePort": str(p.web_port),
              "STORAGE_PATH": str(data / "packages-storage"), "allowEphemeralPorts": "true"}
    (conf_dir / "standalone.conf").write_text(render_conf((home / "conf" / "standalone.conf").read_text(), broker))
    # instanceLivenessCheckFreqMs: how soon the worker notices a dead function instance and starts a new one
    # (default 30 s, during which the function's input only queues up).
    worker = {"downloadDirectory": str(data / "functions-download"), "workerHostname": p.host,
              "pulsarServiceUrl": p.service_url, "pulsarWebServiceUrl": p.admin_url,
              "connectorsDirectory": str(data / "connectors"), "functionsDirectory": str(data / "functions"),
              "instanceLivenessCheckFreqMs": "5000"}
    worker_yaml = render_worker_yaml((home / "conf" / "functions_worker.yml").read_text(), worker)
    # Function instances log here (a nested key; relative by default, i.e. into the shared distribution).
    worker_yaml = worker_yaml.replace("    logDirectory: logs/", f"    logDirectory: {logs / 'functions'}")
    (conf_dir / "functions_worker.yml").write_text(worker_yaml)

    venv_bin = Path(sys.executable).parent  # function instances run `python3` from PATH: this environment's
    # The JVM unpacks native libraries (RocksDB's 13 MB, the checksum's) into java.io.tmpdir and deletes them only
    # on a clean exit: a killed Pulsar left them in /tmp. In the run directory they go with `rtca down --wipe`.
    tmp = data / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # a killed Pulsar's leftovers: no Pulsar runs while this one starts
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        "PULSAR_MEM": p.heap,
        # (not PULSAR_EXTRA_OPTS: set, it replaces Pulsar's own defaults there, e.g. exit on out-of-memory)
        "PULSAR_GC": f"{p.gc} {settings.jvm_options} -Duser.timezone=UTC -Djava.io.tmpdir={tmp}",  # UTC as Pinot
        # Broker logs to stdout (our pulsar.log); function instances log under logs/functions/.
        "PULSAR_LOG_APPENDER": "Console",
        "PULSAR_LOG_DIR": str(logs / "functions"),
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(settings.venv_dir),
        # The embedded bookie and each Python function instance (its gRPC control and metrics ports; instances
        # inherit the JVM's environment) bind to all interfaces: the bind shim moves them to the configured host.
        **bind_env(settings, p.host),
    }
    argv = [str(home / "bin" / "pulsar"), "standalone", "-nss",
            "-c", str(conf_dir / "standalone.conf"), "-fwc", str(conf_dir / "functions_worker.yml"),
            "--metadata-dir", str(data / "metadata"), "--bookkeeper-dir", str(data / "bookkeeper"),
            "--bookkeeper-port", str(p.bookie_port)]
    return Launch(argv=argv, env=env, cwd=data)


def _worker_ready(settings: Settings) -> bool:
    try:
        response = httpx.get(f"{settings.pulsar.admin_url}/admin/v2/worker/cluster", timeout=3)
        return response.status_code == 200 and bool(response.json())
    except (httpx.HTTPError, ValueError):
        return False


def ensure_namespace(settings: Settings) -> None:
    """Create tenant and namespace (idempotent) with the settings' retention and no inactive-topic deletion.

    Pulsar standalone otherwise deletes a topic without subscriptions after about a minute and keeps nothing
    once every subscription has acknowledged: a Pinot reader is not a subscription.
    """
    p = settings.pulsar
    ns = f"{p.tenant}/{p.namespace}"
    with httpx.Client(base_url=p.admin_url, timeout=30, **http_options(settings, "pulsar")) as admin:
        listed = admin.get("/admin/v2/clusters")
        _ok(listed, "list the clusters")
        clusters = json_answer(listed, "list Pulsar's clusters")
        _ok(admin.put(f"/admin/v2/tenants/{p.tenant}", json={"allowedClusters": clusters, "adminRoles": []}),
            f"create tenant {p.tenant}")
        _ok(admin.put(f"/admin/v2/namespaces/{ns}"), f"create namespace {ns}")
        _ok(admin.post(f"/admin/v2/namespaces/{ns}/retention",
                       json={"retentionTimeInMinutes": p.retention_minutes, "retentionSizeInMB": p.retention_mb}),
            f"set retention on {ns}")
        _ok(admin.post(f"/admin/v2/namespaces/{ns}/inactiveTopicPolicies",
                       json={"deleteWhileInactive": False, "maxInactiveDurationSeconds": 60,
                             "inactiveTopicDeleteMode": "delete_when_no_subscriptions"}),
            f"disable inactive-topic deletion on {ns}")
        _ok(admin.post(f"/admin/v2/namespaces/{ns}/deduplication", json=True), f"enable deduplication on {ns}")


def ensure_topic(settings: Settings, topic: str) -> None:
    """Create `topic` (a full `persistent://` name) unless it exists, with the backend's partition count (as the
    namespace's auto-creation would). Pinot's plugin never creates a topic (a misspelt name would be consumed empty
    forever): a table needs its topic before it is created."""
    if not topic.startswith("persistent://"):
        return  # non-persistent topics exist while they are used
    partitions = profile(settings).topic_partitions
    path = pulsar_topic_path(topic)
    with httpx.Client(base_url=settings.pulsar.admin_url, timeout=30, **http_options(settings, "pulsar")) as admin:
        if partitions > 1:
            response = admin.put(f"{path}/partitions", json=partitions)
        else:
            response = admin.put(path)
    _ok(response, f"create topic {topic}")  # 409: it exists (partitioned or not)


_PARTITION = re.compile(r"-partition-\d+$")


def delete_topics(settings: Settings, wanted: Callable[[str], bool], *, timeout: float = 60.0,
                  request_timeout: float = 30.0, interval: float = 2.0) -> list[str]:
    """Delete the topics of the settings' namespace that `wanted` picks (a partitioned topic whole, picked by its
    own name) until the namespace lists none of them; returns those still listed after `timeout`.

    For clean-ups (tests, benchmarks): a function instance or a Pinot reader still closing re-creates a topic when it
    reconnects, and a loaded broker can take longer than a request's timeout to delete one; both are retried until
    the deadline instead of failing the clean-up. A namespace never listed is a ServiceError.
    """
    p = settings.pulsar
    namespace = f"{p.tenant}/{p.namespace}"
    deadline = time.monotonic() + timeout
    left: list[str] | None = None
    with httpx.Client(base_url=p.admin_url, timeout=request_timeout, **http_options(settings, "pulsar")) as admin:
        while True:
            try:
                listed = json_answer(admin.get(f"/admin/v2/persistent/{namespace}").raise_for_status(),
                                     f"list the topics of {namespace}")
            except httpx.HTTPError as exc:  # a timeout or a broker restarting: the next round asks again
                if time.monotonic() > deadline:
                    if left is None:
                        raise ServiceError("pulsar", f"could not list the topics of {namespace}: {exc}") from None
                    return left  # as the last listing that answered showed them
            else:
                left = sorted(t for t in listed if wanted(_PARTITION.sub("", t)))
                if not left:
                    return []
                if time.monotonic() > deadline:  # a listing after the last round's deletes decides
                    return left
                partitioned = {_PARTITION.sub("", t) for t in left if _PARTITION.search(t)}
                for topic in sorted({_PARTITION.sub("", t) for t in left}):
                    suffix = "/partitions" if topic in partitioned else ""
                    with suppress(httpx.HTTPError):  # done late, or not: the next listing tells
                        admin.delete(f"{pulsar_topic_path(topic)}{suffix}", params={"force": "true"})
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def _ok(response: httpx.Response, what: str) -> None:
    """2xx, or 409 (already exists), are fine; anything else is a ServiceError with Pulsar's reason."""
    if response.status_code == 409 or response.is_success:
        return
    raise ServiceError("pulsar", f"could not {what}: HTTP {response.status_code} {response.text[:300]}")


def data_dirs(settings: Settings) -> list[Path]:
    return [settings.data_dir / "pulsar"]

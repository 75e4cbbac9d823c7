"""The `local` backend: Pulsar, Pinot and Superset as processes on this machine, no Docker.

`up` is idempotent: a healthy stack is reported and left alone, a half-up one gets only its missing services.
If start-up fails, what this call started is stopped again, so no half-started stack is left behind.
"""

from __future__ import annotations

import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rtca.errors import PrerequisiteError, RtcaError
from rtca.settings import Settings
from rtca.stack import pinot, pulsar, superset
from rtca.stack.artifacts import ensure_all, require_java, require_tool
from rtca.stack.process import Service, ServiceState, Supervisor
from rtca.stack.progress import say, step

#: Free disk the first start needs: artifacts (~0.5 GB), two virtualenvs (~1.5 GB), data.
MIN_FREE_BYTES = 3 * 1024**3

SERVICE_NAMES = ("pulsar", "pinot-zookeeper", "pinot-controller", "pinot-broker", "pinot-server", "superset")
#: Extra processes under the same supervisor (the ingest service); stopped by `down` too.
AUXILIARY_NAMES = ("ingest",)
#: `down` stops these groups in turn, each group's services side by side (Pinot's roles take seconds each to exit):
#: the clients and Pinot's roles while ZooKeeper and Pulsar still answer them, then those two.
STOP_ORDER = (
    (*AUXILIARY_NAMES, "superset", "pinot-server", "pinot-broker", "pinot-controller"),
    ("pinot-zookeeper", "pulsar"),
)


def check_prerequisites(settings: Settings) -> None:
    require_java()
    require_tool("mvn", "install Apache Maven 3.8+ (Debian: apt-get install maven)")
    for folder in (settings.run_dir, settings.cache_dir):
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if free < MIN_FREE_BYTES:
            raise PrerequisiteError(
                f"only {free / 1024**3:.1f} GB free under {folder}; the stack needs at least "
                f"{MIN_FREE_BYTES / 1024**3:.0f} GB", hint="free some disk, or point RTCA_RUN_DIR / RTCA_CACHE_DIR "
                                                          "at a larger disk")


def services(settings: Settings) -> list[Service]:
    """All service definitions (cheap: nothing is resolved until a service is launched)."""
    return [pulsar.service(settings), *pinot.services(settings), superset.service(settings)]


def up(settings: Settings) -> list[ServiceState]:
    supervisor = Supervisor(settings)
    with supervisor.exclusive():
        return _up(settings, supervisor)


def _up(settings: Settings, supervisor: Supervisor) -> list[ServiceState]:
    wanted = services(settings)
    missing = [s for s in wanted if not (supervisor.process(s.name) and supervisor.healthy(s))]
    if not missing:  # checked first: a healthy stack needs neither downloads nor free disk for them
        pulsar.ensure_namespace(settings)  # idempotent: a retention changed since the start applies now
        say("the stack is already up; nothing started (the namespace's policies applied)")
        return status(settings, wanted)
    check_prerequisites(settings)
    for service in missing:  # before the downloads of a first start (minutes), not after them
        if supervisor.process(service.name) is None:
            supervisor.check_ports(service)
    ensure_all(settings)
    started: list[str] = []
    try:
        with step(f"starting {', '.join(s.name for s in missing)}"):
            supervisor.start_all(missing, timeout=settings.start_timeout, started=started)
        pinot.cluster_marker(settings).touch()
        with step("configuring Pulsar namespace and Superset's Pinot database"):
            pulsar.ensure_namespace(settings)
            superset.register_pinot(settings)
        if "pulsar" in started:
            from rtca.functions.deploy import revive_functions

            revive_functions(settings, say=say)
    except (RtcaError, KeyboardInterrupt):
        if started:
            say(f"start-up failed: stopping what this run started ({', '.join(started)}; up to 30 s each)")
            with signals_ignored():  # a second Ctrl-C here would leave the rest running
                for name in reversed(started):
                    say(f"- stopping {name} ...")
                    supervisor.stop(name)
        raise
    return status(settings, wanted)


def status(settings: Settings, known: list[Service] | None = None) -> list[ServiceState]:
    return Supervisor(settings).states(known if known is not None else services(settings))


def down(settings: Settings, *, wipe: bool = False) -> list[str]:
    """Stop only what rtca started (by pid file); with `wipe`, delete the services' data too."""
    supervisor = Supervisor(settings)
    stopped = []
    with supervisor.exclusive(), signals_ignored():  # interrupted halfway, it would leave a half-stopped stack
        for layer in STOP_ORDER:
            running = [name for name in layer if supervisor.process(name) is not None]
            if running:
                say(f"- stopping {', '.join(running)} ...")
                stopped += supervisor.stop_all(running, report=say)
        if wipe:
            data_dirs: list[Callable[[Settings], list[Path]]] = [pulsar.data_dirs, pinot.data_dirs,
                                                                 superset.data_dirs]  # fmt: skip
            for folders in data_dirs:
                for folder in folders(settings):
                    shutil.rmtree(folder, ignore_errors=True)
    return stopped


@contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP ignored inside (stopping services must finish); no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""`rtca ingest start|stop`: the ingest as a supervised background process.

Pulsar's Python runtime has no sources, so ingest runs beside the stack: the same `rtca ingest run` command,
started under the stack's supervisor (pid file, one log file), shown by `rtca status`, stopped by `rtca down`.
"""

from __future__ import annotations

from collections.abc import Sequence

from rtca.settings import Settings
from rtca.stack.process import Launch, Service, ServiceState, Supervisor

NAME = "ingest"


def ingest_service(settings: Settings, run_args: Sequence[str] = ()) -> Service:
    argv = [str(settings.venv_dir / "bin" / "rtca"), "ingest", "run", *run_args]
    return Service(NAME, lambda: Launch(argv=argv), url=settings.topic(settings.topics.raw))


def start_ingest(settings: Settings, run_args: Sequence[str]) -> tuple[ServiceState, bool]:
    """Start the ingest unless it already runs; returns its state and whether this call started it."""
    supervisor = Supervisor(settings)
    service = ingest_service(settings, run_args)
    if supervisor.process(NAME) is not None:
        return supervisor.state(service), False
    supervisor.start_all([service], timeout=30, started=[])
    return supervisor.state(service), True


def stop_ingest(settings: Settings) -> bool:
    return Supervisor(settings).stop(NAME)


def ingest_state(settings: Settings) -> ServiceState | None:
    """The running ingest's state, or None when it is not running."""
    supervisor = Supervisor(settings)
    return supervisor.state(ingest_service(settings)) if supervisor.process(NAME) else None

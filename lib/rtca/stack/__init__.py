"""Stand the stack up and down, on one of three backends (`settings.backend`, RTCA_BACKEND or `rtca --backend`):

    local      processes on this machine, no Docker (the default: workshops, CI)      rtca.stack.local
    docker     containers from infra/docker/compose.yaml                              rtca.stack.docker
    external   clusters someone else runs: `up` only checks that their URLs answer   rtca.stack.external

What differs between them for tables and functions lives in `rtca.stack.profiles`.
"""

from __future__ import annotations

from types import ModuleType

from rtca.errors import ConfigError
from rtca.settings import Settings
from rtca.stack import docker, external, local
from rtca.stack.process import ServiceState

__all__ = ["ServiceState", "down", "prepare", "status", "up"]


_BACKENDS: dict[str, ModuleType] = {"local": local, "docker": docker, "external": external}


def _backend(settings: Settings) -> ModuleType:
    try:
        return _BACKENDS[settings.backend]
    except KeyError:
        raise ConfigError(f"unknown backend '{settings.backend}'", hint=f"one of: {', '.join(_BACKENDS)}") from None


def up(settings: Settings) -> list[ServiceState]:
    """Start whatever is missing and wait until every service is healthy; a no-op on a healthy stack."""
    return _backend(settings).up(settings)  # type: ignore[no-any-return]


def down(settings: Settings, *, wipe: bool = False) -> list[str]:
    """Stop the ingest, then the backend's services; the names of what was running. The ingest is a process of this
    machine on every backend (`rtca ingest start`): left running, it would keep reconnecting to a stack that is
    gone (docker) or keep publishing into clusters that outlive it (external)."""
    from rtca.feed.service import NAME as INGEST, stop_ingest

    stopped = [INGEST] if stop_ingest(settings) else []
    return stopped + [name for name in _backend(settings).down(settings, wipe=wipe) if name != INGEST]


def status(settings: Settings) -> list[ServiceState]:
    return _backend(settings).status(settings)  # type: ignore[no-any-return]


def prepare(settings: Settings) -> None:
    """What deploying needs besides running services: the Pulsar namespace with its policies and Superset's Pinot
    database. The first step of every deployment on every backend (idempotent; on `external` clusters it needs
    tenant-admin rights): `up` sets them when it starts a stack, and this applies a policy changed since (a
    shorter retention, say) to one that kept running."""
    from rtca.stack.remote import prepare as prepare_remote

    prepare_remote(settings)

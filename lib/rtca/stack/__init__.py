"""Stand the stack up and down; `local` is the default backend (processes on this machine, no Docker)."""

from __future__ import annotations

from rtca.errors import ConfigError
from rtca.settings import Settings
from rtca.stack import local
from rtca.stack.process import ServiceState

__all__ = ["ServiceState", "down", "status", "up"]


def _backend(settings: Settings):  # type: ignore[no-untyped-def]
    if settings.backend == "local":
        return local
    raise ConfigError(f"backend '{settings.backend}' is not available in this version",
                      hint="use RTCA_BACKEND=local (the default)")


def up(settings: Settings) -> list[ServiceState]:
    """Start whatever is missing and wait until every service is healthy; a no-op on a healthy stack."""
    return _backend(settings).up(settings)  # type: ignore[no-any-return]


def down(settings: Settings, *, wipe: bool = False) -> list[str]:
    return _backend(settings).down(settings, wipe=wipe)  # type: ignore[no-any-return]


def status(settings: Settings) -> list[ServiceState]:
    return _backend(settings).status(settings)  # type: ignore[no-any-return]

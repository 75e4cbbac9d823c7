"""Errors the workbench raises on purpose, each with the context a user needs to act.

    RtcaError                 base: `rtca` maps it to exit code 1 and prints `error: <message>`
     +-- ConfigError          a setting or input file is wrong
     +-- PrerequisiteError    Java, Maven, Python or disk space missing; says how to get it
     +-- ArtifactError        a Maven / pip resolution failed
     +-- ServiceError         a service failed to start, died, or is unhealthy (names its log file)
     |    +-- PortInUseError  the port a service needs is taken by a process we did not start
     +-- DeployError          a function, table or dashboard could not be applied
"""

from __future__ import annotations

from pathlib import Path


class RtcaError(Exception):
    """Base class; `hint` tells the user what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class ConfigError(RtcaError):
    pass


class PrerequisiteError(RtcaError):
    pass


class ArtifactError(RtcaError):
    pass


class ServiceError(RtcaError):
    def __init__(self, service: str, message: str, *, log: Path | None = None, hint: str | None = None) -> None:
        where = f" (log: {log})" if log else ""
        super().__init__(f"{service}: {message}{where}", hint=hint)
        self.service = service
        self.log = log


class PortInUseError(ServiceError):
    pass


class DeployError(RtcaError):
    pass

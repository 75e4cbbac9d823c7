"""Start-up failures give a clear error naming cause and fix, and leave no half-started stack behind.

These start a second, separate stack (own run directory, own free ports) next to the session's, so they do not
disturb it; each fails on purpose within seconds of starting.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rtca import stack
from rtca.errors import PortInUseError, PrerequisiteError, ServiceError
from rtca.settings import Settings, load_settings
from rtca.stack import local
from rtca.stack.process import Supervisor


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def isolated_settings(tmp_path: Path, **pinot: str) -> Settings:
    """Settings of a second stack: every port free, its own run directory, the shared artifact cache."""
    ports = iter(free_ports(11))
    return load_settings(
        run_dir=tmp_path / "run",
        pulsar={"broker_port": next(ports), "web_port": next(ports), "bookie_port": next(ports)},
        pinot={"zookeeper_port": next(ports), "controller_port": next(ports), "broker_port": next(ports),
               "server_port": next(ports), "server_admin_port": next(ports), "server_grpc_port": next(ports),
               **pinot},
        superset={"port": next(ports)},
    )


def our_processes(settings: Settings) -> list[psutil.Process]:
    """Live processes whose command line mentions this stack's run directory."""
    marker = str(settings.run_dir)
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def occupied_port() -> Iterator[socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    yield listener
    listener.close()


@pytest.mark.stack
def test_port_in_use_names_the_port_and_leaves_nothing_running(
        stack_up: Settings, tmp_path: Path, occupied_port: socket.socket) -> None:
    taken = occupied_port.getsockname()[1]
    base = isolated_settings(tmp_path)
    settings = load_settings(run_dir=base.run_dir, pulsar=base.pulsar.model_dump(), pinot=base.pinot.model_dump(),
                             superset={"port": taken})
    with pytest.raises(PortInUseError) as raised:
        stack.up(settings)
    message = str(raised.value)
    print(f"error shown to the user: {message}")
    assert f"port {taken}" in message and "superset" in message
    assert "RTCA_" in message  # the fix: move it with a setting
    assert our_processes(settings) == []
    assert not any((settings.pids_dir).glob("*.json"))


@pytest.mark.stack
def test_service_that_dies_at_start_is_named_and_the_rest_is_stopped(stack_up: Settings, tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, zookeeper_heap="-Xmx1k")  # the JVM refuses to start
    with pytest.raises(ServiceError) as raised:
        stack.up(settings)
    message = str(raised.value)
    print(f"error shown to the user: {message}")
    assert "pinot-zookeeper" in message and "exited during start-up" in message
    assert str(Supervisor(settings).log_file("pinot-zookeeper")) in message
    assert our_processes(settings) == []


def test_missing_java_or_maven_is_a_prerequisite_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: neither java nor mvn
    settings = isolated_settings(tmp_path)
    with pytest.raises(PrerequisiteError) as raised:
        local.check_prerequisites(settings)
    assert "'java' was not found" in str(raised.value) and "Java 17" in str(raised.value)


def test_full_disk_is_a_prerequisite_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path)
    real = local.shutil.disk_usage

    def nearly_full(path: object) -> object:
        usage = real(path)  # type: ignore[arg-type]
        return type(usage)(usage.total, usage.total - 10 * 1024**2, 10 * 1024**2)

    monkeypatch.setattr(local.shutil, "disk_usage", nearly_full)
    with pytest.raises(PrerequisiteError) as raised:
        local.check_prerequisites(settings)
    assert "GB free" in str(raised.value) and "RTCA_RUN_DIR" in str(raised.value)

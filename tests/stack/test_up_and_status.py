"""`rtca up` and `rtca status` through the CLI on the running stack: what the README promises a user sees."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import psutil
import pytest

from rtca import stack
from rtca.cli import main
from rtca.settings import Settings
from rtca.stack import local
from rtca.stack.process import STARTING, Supervisor

pytestmark = pytest.mark.stack

#: What each local service's own process runs: a pid of another program would pass a check of the pid file alone.
MAIN_CLASS = {
    "pulsar": "org.apache.pulsar.PulsarStandaloneStarter",
    "pinot-zookeeper": "StartZookeeper",
    "pinot-controller": "StartController",
    "pinot-broker": "StartBroker",
    "pinot-server": "StartServer",
    "superset": "superset.app:create_app()",
}


@pytest.fixture
def cli_signals() -> Iterator[None]:
    """`rtca up` turns SIGTERM and SIGHUP into Ctrl-C for its own run: put pytest's handlers back after it."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def recorded(settings: Settings) -> dict[str, tuple[int, float]]:
    """(pid, create time) of each service as its pid file records it: read here, not through the supervisor."""
    found = {}
    for name in local.SERVICE_NAMES:
        record = json.loads((settings.pids_dir / f"{name}.json").read_text())
        found[name] = (int(record["pid"]), float(record["create_time"]))
    return found


def starts_logged(settings: Settings) -> dict[str, int]:
    """How many times the supervisor has written its start line into each service's log."""
    supervisor = Supervisor(settings)
    return {name: supervisor.log_file(name).read_text(errors="replace").count(f" {STARTING} {name}: ")
            for name in local.SERVICE_NAMES}  # fmt: skip


def test_up_on_a_stack_that_is_up_says_so_changes_nothing_and_exits_0(
        stack_up: Settings, cli_signals: None, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    before = {s.name: s.pid for s in stack.status(stack_up)}
    pid_files, starts = recorded(stack_up), starts_logged(stack_up)
    assert all(before[name] for name in local.SERVICE_NAMES), before
    assert main(["up"]) == 0
    out, err = capsys.readouterr()
    print(err + out)
    assert "the stack is already up; nothing started" in err
    assert "starting " not in err and "stopping" not in err
    assert {s.name: s.pid for s in stack.status(stack_up)} == before
    assert recorded(stack_up) == pid_files  # same processes: a restart would have a new create time
    assert starts_logged(stack_up) == starts  # and nothing was launched and given up
    for name, (pid, _) in pid_files.items():  # the table printed at the end names the same processes
        assert any(line.split()[:3] == [name, "healthy", str(pid)] for line in out.splitlines()), (name, out)


def test_status_shows_each_service_s_health_url_pid_and_memory(stack_up: Settings,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    pid_files = recorded(stack_up)
    urls = {s.name: s.url for s in local.services(stack_up)}
    assert urls["pulsar"] == stack_up.pulsar.service_url and urls["superset"] == stack_up.superset.url
    assert urls["pinot-controller"] == stack_up.pinot.controller_url
    states = {s.name: s for s in stack.status(stack_up)}
    for name in local.SERVICE_NAMES:
        state = states[name]
        pid = pid_files[name][0]
        assert state.healthy, name
        assert state.pid == pid, (name, state.pid, pid)
        assert MAIN_CLASS[name] in " ".join(psutil.Process(pid).cmdline()), name
        own = psutil.Process(pid).memory_info().rss  # read a moment later: it moves a little
        assert state.rss_bytes is not None and state.rss_bytes > 0.9 * own > 10 * 1024**2, (name, state.rss_bytes, own)
        assert state.url and state.url == urls[name], (name, state.url)

    main(["status"])  # its exit code also counts an ingest another test may run on this stack: not asserted here
    lines = capsys.readouterr().out.splitlines()
    print("\n".join(lines))
    assert lines[0].split() == ["service", "health", "pid", "rss", "MB", "url"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    for name in local.SERVICE_NAMES:
        health, pid, rss_mb, url = rows[name][1:5]
        assert (health, int(pid), url) == ("healthy", pid_files[name][0], urls[name]), rows[name]
        assert abs(float(rss_mb) - (states[name].rss_bytes or 0) / 1024**2) < 200, rows[name]  # read again: moves
    assert float(rows["total"][1]) > 0

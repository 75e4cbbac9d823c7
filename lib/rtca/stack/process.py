"""Start, find, health-check and stop the local processes the workbench owns.

A service is started in its own session (process group) with its output in `<run>/logs/<name>.log`; its PID and
start time go to `<run>/pids/<name>.json`. Only processes recorded there are ever stopped, and a recorded PID
counts only if the process with that PID was started at the recorded time (PIDs get reused).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from rtca.errors import PortInUseError, ServiceError
from rtca.settings import Settings
from rtca.stack.progress import say

HealthCheck = Callable[[], bool]


@dataclass(frozen=True)
class Launch:
    """How to start a process: built only when it is started (building it may render config files)."""

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True)
class Service:
    """One local process: how to know it is healthy (cheap), and how to launch it (on demand)."""

    name: str
    launch: Callable[[], Launch]
    #: Where users reach it (shown by `rtca status`); an HTTP 200 there means healthy unless `health_url` is set.
    url: str
    ports: tuple[int, ...] = ()
    health_url: str | None = None
    #: Services that must be healthy before this one starts (Pinot's broker and server need the controller).
    after: tuple[str, ...] = ()
    #: Extra readiness beyond an HTTP 200 on health_url (e.g. Pulsar's functions worker).
    ready: HealthCheck | None = None
    #: Seconds this service may take to become healthy, when it needs more than the stack's start timeout
    #: (Superset's first start migrates its database before it serves).
    start_timeout: float | None = None
    #: A client that may end by itself (ingest with --duration): exiting with 0 during start-up is done, not failed.
    may_finish: bool = False
    #: The host its `ports` are on (for the port checks; its URLs carry their own).
    host: str = "127.0.0.1"


#: The supervisor's own lines in a service's log, around what the service printed.
STARTING, STOPPED = "starting", "stopped by rtca"
EPHEMERAL_PORTS_FROM = 32768
"""Linux's default range of local ports for outgoing connections starts here (`net.ipv4.ip_local_port_range`)."""

#: A log larger than this when its service starts is moved aside to `<name>.log.1` (replacing the one before): logs
#: are appended to across starts, and Pulsar's grows by hundreds of MB a day of work.
ROTATE_BYTES = 100 * 1024**2


@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int | None
    healthy: bool
    url: str
    rss_bytes: int | None
    #: Why a service is not healthy (an endpoint's failed check, how an ingest ended): shown by `rtca status`.
    note: str = ""
    #: Not running because it finished by itself (an ingest), not because it is down.
    ended: bool = False


def http_ok(url: str, *, timeout: float = 3.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _exit_code(popen: subprocess.Popen[bytes] | None, *, wait: float) -> int | None:
    """The exit code of a process this supervisor started, waiting up to `wait` s; None if unknown or running (its
    pid file can be gone while it runs: a half-written one read by `rtca status`)."""
    if popen is None:
        return None
    try:
        return popen.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        return None


def _rotate(log: Path) -> None:
    with suppress(OSError):  # no log yet, or a read-only run directory: append as before
        if log.stat().st_size > ROTATE_BYTES:
            log.replace(log.with_name(f"{log.name}.1"))


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (`/proc/PID/stat`, field 22): which process a pid is,
    whatever the wall clock did since. psutil's `create_time` adds the boot time, which moves with every step of
    the clock (NTP, a resumed virtual machine): a step of a second made every running service look gone. None
    without a /proc (macOS): the wall-clock start time then serves alone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _write_whole(path: Path, text: str) -> None:
    """Replace `path` with `text` at once: a reader (`rtca status` beside `rtca up`) never sees it half written."""
    part = path.with_name(f".{path.name}.{os.getpid()}")
    part.write_text(text)
    part.replace(path)


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def function_instance(proc: psutil.Process) -> str | None:
    """The function's name if `proc` is a Pulsar Functions instance (the worker's process runtime starts one process
    per instance, a child of the worker, with the function's name after ``--logging_file``), else None."""
    try:
        cmdline = proc.cmdline()
    except psutil.Error:
        return None
    if "--logging_file" not in cmdline[:-1]:
        return None
    return cmdline[cmdline.index("--logging_file") + 1]


class Supervisor:
    """Owns the pid files and logs of the local services under one run directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._started: dict[str, subprocess.Popen[bytes]] = {}  # what this supervisor started: exit codes
        for folder in (settings.logs_dir, settings.pids_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def log_file(self, name: str) -> Path:
        return self.settings.logs_dir / f"{name}.log"

    def _pid_file(self, name: str) -> Path:
        return self.settings.pids_dir / f"{name}.json"

    def process(self, name: str) -> psutil.Process | None:
        """The live process we started for `name`, or None (stale pid files are removed)."""
        path = self._pid_file(name)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # unreadable, or not JSON: written by no rtca of ours (they replace it whole)
            return None  # left there: whatever wrote it may be running
        try:
            proc = psutil.Process(record["pid"])
            ticks, now = record.get("start_ticks"), _start_ticks(proc.pid)
            same = (now == ticks if ticks is not None and now is not None  # immune to a step of the wall clock
                    else abs(proc.create_time() - record["create_time"]) < 1.0)  # an older rtca's, or no /proc
            if same and proc.status() != psutil.STATUS_ZOMBIE:
                return proc
        except (KeyError, TypeError, ValueError, AttributeError, OSError, psutil.Error):  # TypeError: a pid "12"
            pass
        try:
            path.unlink(missing_ok=True)
        except OSError:  # a read-only run directory: `rtca status` still answers
            pass
        return None

    def process_tree(self, name: str) -> list[psutil.Process]:
        """The live process we started for `name` and all its descendants (Pulsar's function instances are its
        children), or none."""
        proc = self.process(name)
        if proc is None:
            return []
        try:
            return [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return [proc]

    def last_run_log(self, name: str, *, tail: int = 65536) -> str | None:
        """What the service's log holds since its last start (within the last `tail` bytes), from the supervisor's
        start line, or from a partial line when the start is further back; None without a log or a start."""
        log = self.log_file(name)
        try:
            with log.open("rb") as text:
                text.seek(max(0, log.stat().st_size - tail))
                last = text.read().decode("utf-8", "replace")
        except OSError:
            return None
        start = last.rfind(f" {STARTING} {name}: ")
        if start < 0:  # started further back than the tail: the whole tail is its last run (a partial first line)
            return last if len(last) >= tail else None
        return last[start:]

    def healthy(self, service: Service) -> bool:
        if service.health_url is not None:
            alive = http_ok(service.health_url)
        elif service.ports:  # no HTTP endpoint (Zookeeper): listening on its first port is the best sign
            alive = port_open(service.host, service.ports[0])
        else:  # a client process (ingest): running is healthy
            alive = self.process(service.name) is not None
        return alive and (service.ready is None or service.ready())

    def check_ports(self, service: Service) -> None:
        """PortInUseError if a port of `service` (not running under this supervisor) is taken by someone else."""
        host = service.host
        for port in service.ports:
            if port_open(host, port):
                raise PortInUseError(
                    service.name, f"port {port} on {host} is already in use by a process rtca did not start",
                    hint=f"stop that process (see `ss -ltnp 'sport = :{port}'`) or move {service.name} to "
                         "another port with the RTCA_* settings (`rtca config` shows them)")

    def start(self, service: Service) -> psutil.Process:
        """Start `service` unless it already runs; a port held by someone else is a clear error, not a hang."""
        running = self.process(service.name)
        if running is not None:
            return running
        self.check_ports(service)
        launch = service.launch()
        log = self.log_file(service.name)
        _rotate(log)
        with log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {STARTING} {service.name}: "
                      f"{' '.join(launch.argv)}\n".encode())
            out.flush()
            popen = subprocess.Popen(list(launch.argv), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=launch.cwd, env={**os.environ, **launch.env},
                                     start_new_session=True)
        try:
            proc = psutil.Process(popen.pid)
            record = {"pid": popen.pid, "create_time": proc.create_time(), "start_ticks": _start_ticks(popen.pid)}
            _write_whole(self._pid_file(service.name), json.dumps(record))
        except BaseException:  # a full disk, an interrupt: a process in no pid file would outlive every `rtca down`
            with suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            raise
        self._started[service.name] = popen
        return proc

    def start_all(self, services: Sequence[Service], *, timeout: float, started: list[str]) -> None:
        """Start each service as soon as the services it comes `after` are healthy; return when all are.

        Names of the processes this call started are appended to `started`, so a caller can undo a failed start.
        A service that dies during start-up fails the call at once, naming its log.
        """
        waiting = {s.name: s for s in services}  # not started yet
        pending = dict(waiting)  # not healthy yet
        begin = last_report = time.monotonic()
        while pending:
            for name, service in list(waiting.items()):
                if not any(dep in pending for dep in service.after):
                    if self.process(name) is None:
                        self.start(service)
                        started.append(name)
                    del waiting[name]
            for name, service in list(pending.items()):
                if name in waiting:
                    continue
                if self.healthy(service):
                    say(f"  {name} healthy after {time.monotonic() - begin:.0f} s")
                    del pending[name]
                elif self.process(name) is None:
                    if service.may_finish and _exit_code(self._started.get(name), wait=5.0) == 0:
                        say(f"  {name} finished (exit 0) after {time.monotonic() - begin:.0f} s")
                        del pending[name]
                        continue
                    raise ServiceError(name, "exited during start-up", log=self.log_file(name),
                                       hint=self._exit_hint(service))
            elapsed = time.monotonic() - begin
            overdue = sorted(name for name, service in pending.items() if elapsed > (service.start_timeout or timeout))
            if overdue:
                raise ServiceError(", ".join(overdue), f"not healthy after {elapsed:.0f} s",
                                   log=self.log_file(overdue[0]),
                                   hint="the machine may be overloaded; rerun `rtca up` to keep waiting")
            if pending and time.monotonic() - last_report >= 10:
                say(f"  waiting for {', '.join(sorted(pending))} ({elapsed:.0f} s)")
                last_report = time.monotonic()
            if pending:
                time.sleep(0.5)

    def _exit_hint(self, service: Service) -> str:
        """What to do about a service that exited during start-up, from its log where it says."""
        if "Address already in use" in (self.last_run_log(service.name) or ""):
            # not seen by `check_ports`: nothing listens, but a socket is bound to the port (a connection of a
            # service just stopped, lingering in TIME_WAIT, or any outgoing one lent that port by the kernel)
            ports = ", ".join(str(port) for port in service.ports) or "its port"
            return (f"{service.name} could not bind {ports}: a socket holds it (a connection of a service just "
                    f"stopped lingers up to a minute; ports from {EPHEMERAL_PORTS_FROM} are lent to outgoing "
                    "connections): rerun `rtca up`, or move the port below that with its RTCA_* setting "
                    "(`rtca config`)")
        return f"read the end of the log: rtca logs {service.name}"

    def restart(self, service: Service, *, timeout: float) -> None:
        self.stop(service.name)
        self.start_all([service], timeout=timeout, started=[])

    def stop(self, name: str, *, timeout: float = 30.0, report: Callable[[str], None] | None = None) -> bool:
        """SIGTERM the service's process group, SIGKILL what is left after `timeout`; True if it was running.
        `report` gets a line every 10 s of the wait, and one if it comes to SIGKILL."""
        return bool(self.stop_all([name], timeout=timeout, report=report))

    def stop_all(self, names: Sequence[str], *, timeout: float = 30.0,
                 report: Callable[[str], None] | None = None) -> list[str]:
        """`stop` of several services at once (SIGTERM to all, then one wait): services that shut down slowly, as
        Pinot's roles do, wait side by side instead of in turn. Returns those that were running."""
        families: dict[str, list[psutil.Process]] = {}
        for name in names:
            proc = self.process(name)
            if proc is None:
                continue
            try:
                families[name] = [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:  # it exited meanwhile: stopped all the same
                families[name] = [proc]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        begin = time.monotonic()
        alive = [p for family in families.values() for p in family]
        while alive and (left := timeout - (time.monotonic() - begin)) > 0:
            _, alive = psutil.wait_procs(alive, timeout=min(10.0, left))
            if alive and report is not None and time.monotonic() - begin < timeout:
                for name in _owners(families, alive):
                    report(f"  {name}: still exiting ({time.monotonic() - begin:.0f} s; killed at {timeout:.0f} s)")
        if alive and report is not None:
            for name in _owners(families, alive):
                report(f"  {name}: did not exit within {timeout:.0f} s: killed")
        for leftover in alive:
            try:
                leftover.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for family in families.values():  # and what joined a group after the SIGTERM (a function instance the worker
            with suppress(ProcessLookupError, PermissionError):  # started as it stopped), which no list above holds
                os.killpg(family[0].pid, signal.SIGKILL)
        for name in families:
            self._pid_file(name).unlink(missing_ok=True)
            self.mark_stopped(name)
        return list(families)

    def mark_stopped(self, name: str) -> None:
        """Say in the service's log that its last run ended by rtca's hand (a stop, not a crash)."""
        with suppress(OSError), self.log_file(name).open("ab") as out:
            out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {STOPPED} {name}\n".encode())

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the run directory's lock: two `rtca up` at once would each start the missing services (two JVMs of
        one service, one of them in no pid file); the second waits for the first instead."""
        with held_lock(self.settings.pids_dir / ".lock",
                       waiting="another rtca command is starting or stopping this stack; waiting for it ..."):
            yield

    def states(self, services: Sequence[Service]) -> list[ServiceState]:
        """Every service's state, checked at once: one after another, the health checks of services still starting
        (a JVM that accepts but does not answer yet) added up to half a minute."""
        with ThreadPoolExecutor(max_workers=max(1, len(services))) as pool:
            return list(pool.map(self.state, services))

    def state(self, service: Service) -> ServiceState:
        proc = self.process(service.name)
        rss = None
        if proc is not None:
            try:
                rss = sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
            except psutil.Error:
                rss = None
        return ServiceState(service.name, proc.pid if proc else None, self.healthy(service), service.url, rss)


def _owners(families: Mapping[str, Sequence[psutil.Process]], alive: Sequence[psutil.Process]) -> list[str]:
    """The services (in `families`' order) with a process among `alive`."""
    pids = {p.pid for p in alive}
    return [name for name, family in families.items() if any(p.pid in pids for p in family)]


@contextmanager
def held_lock(path: Path, *, waiting: str) -> Iterator[None]:
    """Hold the file lock `path` (a second rtca process waits for the first), saying `waiting` if it must wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(waiting)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

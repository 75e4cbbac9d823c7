"""Start-up failures give a clear error naming cause and fix, and leave no half-started stack behind.

These start a second, separate stack (own run directory, own free ports) next to the session's, so they do not
disturb it; each fails on purpose within seconds of starting.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rtca import stack
from rtca.errors import PortInUseError, PrerequisiteError, ServiceError
from rtca.settings import Settings, load_settings
from rtca.stack import local
from rtca.stack.process import Launch, Service, Supervisor
from waiting import wait_for


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


def test_a_port_in_use_is_found_before_the_downloads(tmp_path: Path, occupied_port: socket.socket,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """On a first start the busy port was only reported after minutes of downloads (a cold-start walkthrough)."""
    def downloads(settings: Settings) -> None:
        raise AssertionError("the downloads began before the ports were checked")

    monkeypatch.setattr(local, "ensure_all", downloads)
    base = isolated_settings(tmp_path)
    settings = load_settings(run_dir=base.run_dir, cache_dir=tmp_path / "cold-cache", pulsar=base.pulsar.model_dump(),
                             pinot=base.pinot.model_dump(), superset={"port": occupied_port.getsockname()[1]})
    with pytest.raises(PortInUseError, match="superset: port"):
        stack.up(settings)


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


def test_java_without_maven_is_a_prerequisite_error_that_names_maven(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    """The empty PATH above stops at Java: Maven's message is only reached with a working Java and no `mvn`."""
    import shutil

    real_java = shutil.which("java")
    if real_java is None:
        pytest.skip("no java on PATH to link to")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "java").symlink_to(real_java)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tools))  # java (the real one), no mvn
    settings = isolated_settings(tmp_path)
    with pytest.raises(PrerequisiteError) as raised:
        local.check_prerequisites(settings)
    message = str(raised.value)
    print(f"error shown to the user: {message}")
    assert "'mvn' was not found" in message and "Maven" in message and "apt-get install maven" in message


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


def _web_service(port: int, name: str = "web") -> Service:
    """A cheap stand-in for a stack service: Python's HTTP server (healthy once it answers)."""
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    return Service(name, lambda: Launch(argv=argv), url=f"http://127.0.0.1:{port}",
                   health_url=f"http://127.0.0.1:{port}/", ports=(port,))  # fmt: skip


def test_a_port_bound_by_a_socket_that_does_not_listen_is_named_with_what_to_do(tmp_path: Path) -> None:
    """The port check connects, so a port held by a socket that does not listen (a connection just closed, in
    TIME_WAIT, or an outgoing one the kernel lent a port from 32768 on: a fresh-clone test run's Pinot controller on
    port 39000) passes it; the service then exits with "Address already in use", which the error now explains."""
    settings = isolated_settings(tmp_path)
    port = free_ports(1)[0]
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))  # bound, not listening: nothing answers a connect
    try:
        with pytest.raises(ServiceError) as raised:
            Supervisor(settings).start_all([_web_service(port)], timeout=60, started=[])
    finally:
        holder.close()
    message = str(raised.value)
    print(f"error shown to the user: {message}")
    assert "web: exited during start-up" in message
    assert f"web could not bind {port}: a socket holds it" in message and "rerun `rtca up`" in message


def test_two_starts_at_once_start_one_process(tmp_path: Path) -> None:
    """Two `rtca up` at once each saw the service missing and each launched it: two JVMs of one service, one in no
    pid file (found by review: two StartServer JVMs). The run directory's lock makes the second wait and find it."""
    settings = isolated_settings(tmp_path)
    service = _web_service(free_ports(1)[0])
    launched: list[list[str]] = []

    def up_once() -> None:
        supervisor = Supervisor(settings)
        with supervisor.exclusive():
            started: list[str] = []
            supervisor.start_all([service], timeout=60, started=started)
            launched.append(started)

    threads = [threading.Thread(target=up_once) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        servers = [p for p in psutil.process_iter() if _serves(p, service)]
        print("launched per call:", launched, "servers:", [p.pid for p in servers])
        assert sorted(len(x) for x in launched) == [0, 0, 1]
        running = Supervisor(settings).process("web")
        assert len(servers) == 1 and running is not None and running.pid == servers[0].pid
    finally:
        Supervisor(settings).stop("web")


def test_a_service_process_tree_holds_its_children(tmp_path: Path) -> None:
    """Pulsar's function instances are its child processes: the benchmarks count their memory and CPU through the
    service's process tree, and a stopped service has none."""
    settings = isolated_settings(tmp_path)
    port = free_ports(1)[0]
    argv = [sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-m', 'http.server', "
            f"'{port}', '--bind', '127.0.0.1'])"]  # fmt: skip
    service = Service("web", lambda: Launch(argv=argv), url=f"http://127.0.0.1:{port}",
                      health_url=f"http://127.0.0.1:{port}/", ports=(port,))  # fmt: skip
    supervisor = Supervisor(settings)
    try:
        supervisor.start_all([service], timeout=60, started=[])
        tree = supervisor.process_tree("web")
        parent = supervisor.process("web")
        assert parent is not None and tree[0].pid == parent.pid
        assert any(_serves(member, service) for member in tree[1:]), [m.cmdline() for m in tree]
    finally:
        supervisor.stop("web")
    assert supervisor.process_tree("web") == []


def test_a_function_instance_is_known_by_its_logging_file_argument() -> None:
    """Pulsar's process runtime names each instance's log after the function (``--logging_file coinbase-router``):
    the benchmarks count an instance's CPU and memory under that name."""
    from rtca.stack.process import function_instance

    argv = [sys.executable, "-c", "import time; time.sleep(30)", "--logging_file", "coinbase-router"]
    with subprocess.Popen(argv) as instance:
        try:  # right after the fork the child still has its parent's command line, until it execs
            wait_for(lambda: function_instance(psutil.Process(instance.pid)) == "coinbase-router", timeout=10,
                     what="the instance's command line")  # fmt: skip
        finally:
            instance.kill()
    assert function_instance(psutil.Process()) is None


def _serves(proc: psutil.Process, service: Service) -> bool:
    try:
        return "http.server" in " ".join(proc.cmdline()) and str(service.ports[0]) in proc.cmdline()
    except psutil.Error:
        return False


def test_status_checks_every_service_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A JVM that accepts connections but does not answer yet costs a health check its whole timeout: one after
    another, `rtca status` took half a minute while the stack started."""
    settings = isolated_settings(tmp_path)
    together = threading.Barrier(4, timeout=60)  # passed only when the 4 checks are under way at the same time
    check = Supervisor.healthy

    def healthy_together(self: Supervisor, service: Service) -> bool:
        together.wait()  # one after another: BrokenBarrierError
        return check(self, service)

    monkeypatch.setattr(Supervisor, "healthy", healthy_together)
    listeners = []
    for _ in range(4):  # accept (the kernel's backlog does) and never answer
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listeners.append(listener)
    services = [_web_service(int(lst.getsockname()[1]), f"mute-{i}") for i, lst in enumerate(listeners)]
    try:
        started = time.monotonic()
        states = Supervisor(settings).states(services)
        took = time.monotonic() - started
    finally:
        for listener in listeners:
            listener.close()
    print(f"4 services that do not answer, checked in {took:.1f} s (one check times out after 3 s)")
    assert [s.healthy for s in states] == [False] * 4 and [s.name for s in states] == [s.name for s in services]


def test_a_port_only_service_is_checked_on_its_own_host(tmp_path: Path) -> None:
    """Zookeeper's health (a listening port) was looked for on Pulsar's host."""
    settings = isolated_settings(tmp_path)
    with socket.socket() as listener:
        listener.bind(("127.0.0.2", 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        zookeeper = Service("zk", lambda: Launch(argv=["true"]), url=f"127.0.0.2:{port}", ports=(port,),
                            host="127.0.0.2")  # fmt: skip
        assert settings.pulsar.host == "127.0.0.1" and Supervisor(settings).healthy(zookeeper)


def test_stopping_cannot_be_interrupted_halfway() -> None:
    with local.signals_ignored():
        os.kill(os.getpid(), signal.SIGINT)  # ignored: no KeyboardInterrupt
        time.sleep(0.1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_logs_are_read_from_the_end(tmp_path: Path) -> None:
    from rtca.cli import _last_lines

    log = tmp_path / "big.log"
    log.write_text("".join(f"line {i}\n" for i in range(200_000)))
    assert _last_lines(log, 3) == ["line 199997", "line 199998", "line 199999"]
    assert _last_lines(log, 0) == [] and len(_last_lines(log, 10_000)) == 10_000
    assert _last_lines(log, 150_000)[0] == "line 50000"  # many lines: block by block, not the tail again each time
    log.write_text("one\ntwo")
    assert _last_lines(log, 5) == ["one", "two"]


def test_a_large_log_is_moved_aside_when_its_service_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rtca.stack import process

    monkeypatch.setattr(process, "ROTATE_BYTES", 1000)
    supervisor = Supervisor(load_settings(backend="external", run_dir=tmp_path))
    log = supervisor.log_file("chatty")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("old line\n" * 200)  # 1,800 bytes
    service = Service("chatty", lambda: Launch([sys.executable, "-c", "print('new run')"]), url="", may_finish=True)
    supervisor.start(service)
    assert log.with_name("chatty.log.1").read_text() == "old line\n" * 200
    assert "old line" not in log.read_text() and f"{process.STARTING} chatty" in log.read_text()
    wait_for(lambda: supervisor.process("chatty") is None, timeout=10, what="the first run to end")
    supervisor.start(service)  # small now: appended to, not moved
    assert log.read_text().count(f"{process.STARTING} chatty") == 2


def test_a_service_that_ignores_sigterm_is_killed_and_the_wait_is_said(tmp_path: Path) -> None:
    """`make down` sat silent for half a minute on a pinot-server that did not exit, then killed it unannounced."""
    supervisor = Supervisor(load_settings(backend="external", run_dir=tmp_path))
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('deaf'); time.sleep(60)"
    service = Service("stubborn", lambda: Launch([sys.executable, "-u", "-c", stubborn]), url="", may_finish=True)
    supervisor.start(service)
    wait_for(lambda: "\ndeaf\n" in supervisor.log_file("stubborn").read_text(), timeout=10, what="SIGTERM ignored")
    lines: list[str] = []
    assert supervisor.stop("stubborn", timeout=1.5, report=lines.append)
    assert lines == ["  stubborn: did not exit within 2 s: killed"]
    assert supervisor.process("stubborn") is None


def test_slow_services_are_stopped_side_by_side(tmp_path: Path) -> None:
    """`make down` stopped Pinot's roles one after another, each taking 10-30 s to exit: 56 s in all. Services of
    one layer now get SIGTERM together: the second is told to stop before the first has finished exiting."""
    supervisor = Supervisor(load_settings(backend="external", run_dir=tmp_path))
    slow = ("import signal, sys, time\n"
            "def term(*_):\n"
            "    print('term', time.time(), flush=True); time.sleep(1.5); print('exit', time.time(), flush=True)\n"
            "    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, term); print('ready', flush=True); time.sleep(60)\n")  # fmt: skip
    names = ("slow-a", "slow-b")
    for name in names:
        supervisor.start(Service(name, lambda: Launch([sys.executable, "-u", "-c", slow]), url="", may_finish=True))
    for name in names:
        wait_for(lambda: "\nready\n" in supervisor.log_file(name).read_text(), timeout=10, what=f"{name} ready")
    lines: list[str] = []
    assert supervisor.stop_all(names, timeout=20, report=lines.append) == list(names)
    assert lines == [], "a service did not exit by itself"

    def moment(name: str, what: str) -> float:
        return next(float(line.split()[1]) for line in supervisor.log_file(name).read_text().splitlines()
                    if line.startswith(f"{what} "))  # fmt: skip

    assert moment("slow-b", "term") < moment("slow-a", "exit"), "slow-b was only stopped once slow-a had exited"
    assert all(supervisor.process(name) is None for name in names)


def test_a_service_that_exits_while_it_is_being_stopped_does_not_stop_the_rest(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """One exiting between the supervisor's look-up and its children's (a review found it): `rtca down` raised and
    left ZooKeeper and Pulsar running."""
    supervisor = Supervisor(load_settings(backend="external", run_dir=tmp_path))
    for name in ("leaving", "staying"):
        supervisor.start(Service(name, lambda: Launch([sys.executable, "-c", "import time; time.sleep(60)"]), url="",
                                 may_finish=True))  # fmt: skip
    leaving = supervisor.process("leaving")
    assert leaving is not None
    real_children = psutil.Process.children

    def children(self: psutil.Process, recursive: bool = False) -> list[psutil.Process]:
        if self.pid == leaving.pid:
            raise psutil.NoSuchProcess(self.pid)
        return real_children(self, recursive=recursive)

    monkeypatch.setattr(psutil.Process, "children", children)
    assert supervisor.stop_all(["leaving", "staying"], timeout=10) == ["leaving", "staying"]
    assert supervisor.process("staying") is None


def test_down_stops_every_service_once_zookeeper_and_pulsar_last() -> None:
    layers = [name for layer in local.STOP_ORDER for name in layer]
    assert sorted(layers) == sorted({*local.SERVICE_NAMES, *local.AUXILIARY_NAMES}) and len(set(layers)) == len(layers)
    assert set(local.STOP_ORDER[-1]) == {"pinot-zookeeper", "pulsar"}  # Pinot's roles deregister from ZooKeeper


@pytest.mark.stack
def test_pulsar_unpacks_its_native_libraries_into_the_run_directory(stack_up: Settings) -> None:
    """A killed Pulsar left RocksDB's 13-MB library (and the checksum's) in /tmp: the JVM deletes them only when it
    exits cleanly. They now live in the run directory, cleared at Pulsar's next start."""
    proc = Supervisor(stack_up).process("pulsar")
    assert proc is not None
    jvm = next(p for p in [proc, *proc.children(recursive=True)] if p.name() == "java")
    libraries = {m.path for m in jvm.memory_maps() if ".so" in m.path and ("rocksdb" in m.path or "circe" in m.path)}
    assert libraries, "Pulsar's JVM maps no RocksDB or checksum library"
    tmp = stack_up.data_dir / "pulsar" / "tmp"
    assert all(Path(path).is_relative_to(tmp) for path in libraries), libraries
    # set through PULSAR_EXTRA_OPTS, it had replaced Pulsar's own defaults there (a review found it)
    assert "-Dpulsar.allocator.exit_on_oom=true" in jvm.cmdline()


@pytest.mark.stack
def test_a_fresh_pulsar_s_bookie_listens_on_the_configured_port(stack_up: Settings, tmp_path: Path) -> None:
    """Standalone's embedded bookie ignored `--bookkeeper-port` and took a free port of its own (which its cookie
    then kept): the setting, and the start-up check of that port, concerned a port nothing used."""
    from rtca.stack import pulsar

    settings = isolated_settings(tmp_path)
    supervisor = Supervisor(settings)
    try:
        supervisor.start_all([pulsar.service(settings)], timeout=240, started=[])
        wanted = settings.pulsar.bookie_port
        listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert wanted in listening, f"no bookie on {wanted}: {supervisor.log_file('pulsar')}"
    finally:
        supervisor.stop("pulsar")
    assert our_processes(settings) == []


@pytest.mark.stack
def test_the_pinot_broker_serves_its_configured_port_and_waits_only_a_second_to_exit(stack_up: Settings,
                                                                                     tmp_path: Path) -> None:
    """Pinot's broker waits `pinot.broker.delayShutdownTimeMs` (10 s by default: most of `rtca down`) for queries in
    flight before it exits. Only its configuration file sets that, and a file replaces StartBroker's flags, so the
    file carries the host and query port too: the broker must answer there."""
    from rtca.stack import pinot

    settings = isolated_settings(tmp_path)
    supervisor = Supervisor(settings)
    roles = {s.name: s for s in pinot.services(settings)}
    names = ["pinot-zookeeper", "pinot-controller", "pinot-broker"]
    try:
        supervisor.start_all([roles[name] for name in names], timeout=240, started=[])  # healthy: /health answered
        assert settings.pinot.broker_url.endswith(f":{settings.pinot.broker_port}")
        supervisor.stop("pinot-broker")
        said = supervisor.log_file("pinot-broker").read_text(errors="replace")
        assert f"Wait for {pinot.BROKER_SHUTDOWN_DELAY_MS}ms before shutting down" in said
    finally:
        supervisor.stop_all(names[::-1])
    assert our_processes(settings) == []


@pytest.mark.parametrize("content", ["null", '{"pid": "12", "create_time": 0}', "[]", '{"pid": 1}'])
def test_a_damaged_pid_file_means_not_running_and_is_removed(tmp_path: Path, content: str) -> None:
    supervisor = Supervisor(load_settings(run_dir=tmp_path))
    path = supervisor.settings.pids_dir / "pulsar.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    assert supervisor.process("pulsar") is None
    assert not path.exists()


@pytest.mark.parametrize("content", ["{", ""])
def test_a_pid_file_that_is_no_json_means_not_running_and_is_left_for_the_next_start(tmp_path: Path,
                                                                                   content: str) -> None:  # fmt: skip
    """`rtca status` beside `rtca up` read a pid file half written and deleted it: the service it named ran on in no
    pid file, out of `rtca down`'s reach (found by review: 2 of 300 starts). Pid files are now replaced whole, and
    one that is no JSON was written by none of ours: it is left, and replaced by the next start."""
    settings = isolated_settings(tmp_path)
    supervisor = Supervisor(settings)
    path = settings.pids_dir / "superset.json"
    path.write_text(content)
    assert supervisor.process("superset") is None and path.read_text() == content
    supervisor.start_all([_web_service(free_ports(1)[0], "superset")], timeout=60, started=[])
    try:
        assert supervisor.process("superset") is not None
    finally:
        supervisor.stop("superset")
    assert our_processes(settings) == []


def test_a_service_is_known_by_its_start_in_ticks_since_boot_whatever_the_clock_did(tmp_path: Path) -> None:
    """Its pid file held the wall-clock start time, which psutil derives from the boot time, and that moves with every
    step of the clock: a step of more than a second made every running service look gone, its pid file deleted
    (found by review). A pid file now also holds the start in ticks since boot; one of an older rtca still works."""
    import json

    settings = isolated_settings(tmp_path)
    supervisor = Supervisor(settings)
    sleeper = Service("sleeper", lambda: Launch([sys.executable, "-c", "import time; time.sleep(60)",
                                                 str(settings.run_dir)]), url="", may_finish=True)  # fmt: skip
    proc = supervisor.start(sleeper)
    path = settings.pids_dir / "sleeper.json"
    record = json.loads(path.read_text())
    try:
        for shown, found in (({**record, "create_time": record["create_time"] - 5}, True),  # the clock stepped
                             ({"pid": proc.pid, "create_time": record["create_time"]}, True),  # an older rtca's
                             ({**record, "start_ticks": record["start_ticks"] - 1}, False)):  # the pid reused
            path.write_text(json.dumps(shown))
            assert (supervisor.process("sleeper") is not None) is found, shown
    finally:
        proc.kill()
        proc.wait(10)


def test_a_process_a_service_starts_as_it_stops_is_stopped_too(tmp_path: Path) -> None:
    """The stop killed the processes it had listed when it sent SIGTERM: one the service started after that (Pulsar's
    worker starting a function instance as it shut down) ran on (found by review)."""
    settings = isolated_settings(tmp_path)
    supervisor = Supervisor(settings)
    late = ("import signal, subprocess, sys, time\n"
            f"child = [sys.executable, '-c', 'import time; time.sleep(60)', {str(settings.run_dir)!r}]\n"
            "signal.signal(signal.SIGTERM, lambda *a: (subprocess.Popen(child), time.sleep(0.5), sys.exit(0)))\n"
            "print('up', flush=True)\ntime.sleep(60)")  # fmt: skip
    service = Service("late", lambda: Launch([sys.executable, "-u", "-c", late, str(settings.run_dir)]), url="",
                      may_finish=True)  # fmt: skip
    supervisor.start(service)
    wait_for(lambda: "\nup\n" in supervisor.log_file("late").read_text(), timeout=10, what="it runs")
    assert supervisor.stop("late", timeout=10)
    wait_for(lambda: our_processes(settings) == [], timeout=5, what="no process of the service left")


def test_a_start_whose_pid_file_cannot_be_written_leaves_no_process(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A full disk (or an interrupt) between the process's start and its pid file left it running, out of every
    `rtca down`'s reach (found by review)."""
    import rtca.stack.process

    settings = isolated_settings(tmp_path)
    supervisor = Supervisor(settings)
    sleeper = Service("sleeper", lambda: Launch([sys.executable, "-c", "import time; time.sleep(60)",
                                                 str(settings.run_dir)]), url="", may_finish=True)  # fmt: skip

    def full(path: Path, text: str) -> None:
        assert len(our_processes(settings)) == 1  # started, then its pid file failed
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rtca.stack.process, "_write_whole", full)
    with pytest.raises(OSError, match="No space left"):
        supervisor.start(sleeper)
    assert our_processes(settings) == []


def test_down_keeps_the_data_and_down_wipe_deletes_it(tmp_path: Path) -> None:
    """`rtca down` must keep topics, segments and dashboards for the next `rtca up`; `--wipe` is the way to a fresh
    stack. A stand-in service under the isolated stack's supervisor (as `superset`), and each data folder holding a
    file."""
    from rtca.stack import pinot, pulsar, superset

    settings = isolated_settings(tmp_path)
    folders = [*pulsar.data_dirs(settings), *pinot.data_dirs(settings), *superset.data_dirs(settings)]
    for folder in folders:
        (folder / "kept").mkdir(parents=True)
        (folder / "kept" / "data.bin").write_bytes(b"x" * 100)
    supervisor = Supervisor(settings)
    service = _web_service(free_ports(1)[0], "superset")
    for wipe in (False, True):
        supervisor.start_all([service], timeout=60, started=[])
        assert supervisor.process("superset") is not None
        assert stack.down(settings, wipe=wipe) == ["superset"]
        assert supervisor.process("superset") is None and our_processes(settings) == []
        present = [folder for folder in folders if (folder / "kept" / "data.bin").exists()]
        print(f"down(wipe={wipe}): data folders left {[str(f.relative_to(tmp_path)) for f in present]}")
        assert present == ([] if wipe else folders)
    assert supervisor.log_file("superset").exists()  # the logs are not data: kept, to read why it went wrong

"""`rtca ingest start|stop`: the ingest as a supervised background process.

Pulsar's Python runtime has no sources, so ingest runs beside the stack: the same `rtca ingest run` command,
started under the stack's supervisor (pid file, one log file), shown by `rtca status`, stopped by `rtca down`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import psutil

from rtca.errors import ConfigError, ServiceError
from rtca.feed.connection import CANNOT_CONNECT, RECEIVING_AGAIN, log as connection_log
from rtca.feed.ingest import DATA_FLOWS, DRAIN_TIMEOUT_S, STARTED
from rtca.feed.sinks import OPERATION_TIMEOUT_S
from rtca.settings import Settings
from rtca.stack.process import STARTING, STOPPED, Launch, Service, ServiceState, Supervisor
from rtca.stack.progress import say

NAME = "ingest"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The log lines of `rtca ingest run` (its stderr is the service's log; `connection_trouble` reads them back)."""


def ingest_service(settings: Settings, run_args: Sequence[str] = (), *, name: str = NAME) -> Service:
    """The ingest as a supervised service: started once its log says it publishes (`rtca.feed.ingest.STARTED`),
    so that one ending at once (a bad capture, Pulsar unreachable) fails the start, naming its log."""
    argv = [*settings.rtca_command, "ingest", "run", *run_args]
    supervisor = Supervisor(settings)

    def settled() -> bool:
        return f"\n{STARTED} " in (supervisor.last_run_log(name) or "")

    return Service(name, lambda: Launch(argv=argv), url=settings.topic(settings.topics.raw), ready=settled,
                   may_finish=True)


Started = Literal["started", "restarted", "running", "finished"]


def start_ingest(settings: Settings, run_args: Sequence[str], *,
                 name: str = NAME) -> tuple[ServiceState, Started]:
    """Start the ingest with `run_args` (`rtca ingest run` flags); idempotent: a running ingest with the same
    arguments is left alone, one with other arguments (another source, say) is restarted with these.

    Returns its state and what this call did."""
    wanted = _options(run_args)  # refused here, before the running ingest is touched
    supervisor = Supervisor(settings)
    with supervisor.exclusive():  # two starts at once would both find none and start one each
        return _start_ingest(settings, supervisor, ingest_service(settings, run_args, name=name), run_args, wanted,
                             name=name)  # fmt: skip


def _start_ingest(settings: Settings, supervisor: Supervisor, service: Service, run_args: Sequence[str],
                  wanted: dict[str, Any], *, name: str) -> tuple[ServiceState, Started]:
    running = supervisor.process(name)
    done: Started = "started"
    if running is not None:
        try:
            current = running.cmdline()
        except psutil.Error:
            current = []
        try:
            # another command is an ingest of an older rtca; the interpreter may be named otherwise (python,
            # python3.11) in the same environment
            command = [*settings.rtca_command, "ingest", "run"]
            same = (bool(current) and Path(current[0]).parent == Path(command[0]).parent
                    and current[1:len(command)] == command[1:] and _options(current[len(command):]) == wanted)
        except ConfigError:  # flags of another version: not the same
            same = False
        try:  # the same flags under other settings (another raw topic, another Pulsar) is another ingest
            same = same and _settings_env(running.environ()) == _settings_env(os.environ)
        except psutil.Error:
            same = False
        if same:
            return supervisor.state(service), "running"
        supervisor.stop(name, timeout=STOP_TIMEOUT_S, report=say)
        done = "restarted"
    # a broker that answers but is slow (just restarted) may take the client's operation timeout to take a producer
    try:
        supervisor.start_all([service], timeout=OPERATION_TIMEOUT_S + 15, started=[])
    except ServiceError as exc:  # e.g. the source refused the subscription: its reason, not only the log's path
        ended = ended_ingest(settings, name=name)
        if ended is None:  # not healthy in time: stopped, not left to publish later behind an error
            supervisor.stop(name, timeout=STOP_TIMEOUT_S, report=say)
            raise ServiceError(name, f"{exc.args[0].removeprefix(f'{name}: ')}; stopped", log=exc.log,
                               hint=f"`rtca logs {name}` says why; `rtca status` shows Pulsar") from None
        why = ended.note.removeprefix("exited: ").split("; `rtca logs")[0]  # "error: ...": the CLI's own words
        raise ServiceError(name, f"exited during start-up: {why}", log=exc.log, hint=exc.hint) from None
    if supervisor.process(name) is None:  # a short run (--duration, --max-messages) ended within its start-up
        ended = ended_ingest(settings, name=name)
        if ended is not None and not ended.note.startswith("finished"):  # e.g. nothing received: not a success
            why = ended.note.removeprefix("exited: ").split("; `rtca logs")[0]
            raise ServiceError(name, f"exited during start-up: {why}", log=supervisor.log_file(name),
                               hint=f"`rtca logs {name}`")
        done = "finished"
    return supervisor.state(service), done


STOP_TIMEOUT_S = 2 * DRAIN_TIMEOUT_S + 15
"""How long a stop waits for the ingest to exit before it is killed: its two drains (`DRAIN_TIMEOUT_S`) and its
report. Killed sooner, it lost what Pulsar had not confirmed yet (Pulsar slow or away)."""


def _options(run_args: Sequence[str]) -> dict[str, Any]:
    """`rtca ingest run` flags as the options they mean (None where not given); invalid ones (argparse's reason,
    or an option the source would ignore) are a ConfigError."""
    from rtca.cli import _split, build_parser
    from rtca.feed.sources import SourceSpec, check_replay_products

    reason = io.StringIO()
    try:
        with contextlib.redirect_stderr(reason):
            options = vars(build_parser().parse_args(["ingest", "run", *run_args]))
    except SystemExit:
        said = reason.getvalue().strip().splitlines()
        raise ConfigError(f"invalid ingest options: {said[-1] if said else ' '.join(run_args)}",
                          hint="`rtca ingest run --help` lists them") from None
    try:  # what `rtca ingest run` would refuse at once (an unknown channel), refused before anything is stopped
        check_replay_products(SourceSpec.build(
            options["source"], url=options["url"], capture=options["capture"], speed=options["speed"],
            loop=options["loop"], shift_time=options["shift_time"], products=_split(options["products"]),
            channels=_split(options["channels"]), rate=options["rate"], seed=options["seed"]))  # fmt: skip
    except ConfigError as exc:
        raise ConfigError(f"invalid ingest options: {exc.args[0]}", hint=exc.hint) from None
    return options


_SAID = {"started": "started", "restarted": "restarted with the new arguments", "running": "already running",
         "finished": "ran and finished"}


def describe_start(settings: Settings, state: ServiceState, done: Started) -> str:
    """What `start_ingest` did, in a sentence (the CLI's and runbook 40's)."""
    pid = f" (pid {state.pid})" if state.pid else ""
    return f"ingest {_SAID[done]}{pid}; log: {settings.logs_dir / 'ingest.log'}"


def _settings_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment that makes the ingest's settings (Superset's variables do not concern it)."""
    return {key: value for key, value in environ.items() if key.startswith("RTCA_")}


def stop_ingest(settings: Settings, *, name: str = NAME) -> bool:
    """Stop the ingest; True if it was running. One that had ended by itself is then no longer shown as ended."""
    supervisor = Supervisor(settings)
    with supervisor.exclusive():
        if supervisor.stop(name, timeout=STOP_TIMEOUT_S, report=say):
            return True
        if ended_ingest(settings, name=name) is not None:
            supervisor.mark_stopped(name)
        return False


def ingest_state(settings: Settings, *, name: str = NAME) -> ServiceState | None:
    """The running ingest's state, or None when it is not running; one that cannot reach its source is not
    healthy, and says why (it keeps trying: a network that comes back is used at once)."""
    supervisor = Supervisor(settings)
    if supervisor.process(name) is None:
        return None
    state = supervisor.state(ingest_service(settings, name=name))
    trouble = connection_trouble(settings, name=name)
    if trouble is None:
        return state
    return dataclasses.replace(state, healthy=False, note=trouble.describe())


@dataclass(frozen=True)
class ConnectionTrouble:
    """The running ingest's failed attempts to reach its source since frames last flowed (or since it started)."""

    last_error: str
    attempts: int

    def describe(self) -> str:
        return f"{self.last_error} ({self.attempts} failed attempt(s) in a row; it keeps trying: `rtca ingest stop`)"


def connection_trouble(settings: Settings, *, name: str = NAME) -> ConnectionTrouble | None:
    """Read off the ingest's log (`rtca.feed.connection`'s warnings): None while its source answers."""
    run = Supervisor(settings).last_run_log(name) or ""
    last, attempts = "", 0
    for line in run.splitlines():
        if f": {CANNOT_CONNECT}: " in line:
            # the message without the time, level and logger the ingest's log puts before it
            last, attempts = line.strip().rpartition(f" {connection_log.name}: ")[2], attempts + 1
        elif f": {RECEIVING_AGAIN} " in line:
            last, attempts = "", 0
    return ConnectionTrouble(last, attempts) if attempts else None


def data_flows(settings: Settings, *, name: str = NAME) -> bool:
    """Whether the ingest has received market data since its last start (its log says so once; a run whose start
    is further back than the log's tail has run, logging, for a long while: taken as flowing)."""
    run = Supervisor(settings).last_run_log(name) or ""
    return f"\n{DATA_FLOWS} " in run or (bool(run) and f" {STARTING} {name}: " not in run)


def receiving(settings: Settings, *, name: str = NAME, timeout: float = 15.0) -> tuple[bool, str]:
    """Whether the ingest receives market data, waiting up to `timeout` s for its first frames, and what to tell
    the user: a start says "healthy" once the process publishes, before it has reached its source (offline, live
    Coinbase cannot be reached)."""
    deadline = time.monotonic() + timeout
    while True:
        if data_flows(settings, name=name):
            return True, "receiving market data"
        ended = ended_ingest(settings, name=name)
        if ended is not None:
            return False, f"the ingest {ended.note}"
        trouble = connection_trouble(settings, name=name)
        if trouble is not None or time.monotonic() >= deadline:
            said = trouble.describe() if trouble else f"no market data after {timeout:g} s (`rtca logs {name}`)"
            return False, f"not receiving yet: {said}"
        time.sleep(0.25)


def ended_ingest(settings: Settings, *, name: str = NAME) -> ServiceState | None:
    """The ingest that ended by itself since it was last started, not stopped by rtca: finished (its report is the
    last line) or exited (a crash, a kill): `rtca status` shows it, so it does not look as if never started."""
    supervisor = Supervisor(settings)
    run = supervisor.last_run_log(name)
    if run is None or supervisor.process(name) is not None or f" {STOPPED} {name}" in run:
        return None
    lines = [line for line in run.splitlines()[1:] if line.strip()]
    try:
        ended = orjson.loads(lines[-1]).get("ended") if lines else None
    except (orjson.JSONDecodeError, AttributeError):
        ended = None
    if ended == "stopped":  # a signal asked it to (`kill`, an older rtca's stop): not an end of its own
        return None
    errors = [line for line in lines if line.startswith("error: ")]  # the CLI's; a hint line follows it
    last = (errors or lines or ["without a word"])[-1]
    why = f"finished ({ended})" if ended else f"exited: {last[:300]}"
    return ServiceState(name, None, False, ingest_service(settings, name=name).url, None,
                        note=f"{why}; `rtca logs {name}`", ended=True)

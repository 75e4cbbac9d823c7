"""What the runbooks (papermill notebooks under `runbooks/`) call: one function per step, and its check.

Each check raises `RunbookCheckFailed` with what was expected and what was found, so a failed papermill run
names its cause in the executed notebook. Every step is idempotent: a second run changes nothing.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rtca.errors import ConfigError, RtcaError
from rtca.settings import Settings, load_settings, name_list, setting_exists


class RunbookCheckFailed(RtcaError):
    pass


class RunbookFailed(RtcaError):
    """A runbook stopped at a cell: its error in one line; the executed copy has the cell, its output and the
    traceback."""


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def flag(name: str, value: Any) -> bool:
    """A yes/no runbook parameter as a bool. papermill's `-p NAME False` passes a bool, but `-p NAME false`, `-r`
    and many schedulers pass a string, and any non-empty string is true: refused unless it clearly says which."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
        return value.strip().lower() in _TRUE
    raise RunbookCheckFailed(f"runbook parameter {name}: {value!r} is neither true nor false",
                             hint=f"papermill: -p {name} True, -p {name} False (or -y '{name}: false')")


def env_parameter(env: Any) -> dict[str, str]:
    """The `env` parameter as a mapping: a dict (papermill -y / -f), or a string (papermill -p passes one) holding
    a JSON or YAML mapping, or KEY=VALUE pairs separated by commas; anything else is refused, naming the form."""
    if env is None or env == "":
        return {}
    if isinstance(env, str):
        import yaml

        try:
            # every scalar as written (they become environment variables): safe_load would make 0123 into 83, on
            # into True, null into None (then 'None')
            parsed: Any = yaml.load(env, Loader=yaml.BaseLoader)
        except yaml.YAMLError:
            parsed = None
        if not isinstance(parsed, Mapping):
            # a comma starts a new pair only before NAME=: a value may hold commas (pulsar://b1:6650,b2:6650)
            pairs = [item.strip() for item in re.split(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*=)", env) if item.strip()]
            if not pairs or not all("=" in pair for pair in pairs):
                raise RunbookCheckFailed(f"runbook parameter env: {env!r} is not a mapping of RTCA_* variables",
                                         hint="-y 'env: {RTCA_PINOT__BROKER_PORT: 18099}', or -p env "
                                              "'{\"RTCA_PINOT__BROKER_PORT\": \"18099\"}', or -p env "
                                              "RTCA_PINOT__BROKER_PORT=18099,RTCA_TOPICS__RAW=my-feed")
            parsed = dict(pair.split("=", 1) for pair in pairs)
        env = parsed
    if not isinstance(env, Mapping):
        raise RunbookCheckFailed(f"runbook parameter env: a {type(env).__name__}, not a mapping of RTCA_* variables",
                                 hint="-y 'env: {RTCA_PINOT__BROKER_PORT: 18099}'")
    return {str(key).strip(): str(value) for key, value in env.items()}


def unknown_parameters(history: Sequence[str]) -> tuple[list[str], list[str]]:
    """(parameters papermill passed that the runbook does not declare, those it declares), read off the kernel's
    input history: papermill runs its injected cell ("# Parameters" first) right after the parameters cell, and
    only warns about a name that cell lacks, so a typo (`-p sourse simulator`) silently ran the defaults."""
    for index in range(len(history) - 1, 0, -1):
        if history[index].lstrip().startswith("# Parameters"):
            injected, declared = _assigned(history[index]), _assigned(history[index - 1])
            return sorted(injected - declared), sorted(declared)
    return [], []


def _assigned(source: str) -> set[str]:
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {target.id for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}  # fmt: skip


def _short_error(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
    """How a runbook cell shows an `RtcaError`: its message and hint, which say what to do, without the traceback
    (papermill prints the cell's traceback whole, and 60 lines buried the one that mattered)."""
    short = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, short)  # the kernel's error reply, which papermill reports
    return short


def _did_you_mean(names: Sequence[str], known: Sequence[str]) -> str:
    """" (did you mean x?)" for the known names closest to misspelled `names`, else ""."""
    import difflib

    close = [m for name in names for m in difflib.get_close_matches(name, sorted(known), n=1)]
    return f" (did you mean {', '.join(close)}?)" if close else ""


def check_parameters(kind: str = "runbook", error: type[RtcaError] = RunbookCheckFailed) -> None:
    """Refuse parameters the `kind` of notebook (a runbook, an exploratory notebook) does not take (run in the
    kernel papermill executes; elsewhere a no-op); and have the kernel show the workbench's own errors as their
    message only."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebook tools
        return
    shell = get_ipython()
    if shell is not None:
        shell.set_custom_exc((RtcaError,), _short_error)
    history = shell.user_ns.get("In") if shell is not None else None
    if not history:
        return
    unknown, declared = unknown_parameters(history)
    if unknown:
        said = f"unknown {kind} parameter(s): {', '.join(unknown)}{_did_you_mean(unknown, declared)}"
        raise error(said, hint=f"this {kind} takes: {', '.join(declared)}")


def settings(backend: str | None = None, env: Mapping[str, str] | str | None = None) -> Settings:
    """Settings for a runbook (each one's first call, which also refuses parameters it does not take): `backend`
    None takes RTCA_BACKEND (else local), as every rtca command does: a job set up for an external cluster must not
    have its teardown stop a local stack; `env` holds extra RTCA_* overrides (ports, hosts, topic names) as
    parameters: a mapping, or the string papermill's `-p env ...` passes (`env_parameter`)."""
    check_parameters()
    env = env_parameter(env)
    for key, value in env.items():
        if not key.startswith(("RTCA_", "SUPERSET_")):
            raise RunbookCheckFailed(f"runbook parameter env: '{key}' is not an RTCA_* or SUPERSET_* variable")
        if key.startswith("RTCA_") and not setting_exists(key):
            raise RunbookCheckFailed(f"runbook parameter env: '{key}' names no setting",
                                     hint="`rtca config` shows them: RTCA_<SECTION>__<FIELD>, e.g. "
                                          "RTCA_PINOT__BROKER_PORT (two underscores between the names)")
    for key in [key for key in _ENV_BEFORE if key not in env]:  # a cell run again with fewer overrides
        _restore(key, _ENV_BEFORE.pop(key))
    before = {key: os.environ.get(key) for key in env}
    for key, value in before.items():
        _ENV_BEFORE.setdefault(key, value)
    os.environ.update({key: str(value) for key, value in env.items()})
    try:
        return load_settings(**({"backend": backend} if backend else {}))
    except RtcaError:  # a value of the wrong type or range: named by load_settings; the environment as it was
        for key, value in before.items():
            _restore(key, value)
        raise


_ENV_BEFORE: dict[str, str | None] = {}
"""Each variable a runbook's `env` set in this process, with its value before (None: unset). The overrides stay
for the later cells and the processes they start; a kernel that runs `settings` again without one gets it back."""


def _restore(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def require(settings: Settings, *services: str) -> None:
    """The services a runbook talks to answer (names of `rtca.stack.remote.endpoints`: pulsar-admin,
    pulsar-broker, pinot-controller, pinot-broker, superset); else one error naming each URL that did not and what
    to do. Without it a refused or silent address failed deep in a client, with 200 lines of traceback and neither
    the URL nor the setting to fix."""
    from rtca.stack.remote import endpoints, require_healthy

    unknown = sorted(set(services) - {endpoint.name for endpoint in endpoints(settings)})
    if unknown:
        raise ValueError(f"no such service: {', '.join(unknown)}")
    require_healthy(settings, services, hint=None if settings.backend == "external" else (
        "`rtca status` shows the stack, `rtca up` (or runbooks/00-stack-up) starts what is down; "
        "`rtca config` shows the addresses used"))  # fmt: skip


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 2.0,
               done: Callable[[Any], bool] = bool, note_every: float = 10.0,
               give_up: Callable[[], str | None] | None = None) -> Any:  # fmt: skip
    """Poll `check` until `done(value)`; fail with `what` and the last value after `timeout` seconds, or at once
    with the reason `give_up()` returns (what is waited for can no longer happen). A check that raises an
    `RtcaError` (a service not ready yet) or an HTTP transport error (a service restarting: refused, timed out) is
    tried again, and its error is the last value; a `ConfigError` fails at once. A line every `note_every` seconds says what it waits for (a
    runbook's cell would otherwise sit silent)."""
    import httpx

    started = time.monotonic()
    last: Any = None
    while True:
        reason = give_up() if give_up is not None else None
        if reason:
            raise RunbookCheckFailed(f"{what}: {reason}")
        try:
            last = check()
        except ConfigError:
            raise  # a wrong name or setting: no wait makes it right
        except (RtcaError, httpx.TransportError) as exc:
            last = exc
        else:
            if done(last):
                return last
        waited = time.monotonic() - started
        if waited >= timeout:
            raise RunbookCheckFailed(f"{what}: not true after {timeout:.0f} s (last: {_describe(last)})")
        if int(waited / note_every) < int((waited + interval) / note_every):
            print(f"  waiting until {what} ({waited + interval:.0f} s; last: {_describe(last)})", flush=True)
        time.sleep(interval)


def _describe(value: Any) -> str:
    if isinstance(value, Exception):
        return f"{type(value).__name__}: {str(value).splitlines()[0][:300] if str(value) else ''}"
    return repr(value)


def check_stack(settings: Settings) -> list[Any]:
    from rtca import stack

    states = stack.status(settings)
    down = [s.name for s in states if not s.healthy]
    if down:
        raise RunbookCheckFailed(f"services not healthy: {', '.join(down)}",
                                 hint="rerun runbooks/00-stack-up, or see `rtca logs SERVICE`")
    return states


def check_stopped(settings: Settings) -> None:
    """Nothing of ours left running after `rtca down`: no process rtca started (the ingest, on every backend), and
    on docker no container answering (containers have no pid here). External clusters are not ours to stop."""
    from rtca import stack
    from rtca.feed.service import NAME, ingest_state

    left = [s.name for s in stack.status(settings) if s.pid or (settings.backend == "docker" and s.healthy)]
    if ingest_state(settings) is not None and NAME not in left:
        left.append(NAME)
    if left:
        raise RunbookCheckFailed(f"still running: {', '.join(left)}", hint="`rtca status` shows them; `rtca down`")


def check_functions(settings: Settings, names: str | Sequence[str] | None = None, *, timeout: float = 120
                    ) -> list[Any]:  # fmt: skip
    """Every function deployed (`names`, or all) has all its instances running; else which do not, and why."""
    from rtca.functions.deploy import function_status

    wanted = name_list(names)
    answers: list[list[Any]] = []

    def all_running() -> bool:
        answers.append(function_status(settings, wanted))
        return bool(answers[-1]) and not _not_running(answers[-1])

    try:
        wait_until(all_running, timeout=timeout, what="every function's instances are running")
        return answers[-1]
    except RunbookCheckFailed:
        if not answers:  # Pulsar never answered: the failure names its last error
            raise
        down = _not_running(answers[-1])
    problems = "; ".join(f"{s.name}: {s.running}/{len(s.instances)} instances running"
                         + (f", latest exception: {s.latest_exceptions[0][:200]}" if s.latest_exceptions else "")
                         for s in down)  # fmt: skip
    raise RunbookCheckFailed(f"functions not running after {timeout:.0f} s: {problems or 'none deployed'}",
                             hint="`rtca functions status` and `rtca logs pulsar` tell more; rerun this runbook")


def _not_running(statuses: Sequence[Any]) -> list[Any]:
    return [s for s in statuses if not (s.instances and s.running == len(s.instances))]


def check_tables(settings: Settings, names: str | Sequence[str] | None = None) -> list[Any]:
    """Every table exists and answers a COUNT(*) through the broker; a controller or broker restarting meanwhile
    (refused, timed out, not ready) is waited for, a table that does not exist fails at once."""
    from rtca.pinot.client import PinotClient

    from rtca.pinot.tables import selected_keys

    wanted = [getattr(settings.tables, key) for key in selected_keys(settings, names)]  # table names or keys
    counts = []
    with PinotClient(settings) as pinot:
        for table in wanted:
            config = wait_until(lambda t=table: pinot.table(t), timeout=60, done=lambda _: True,
                                what=f"Pinot's controller answers for {table}")
            if config is None:
                raise RunbookCheckFailed(f"Pinot table {table} does not exist", hint="run runbooks/20-pinot-tables")
            counts.append((table, wait_until(lambda t=table: pinot.count(t), timeout=60, done=lambda _: True,
                                             what=f"{table} answers queries")))
    return counts


def ingest_args(*, source: str, speed: Any = "1", loop: Any = True, shift_time: Any = True,
                products: str | Sequence[str] | None = None, channels: str | Sequence[str] | None = None,
                rate: Any = 100.0) -> list[str]:
    """The 40-ingest runbook's parameters as `rtca ingest run` flags (lists or comma-separated strings for products
    and channels; yes/no parameters checked by `flag`): only those of the chosen source (the replay's speed, loop
    and shift_time, the simulator's rate), which the ingest refuses for any other."""
    loop, shift_time = flag("loop", loop), flag("shift_time", shift_time)  # checked whatever the source
    args = ["--source", str(source)]
    if source == "replay":
        args += ["--speed", str(speed)] + ["--loop"] * loop + ["--shift-time"] * shift_time
    elif source == "simulator":
        args += ["--rate", str(rate)]
    for option, value in (("--products", products), ("--channels", channels)):
        names = name_list(value)
        if names:
            args += [option, ",".join(names)]
    return args


#: The table each channel reaches first, with a `received_ms` column (the ingest check counts this run's rows).
_CHANNEL_TABLES = (("ticker", "ticker"), ("matches", "matches"), ("level2", "book"))


def check_ingest(settings: Settings, channels: str | Sequence[str] | None, *, received_since_ms: int,
                 timeout: float = 180, name: str = "ingest") -> tuple[str, int]:
    """Data of this ingest (service `name`) reaches Pinot: the table of the first ingested channel that has one
    (the ticker table for the sources' default channels); fails at once if the ingest ends meanwhile. Rows count
    only once the ingest has received market data and while it receives: another ingest feeding the same tables
    passed the check of one that could not reach its source, or whose subscription was refused."""
    from rtca.feed.protocol import DATA_CHANNEL
    from rtca.feed.service import connection_trouble, data_flows

    wanted = name_list(channels)
    data = None if wanted is None else {DATA_CHANNEL.get(name, name) for name in wanted}  # ticker_batch: ticker
    for channel, key in _CHANNEL_TABLES:
        if data is None or channel in data:
            table = getattr(settings.tables, key)
            return table, check_rows(settings, table, at_least=1, timeout=timeout,
                                     received_since_ms=received_since_ms, give_up=lambda: _ingest_ended(settings, name),
                                     counts=lambda: data_flows(settings, name=name)
                                     and connection_trouble(settings, name=name) is None)
    raise RunbookCheckFailed(f"channels {', '.join(wanted)}: none of them reaches a Pinot table this runbook can "
                             f"check (it checks {', '.join(c for c, _ in _CHANNEL_TABLES)})",
                             hint="include ticker, matches or level2 in `channels`")


#: Failed attempts in a row after which an ingest that has brought no row yet is taken as unable to reach its
#: source: the back-off between them (0.5 s doubling to 30 s, jittered down to half) adds up to 30-60 s, so a short
#: network blip is waited out (a blocked port adds the connection timeout to each attempt).
GIVE_UP_ATTEMPTS = 8


def _ingest_ended(settings: Settings, name: str) -> str | None:
    """Why no rows will come from the ingest (it ended: a refused subscription, a crash; or it cannot reach its
    source, the rows waited for not there yet), else None."""
    from rtca.feed.service import connection_trouble, ended_ingest

    state = ended_ingest(settings, name=name)
    if state is not None:
        return f"the ingest {state.note}"
    trouble = connection_trouble(settings, name=name)
    if trouble is not None and trouble.attempts >= GIVE_UP_ATTEMPTS:
        return (f"the ingest cannot reach its source: {trouble.describe()}; offline, or behind a proxy? "
                f"`-p source replay` or `-p source simulator` run without the internet")
    return None


def check_rows(settings: Settings, table: str, *, at_least: int = 1, timeout: float = 120,
               received_since_ms: int | None = None, give_up: Callable[[], str | None] | None = None,
               counts: Callable[[], bool] | None = None) -> int:
    """Data flows: `table` holds at least `at_least` rows within `timeout` seconds; with `received_since_ms`, rows
    the ingest received from then on (rows of an earlier run prove nothing about this one); with `counts`, rows
    count only while it says so."""
    from rtca.pinot.client import PinotClient

    where, what = "", f"{table} has at least {at_least} rows"
    if received_since_ms is not None:
        where = f"WHERE received_ms >= {int(received_since_ms)}"
        since = time.strftime("%H:%M:%S", time.localtime(received_since_ms / 1000))
        what += f" received since {since}"
    with PinotClient(settings) as pinot:
        found = wait_until(lambda: pinot.count(table, where) if counts is None or counts() else 0,
                           done=lambda rows: rows >= at_least, timeout=timeout, what=what, give_up=give_up)
    return int(found)


#: The runbooks `make up` runs, in order (90-teardown is run on its own).
UP_RUNBOOKS = ("00-stack-up", "10-deploy-functions", "20-pinot-tables", "30-superset-dashboards", "40-ingest")


def run_runbooks(settings: Settings, names: Sequence[str] = UP_RUNBOOKS,
                 parameters: Mapping[str, Any] | None = None) -> list[Any]:
    """Execute runbooks with papermill, keeping the executed copies under `<run>/runbooks/` for users to open.

    Each of `parameters` goes to the runbooks that take it (`source` to 40-ingest only, `env` to all); one that
    none of them takes is refused before any runs. A failing runbook stops the sequence with `RunbookFailed`,
    naming the cell and its error; the executed copy shows the rest.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from rtca.settings import PROJECT_ROOT
    from rtca.stack.progress import step

    folder = PROJECT_ROOT / "runbooks"
    # every name checked before any runbook runs: a typo in the last must not leave the first ones done
    sources = [folder / f"{name.removesuffix('.ipynb')}.ipynb" for name in names]
    missing = [name for name, source in zip(names, sources) if not source.exists()]
    if missing:
        known = ", ".join(sorted(p.stem for p in folder.glob("*.ipynb")))
        raise RunbookCheckFailed(f"no runbook named {', '.join(missing)} in {folder}", hint=f"runbooks: {known}")
    declared = {source: set(papermill.inspect_notebook(str(source))) for source in sources}
    everywhere = set().union(*declared.values())
    taken_by_none = [key for key in parameters or {} if key not in everywhere]
    if taken_by_none:
        raise RunbookCheckFailed(f"no runbook of {', '.join(s.stem for s in sources)} takes parameter(s) "
                                 f"{', '.join(taken_by_none)}{_did_you_mean(taken_by_none, sorted(everywhere))}",
                                 hint=f"they take: {', '.join(sorted(everywhere))}")  # fmt: skip
    out_dir = settings.run_dir / "runbooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = []
    for name, source in zip(names, sources):
        name = source.stem
        target = out_dir / source.name
        params = {"backend": settings.backend,
                  **{key: value for key, value in (parameters or {}).items() if key in declared[source]}}
        with step(f"runbook {name} (executed copy: {target})"):
            # Cell output streams to the terminal as it comes, so long waits inside a runbook show progress.
            try:
                papermill.execute_notebook(str(source), str(target), parameters=params, cwd=str(PROJECT_ROOT),
                                           progress_bar=False, kernel_name="python3",
                                           stdout_file=sys.stdout, stderr_file=sys.stderr,
                                           # The kernel's chatter (transport warning, shutdown interrupt) is noise.
                                           extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
            except PapermillExecutionError as exc:
                raise RunbookFailed(f"runbook {name} stopped at cell [{exc.exec_count}]: {exc.ename}: {exc.evalue}",
                                    hint=f"the executed copy shows the cell, its output and traceback: {target}"
                                    ) from None  # fmt: skip
        executed.append(target)
    return executed

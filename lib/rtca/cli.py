"""`rtca`: parse, build settings, call one library function, map RtcaError to exit code 1."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from rtca import stack
from rtca.errors import ConfigError, RtcaError
from rtca.settings import Settings, load_settings
from rtca.stack.process import ServiceState, Supervisor

if TYPE_CHECKING:
    from rtca.feed.ingest import IngestReport

Handler = Callable[[Settings, argparse.Namespace], int]


def _print_states(states: list[ServiceState]) -> None:
    print(f"{'service':<18}{'health':<10}{'pid':>8}{'rss MB':>9}  url")
    for st in states:
        rss = f"{st.rss_bytes / 1024**2:.0f}" if st.rss_bytes else "-"
        health = "healthy" if st.healthy else "not ready" if st.pid else "ended" if st.ended else "DOWN"
        print(f"{st.name:<18}{health:<10}{st.pid or '-':>8}{rss:>9}  {st.url}" + (f"  ({st.note})" if st.note else ""))
    total = sum(st.rss_bytes or 0 for st in states)
    print(f"{'total':<18}{'':<10}{'':>8}{total / 1024**2:>9.0f}")


def _terminate_like_ctrl_c() -> None:
    """`kill PID` (SIGTERM) and a closed terminal (SIGHUP) clean up as Ctrl-C does, instead of leaving half of what
    the command started running."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # `nohup rtca ...` ignores SIGHUP, and keeps ignoring it
            signal.signal(sig, interrupt)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    _terminate_like_ctrl_c()
    _print_states(stack.up(settings))
    _print_where(settings)
    return 0


def _print_where(settings: Settings) -> None:
    """How to log in to Superset, and where the logs are: the last lines of `rtca up` and of `make up`."""
    where = (f"password in {settings.secrets_dir / 'superset.json'}" if settings.backend == "local"
             else "password as configured")
    print(f"\nSuperset: {settings.superset.url} (user {settings.superset.admin_user}, {where})")
    if settings.backend == "local":
        print(f"logs: {settings.logs_dir}")


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    stopped = stack.down(settings, wipe=args.wipe)
    wiped = args.wipe and settings.backend != "external"  # external: --wipe deletes nothing (the backend says so)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}" + ("; data wiped" if wiped else ""))
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.feed.service import ended_ingest, ingest_state

    states = stack.status(settings)
    running = ingest_state(settings)  # a running ingest counts (one that cannot reach its source is not healthy);
    ingest = running or ended_ingest(settings)  # one that ended is shown, not counted: a replay may just be over
    _print_states(states + ([ingest] if ingest else []))
    return 0 if all(st.healthy for st in states + ([running] if running else [])) else 3


def cmd_logs(settings: Settings, args: argparse.Namespace) -> int:
    if settings.backend == "docker":
        from rtca.stack.docker import logs

        print(logs(settings, args.service, lines=args.lines))
        return 0
    log = Supervisor(settings).log_file(args.service)
    if not log.exists():
        raise RtcaError(f"no log for '{args.service}' at {log}", hint=_logs_present(settings))
    print("\n".join(_last_lines(log, args.lines)))
    return 0


def _logs_present(settings: Settings) -> str:
    """The services' logs by name; the many per-run logs (`ingest-<id>`, ...) only counted, newest first: listed
    whole they were 240 names."""
    from rtca.feed.service import NAME as INGEST
    from rtca.stack.local import services as local_services

    names = {p.stem: p for p in settings.logs_dir.glob("*.log")}
    services = [n for n in [*(s.name for s in local_services(settings)), INGEST] if n in names]
    runs = sorted((n for n in names if n not in services), key=lambda n: names[n].stat().st_mtime, reverse=True)
    shown = services + runs[:5]
    more = f" and {len(runs) - 5} more (ls {settings.logs_dir})" if len(runs) > 5 else ""
    return f"logs present: {', '.join(shown)}{more}" if shown else "no logs yet"


def _last_lines(path: Path, count: int, block: int = 64 * 1024) -> list[str]:
    """The last `count` lines, read from the end in blocks (Pulsar's log grows to hundreds of MB)."""
    if count <= 0:
        return []
    blocks: list[bytes] = []
    with path.open("rb") as f:
        start = f.seek(0, 2)
        newlines = 0
        while start > 0 and newlines <= count:
            size = min(block, start)
            start -= size
            f.seek(start)
            blocks.append(f.read(size))
            newlines += blocks[-1].count(b"\n")
    return b"".join(reversed(blocks)).decode(errors="replace").splitlines()[-count:]


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    print(json.dumps(settings.describe(), indent=2, default=str))
    return 0


def _above_zero(value: str, what: str) -> float:
    """A finite number above 0, else the parser's error naming `what` (0, negative or nan would do nothing)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of {what}") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r}: a number of {what} above 0")
    return number


def _rate(value: str) -> float | str:
    """`--rate`: frames per second, or `max` (as fast as the client reads; None is "not given")."""
    return "max" if value == "max" else _above_zero(value, "frames per second (or 'max')")


def _seconds(value: str) -> float:
    """`--duration`: seconds."""
    return _above_zero(value, "seconds")


def _speed(value: str) -> str:
    """`--speed`: checked here (`rtca ingest start` would only see its service exit), passed on as given."""
    from rtca.feed.replay import parse_speed

    try:
        parse_speed(value)
    except RtcaError as exc:  # one line, the hint included: it says what a speed is
        raise argparse.ArgumentTypeError(f"{exc.args[0]}: {exc.hint}" if exc.hint else exc.args[0]) from None
    return value


def _names(value: str) -> str:
    """`--products`, `--channels`: comma-separated names, passed on as given; an empty list is refused (`''` or
    `,` silently meant the source's defaults)."""
    if not [name for name in value.split(",") if name.strip()]:
        raise argparse.ArgumentTypeError(f"{value!r} names nothing: omit it for the source's defaults, or name some "
                                         f"(comma-separated)")
    return value


def _not_empty(value: str) -> str:
    """A path or URL: an empty one is refused (`--capture ''` meant the shipped capture, `--url ''` live Coinbase)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is empty: omit it for the default, or give one")
    return value


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r}: a port is 0 (any free one) to 65535")
    return port


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: at least 1")
    return number


INGEST_FLAGS: dict[str, dict[str, Any]] = {
    "--source": {"choices": ["coinbase", "replay", "simulator"], "default": "coinbase",
                 "help": "live Coinbase, a replay of a capture, or the seeded simulator"},
    "--url": {"type": _not_empty,
              "help": "connect to this websocket server instead (e.g. `rtca replay serve`, `rtca simulator serve`)"},
    "--capture": {"type": _not_empty, "help": "replay: capture file (default: the shipped 2021-04-17 recording)"},
    "--speed": {"type": _speed, "help": "replay: pace, 1 (default), N (times faster) or max"},
    "--loop": {"action": "store_true", "help": "replay: forever, times and ids shifted to keep increasing"},
    "--shift-time": {"action": "store_true", "help": "replay: shift replayed times to now"},
    "--products": {"type": _names, "help": "comma-separated product ids (default: the source's; with --url, "
                                            "Coinbase's live list: give a replay server's own products)"},
    "--channels": {"type": _names, "help": "comma-separated channels (default: the source's; with --url, "
                                            "Coinbase's live ones)"},
    "--rate": {"type": _rate, "help": "simulator: frames per second (default 100), or max"},
    "--seed": {"type": int, "help": "simulator: seed (default 0)"},
    "--duration": {"type": _seconds, "help": "stop after this many seconds"},
    "--max-messages": {"type": _positive, "help": "stop after this many frames"},
}


def _split(value: str | None) -> list[str] | None:
    return [item.strip() for item in value.split(",") if item.strip()] if value else None


def cmd_ingest_run(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.feed.ingest import run_ingest
    from rtca.feed.service import LOG_FORMAT

    if not logging.getLogger().handlers:  # a process of its own (not a caller's, e.g. a test session, that logs)
        # the supervised ingest's stderr is its log file: rtca's own INFO lines (what it ingests, each book resync)
        # go there too, the libraries' only from WARNING on
        logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
        logging.getLogger("rtca").setLevel(logging.INFO)
    report = run_ingest(settings, source=args.source, url=args.url, capture=args.capture, speed=args.speed,
                        loop=args.loop, shift_time=args.shift_time, products=_split(args.products),
                        channels=_split(args.channels), rate=args.rate,
                        seed=args.seed, duration=args.duration, max_messages=args.max_messages,
                        announce=lambda line: print(line, flush=True))
    print(json.dumps(dataclasses.asdict(report), default=str))
    return ingest_exit_code(report)


def ingest_exit_code(report: IngestReport) -> int:
    """0 if every record reached Pulsar, else 1; an RtcaError if the source never sent a frame (an offline ingest
    printed its report and exited 0, as if it had worked)."""
    from rtca.feed.ingest import OFFLINE_HINT

    if report.received == 0:
        raise RtcaError(f"nothing received from {report.url} ({report.attempts} connection attempts)",
                        hint=OFFLINE_HINT if report.source in ("coinbase", "url") else "the warnings above say why")
    return 0 if report.ok else 1


def _ingest_run_args(args: argparse.Namespace) -> list[str]:
    """The `ingest start` flags as `ingest run` arguments for the supervised process: those given only."""
    out: list[str] = []
    for flag, spec in INGEST_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if spec.get("action") == "store_true":
            out += [flag] if value else []
        elif value is not None and value != spec.get("default"):
            out += [flag, str(value)]
    return out


def cmd_ingest_start(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.feed.service import describe_start, receiving, start_ingest

    state, done = start_ingest(settings, _ingest_run_args(args))
    print(describe_start(settings, state, done), flush=True)
    if done == "finished":
        return 0
    flowing, said = receiving(settings)
    print(said)
    return 0 if flowing else 3  # as `rtca status` for an ingest that is not healthy


def cmd_replay_serve(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.feed.replay import serve_replay

    stats = serve_replay(capture=args.capture, host=args.host, port=args.port, speed=args.speed, loop=args.loop,
                         shift_time=args.shift_time)
    print(f"served {stats.frames_sent} frames to {stats.connections} connections")
    return 0


def cmd_simulator_serve(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.feed.simulator import serve_simulator

    stats = serve_simulator(products=_split(args.products), rate=None if args.rate == "max" else args.rate,
                            seed=args.seed, host=args.host, port=args.port)
    print(f"served {stats.frames_sent} frames to {stats.connections} connections")
    return 0


def cmd_record(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.feed.recorder import record

    if not args.output.strip():  # `Path("")` is the current directory: "error:  exists"
        raise ConfigError("no output file named (an empty name)", hint="e.g. `rtca record my.capture --duration 60`")
    if Path(args.output).is_dir():  # with --force, "Is a directory" once the connection is open
        raise ConfigError(f"{args.output} is a directory", hint="name the capture file to write, e.g. "
                                                                 f"{Path(args.output) / 'feed.capture'}")
    if Path(args.output).exists() and not args.force:
        raise RtcaError(f"{args.output} exists", hint="another file name, or --force to overwrite it")
    url = args.url or settings.feed.coinbase_url
    report = record(args.output, url=url, products=_split(args.products), channels=_split(args.channels),
                    duration=args.duration, max_messages=args.max_messages)
    print(report)
    if report.data == 0:
        if report.connections:  # written from the first connection on; only the server's answers are no capture
            Path(args.output).unlink(missing_ok=True)
        said = f"; the server answered: {'; '.join(report.errors)}" if report.errors else ""
        raise RtcaError(f"nothing recorded from {url} ({report.connections} connection(s)){said}; no file "
                        f"written", hint="check the URL, the products and channels, and the network: the "
                                          "connection's warnings are above")  # fmt: skip
    return 0


def cmd_ingest_stop(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.feed.service import stop_ingest

    print("ingest stopped" if stop_ingest(settings) else "ingest was not running")
    return 0


def cmd_functions_deploy(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.functions.deploy import deploy_functions

    for result in deploy_functions(settings, names=args.names or None):
        print(result)
    return 0


def cmd_functions_status(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.functions.deploy import function_status

    statuses = function_status(settings, names=args.names or None)
    for status in statuses:
        print(status)
    # like `rtca status`: 3 when one is not deployed or not all of its instances run (scripts can act on it)
    return 0 if all(s.deployed and s.instances and s.running == len(s.instances) for s in statuses) else 3


def cmd_functions_delete(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.functions.deploy import delete_functions

    deleted = delete_functions(settings, args.names or None)
    print(f"deleted: {', '.join(deleted) if deleted else 'nothing'}")
    return 0


def cmd_pinot_apply(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.pinot.tables import apply_tables, delete_tables

    if getattr(args, "recreate", False):
        if not args.names:
            raise ConfigError("--recreate drops the tables it names, and names none",
                              hint="e.g. `rtca pinot apply --recreate book_minute` (`rtca pinot status` lists them)")
        for name in delete_tables(settings, args.names):
            print(f"{name}: dropped (it reads its topic again from the start)")
    for result in apply_tables(settings, names=args.names or None):
        print(result)
    return 0


def cmd_pinot_status(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.pinot.tables import format_status, pinot_status

    rows = pinot_status(settings)
    print(format_status(rows))
    # like `rtca status`: 3 when a table is missing or could not be counted (scripts can act on it)
    return 0 if all(row.exists and not row.error for row in rows) else 3


def cmd_superset_apply(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.superset.bundle import apply_dashboards

    for result in apply_dashboards(settings):
        print(result)
    return 0


def cmd_superset_export(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.superset.bundle import export_dashboards

    if args.out_dir is not None and not args.out_dir.strip():  # an unset "$OUT": it would mean the tracked bundle
        raise ConfigError("an empty output directory", hint="omit it to write infra/superset, or name a directory")
    written = export_dashboards(settings, Path(args.out_dir) if args.out_dir is not None else None)
    print(f"wrote {len(written)} files")
    return 0


def cmd_deploy(settings: Settings, args: argparse.Namespace) -> int:
    """Functions, then tables, then dashboards: each step idempotent, so `rtca deploy` can always be rerun."""
    from rtca.stack import prepare

    prepare(settings)
    names = argparse.Namespace(names=None)
    for step in (cmd_functions_deploy, cmd_pinot_apply, cmd_superset_apply):
        step(settings, names)
    return 0


def cmd_runbooks(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.runbook import UP_RUNBOOKS, run_runbooks

    parameters = {name: _parameter_value(value) for name, value in args.parameters or []}
    for path in run_runbooks(settings, args.names or UP_RUNBOOKS, parameters):
        print(f"executed: {path}")
    if not args.names:  # everything `make up` does: say how to reach what it set up
        _print_where(settings)
    return 0


def _parameter_value(text: str) -> Any:
    """A `-p` value as papermill's own `-p` reads it: True, False, None, an int, a float, else the string."""
    constants = {"True": True, "False": False, "None": None}
    if text in constants:
        return constants[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from rtca.bench.suite import DEFAULT, run_suite, summary_lines

    _terminate_like_ctrl_c()  # the benchmarks' topics, tables and functions are deleted on the way out

    options: dict[str, dict[str, Any]] = {name: {"products": args.products} for name in PRODUCT_BENCHES
                                          if args.products}  # fmt: skip
    if args.candidates:  # checked here: `queries` runs last, a typo would fail it after the other benchmarks
        from rtca.bench.queries import CANDIDATES

        candidates = _split(args.candidates) or []
        unknown = [c for c in candidates if c not in CANDIDATES]
        if unknown or "queries" not in (args.names or DEFAULT):
            raise ConfigError(f"--candidates {args.candidates}: " + (f"unknown {', '.join(unknown)}" if unknown
                              else "only the queries benchmark times candidates, and it is not asked for"),
                              hint=f"candidates: {', '.join(CANDIDATES)}; e.g. `rtca bench queries --candidates "
                                   f"timesorted`")
        options.setdefault("queries", {})["candidates"] = candidates
    if args.rates or args.hold:
        if "capacity" not in (args.names or DEFAULT):
            raise ConfigError("--rates and --hold are the capacity benchmark's, and it is not asked for",
                              hint="e.g. `rtca bench capacity --rates 3000,5000 --hold 150`")
        capacity = options.setdefault("capacity", {})
        if args.hold:
            capacity["hold"] = float(args.hold)
        if args.rates:
            capacity["rates"] = [_held_rate(r) for r in _split(args.rates) or []]
    results, written = run_suite(settings, args.names or DEFAULT, quick=args.quick, keep=args.keep,
                                 out_dir=Path(args.out) if args.out else None, options=options or None)
    for line in summary_lines(results):
        print(line)
    if written:
        print(f"results: {written[-1]}")
    return 1 if any(r.error for r in results) else 0


def _held_rate(text: str) -> float:
    """One of `rtca bench capacity --rates`: msg/s."""
    try:
        rate = float(text)
    except ValueError:
        rate = 0.0
    if not rate > 0 or rate == float("inf"):
        raise ConfigError(f"--rates: {text!r} is not a rate in msg/s", hint="e.g. --rates 3000,5000")
    return rate


#: Benchmarks whose simulated market has a number of products (`--products`).
PRODUCT_BENCHES = ("freshness", "capacity", "queries")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtca", description="Real-time crypto analytics workbench")
    parser.add_argument("--backend", choices=["local", "docker", "external"], help="overrides RTCA_BACKEND")
    verbs = parser.add_subparsers(dest="verb", required=True)

    def verb(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    verb("up", cmd_up, "start the stack (idempotent: starts only what is missing; on external: checks that it answers)")
    verb("down", cmd_down, "stop the ingest and the stack rtca started (docker: removes its containers; external: "
                           "the ingest only)").add_argument(
        "--wipe", action="store_true", help="also delete the services' data (docker: their volumes; external: "
                                            "nothing)")  # fmt: skip
    verb("status", cmd_status, "health, URL, PID and memory of every service and the ingest (exit 3 when one is "
                               "not healthy)")  # fmt: skip
    logs = verb("logs", cmd_logs, "the end of one service's log")
    logs.add_argument("service")
    logs.add_argument("-n", "--lines", type=_positive, default=50, help="how many lines (default: 50)")
    verb("config", cmd_config, "print the effective configuration as JSON")
    runbooks = verb("runbooks", cmd_runbooks, "run the set-up runbooks with papermill (make up)")
    runbooks.add_argument("names", nargs="*", help="runbook names, e.g. 40-ingest (default: 00 to 40 in order)")
    runbooks.add_argument("-p", "--parameter", nargs=2, action="append", dest="parameters", metavar=("NAME", "VALUE"),
                          help="a runbook parameter, as papermill's -p, given to the runbooks that take it "
                               "(e.g. -p source simulator)")  # fmt: skip
    verb("deploy", cmd_deploy, "deploy functions, Pinot tables and Superset dashboards (idempotent)")
    bench = verb("bench", cmd_bench, "benchmarks against the running stack: a table of ratios to same-run "
                                     "references, JSON under <run dir>/bench (docs/performance.md)")
    bench.add_argument("names", nargs="*", help="kernel, functions, ingest, freshness, capacity, queries, startup "
                                                "(default: all but startup)")
    bench.add_argument("--quick", action="store_true", help="smaller runs and shorter holds (a few minutes)")
    bench.add_argument("--keep", action="store_true", help="leave the benchmarks' topics, tables and functions")
    bench.add_argument("--out", help="write the JSON results here instead of <run dir>/bench")
    bench.add_argument("--products", type=_positive, help="products simulated by " + ", ".join(PRODUCT_BENCHES)
                       + " (defaults: 20 for freshness, 50 for capacity, 30 for queries)")
    bench.add_argument("--candidates", help="queries: also time candidate table tunings in the same run, e.g. "
                                            "timesorted,rawmetrics,timesorted_raw (rtca.bench.queries.CANDIDATES)")
    bench.add_argument("--rates", help="capacity: hold these rates (msg/s, comma-separated) in order instead of "
                                       "searching fractions of the identity's rate, e.g. 3000,5000")
    bench.add_argument("--hold", type=_positive, help="capacity: seconds each rate is held (default 300; "
                                                      "--quick 30)")

    def group(name: str, help_text: str, actions: dict[str, tuple[Handler, str]]) -> dict[str, Any]:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        actions_parsers = sub.add_subparsers(dest="action", required=True)
        made = {}
        for action, (handler, action_help) in actions.items():
            made[action] = actions_parsers.add_parser(action, help=action_help, description=action_help)
            made[action].set_defaults(handler=handler)
        return made

    ingest = group("ingest", "the feed into Pulsar", {
        "run": (cmd_ingest_run, "ingest in the foreground until the source ends, then flush and exit"),
        "start": (cmd_ingest_start, "ingest as a supervised background service (no-op if running with the same "
                                "flags and RTCA_* settings; restarted if with others; exit 3 when no data arrives "
                                "within 15 s)"),
        "stop": (cmd_ingest_stop, "stop the background ingest"),
    })
    for action in ("run", "start"):
        for flag, spec in INGEST_FLAGS.items():
            ingest[action].add_argument(flag, **spec)
    serve_flags = {
        "--host": {"default": "127.0.0.1", "help": "address to listen on"},
        "--port": {"type": _port, "default": 0, "help": "port (default: a free one, printed at start)"},
    }
    replay = group("replay", "a local server speaking Coinbase's protocol that replays a capture", {
        "serve": (cmd_replay_serve, "serve a capture until it ends or Ctrl-C (ingest it with --url)"),
    })
    simulator = group("simulator", "a local server speaking Coinbase's protocol for a simulated market", {
        "serve": (cmd_simulator_serve, "serve a seeded simulated market until Ctrl-C (ingest it with --url)"),
    })
    # the servers take all of their source's options: their defaults are given here (ingest's are None: not given)
    served: dict[str, dict[str, Any]] = {"--speed": {"default": "1"}, "--rate": {"default": "100"},
                                         "--seed": {"default": 0},
                                         "--products": {"help": "comma-separated product ids (default: Coinbase's "
                                                                "live list)"}}  # fmt: skip
    for flag in ("--capture", "--speed", "--loop", "--shift-time"):
        replay["serve"].add_argument(flag, **{**INGEST_FLAGS[flag], **served.get(flag, {})})
    for flag in ("--products", "--rate", "--seed"):
        simulator["serve"].add_argument(flag, **{**INGEST_FLAGS[flag], **served.get(flag, {})})
    for action in (replay["serve"], simulator["serve"]):
        for flag, spec in serve_flags.items():
            action.add_argument(flag, **spec)
    record = verb("record", cmd_record, "record a websocket feed (default: live Coinbase) to a capture file")
    record.add_argument("output", help="capture file to write (the format of lib/rtca/feed/captures; replay it "
                                       "with `rtca replay serve --capture`)")
    record.add_argument("--url", type=_not_empty, default=None, help="websocket to record (default: Coinbase Exchange, "
                                                    "RTCA_FEED__COINBASE_URL)")
    for flag in ("--products", "--channels", "--duration"):
        record.add_argument(flag, **INGEST_FLAGS[flag])
    record.add_argument("--max-messages", **{**INGEST_FLAGS["--max-messages"],
                                             "help": "stop after this many frames of market data"})  # fmt: skip
    record.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    functions = group("functions", "Pulsar Functions", {
        "deploy": (cmd_functions_deploy, "create or update the functions (idempotent)"),
        "status": (cmd_functions_status, "instances, processed and failed counts, latest exceptions"),
        "delete": (cmd_functions_delete, "delete the functions"),
    })
    for action in functions.values():
        action.add_argument("names", nargs="*", help="only these functions (default: all)")
    pinot = group("pinot", "Pinot tables", {
        "apply": (cmd_pinot_apply, "create or update the schemas and tables under infra/pinot (idempotent)"),
        "status": (cmd_pinot_status, "row counts and consuming segments per table"),
    })
    pinot["apply"].add_argument("names", nargs="*", help="only these tables (default: all)")
    pinot["apply"].add_argument("--recreate", action="store_true",
                                help="drop the named tables first: they read their topics again from the start "
                                     "(a schema change Pinot refuses, a table that stopped taking rows)")
    superset = group("superset", "Superset dashboards", {
        "apply": (cmd_superset_apply, "import the dashboards under infra/superset (idempotent)"),
        "export": (cmd_superset_export, "regenerate the bundle files from the running Superset"),
    })
    superset["export"].add_argument("out_dir", nargs="?", default=None,
                                    help="where to write (default: infra/superset)")
    return parser


FILESYSTEM_HINTS: dict[int, str] = {
    errno.ENOSPC: "free disk space", errno.EDQUOT: "free disk space (the disk quota is used up)",
    errno.EFBIG: "the file system takes no file this large: write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "check the permissions of the path", errno.EPERM: "check the permissions of the path",
    errno.ENOTDIR: "part of the path is a file, not a directory: give a directory's path",
    errno.EISDIR: "the path is a directory: give a file's name",
    errno.ENOENT: "no such file or directory: check the path",
    errno.EEXIST: "a file is in the way of a directory: check the path",  # mkdir(parents=True) under a file
    errno.ENAMETOOLONG: "give a shorter path",
}
"""Errors of the machine's files (a full disk, a read-only or misnamed path): the user's to fix, so a line that
names the path, and a hint for that error, instead of a traceback."""
RUN_DIR_HINT = "; the run directory is RTCA_RUN_DIR, `rtca config` shows it"


def _filesystem_hint(exc: OSError, run_dir: Path | None) -> str:
    """The hint for `exc.errno`; the run directory named only when the path is in it (it is not the user's path
    to check for `rtca record /tmp`)."""
    hint = FILESYSTEM_HINTS[exc.errno]  # type: ignore[index]
    paths = [Path(os.fsdecode(name)) for name in (exc.filename, exc.filename2) if name not in (None, "")]
    if run_dir is not None and any(_within(path, run_dir) for path in paths):
        hint += RUN_DIR_HINT
    return hint


def _within(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


UNREACHABLE_HINT = "is the stack up? `rtca status` shows it, `rtca up` starts it; `rtca config` shows the URLs"
#: An https:// URL on a plain-http port: the TLS handshake stalls ("handshake operation timed out") or is answered in
#: plain text ("wrong version number"); the stack is up, the scheme is wrong.
TLS_MISMATCH_HINT = ("{url} may not speak TLS: check the scheme (http:// or https://) of the URL settings in use "
                     "(`rtca config`)")


def _unreachable_hint(exc: httpx.TransportError) -> str:
    text = str(exc)
    if _where(exc).startswith("https://") and ("handshake" in text or "WRONG_VERSION_NUMBER" in text):
        return TLS_MISMATCH_HINT.format(url=_where(exc))
    return UNREACHABLE_HINT


def _where(exc: httpx.TransportError) -> str:
    from rtca.stack.remote import origin

    try:
        url = exc.request.url
    except RuntimeError:  # raised without a request
        return "a service"
    return origin(url)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {"backend": args.backend} if args.backend else {}
    settings: Settings | None = None
    try:
        settings = load_settings(**overrides)
        return int(args.handler(settings, args))
    except RtcaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:  # a service that does not answer: the stack is down, or a URL is wrong
        print(f"error: cannot reach {_where(exc)}: {type(exc).__name__}: {exc}\n  hint: {_unreachable_hint(exc)}",
              file=sys.stderr)
        return 1
    except httpx.HTTPStatusError as exc:  # a refusal (a wrong token, say) where no caller said more about it
        answer = exc.response
        print(f"error: {exc.request.method} {exc.request.url} answered HTTP {answer.status_code}: "
              f"{answer.text[:300]}\n  hint: check the credentials and URLs in use (`rtca config`)", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `rtca pinot status | head -3`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except OSError as exc:
        if exc.errno not in FILESYSTEM_HINTS:
            raise  # anything else is a bug to report, with its traceback
        where = f": {exc.filename}" if exc.filename else ""
        hint = _filesystem_hint(exc, settings.run_dir if settings is not None else None)
        print(f"error: {exc.strerror}{where}\n  hint: {hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

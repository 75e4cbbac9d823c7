"""`rtca`: parse, build settings, call one library function, map RtcaError to exit code 1."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rtca import stack
from rtca.errors import RtcaError
from rtca.settings import Settings, load_settings
from rtca.stack.process import ServiceState, Supervisor

Handler = Callable[[Settings, argparse.Namespace], int]


def _print_states(states: list[ServiceState]) -> None:
    print(f"{'service':<18}{'health':<10}{'pid':>8}{'rss MB':>9}  url")
    for st in states:
        rss = f"{st.rss_bytes / 1024**2:.0f}" if st.rss_bytes else "-"
        print(f"{st.name:<18}{'healthy' if st.healthy else 'DOWN':<10}{st.pid or '-':>8}{rss:>9}  {st.url}")
    total = sum(st.rss_bytes or 0 for st in states)
    print(f"{'total':<18}{'':<10}{'':>8}{total / 1024**2:>9.0f}")


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    _print_states(stack.up(settings))
    print(f"\nSuperset: {settings.superset.url} (user {settings.superset.admin_user}, password in "
          f"{settings.secrets_dir / 'superset.json'})\nlogs: {settings.logs_dir}")
    return 0


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    stopped = stack.down(settings, wipe=args.wipe)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}"
          + ("; data wiped" if args.wipe else ""))
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    states = stack.status(settings)
    _print_states(states)
    return 0 if all(st.healthy for st in states) else 3


def cmd_logs(settings: Settings, args: argparse.Namespace) -> int:
    log = Supervisor(settings).log_file(args.service)
    if not log.exists():
        raise RtcaError(f"no log for '{args.service}' at {log}",
                        hint=f"logs present: {', '.join(p.stem for p in settings.logs_dir.glob('*.log')) or 'none'}")
    lines = log.read_text(errors="replace").splitlines()
    print("\n".join(lines[-args.lines:]))
    return 0


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    print(json.dumps(settings.describe(), indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtca", description="Real-time crypto analytics workbench")
    parser.add_argument("--backend", choices=["local", "docker", "external"], help="overrides RTCA_BACKEND")
    verbs = parser.add_subparsers(dest="verb", required=True)

    def verb(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    verb("up", cmd_up, "start the stack (idempotent: starts only what is missing)")
    verb("down", cmd_down, "stop the processes rtca started").add_argument(
        "--wipe", action="store_true", help="also delete the services' data")
    verb("status", cmd_status, "health, URL, PID and memory of every service")
    logs = verb("logs", cmd_logs, "the end of one service's log")
    logs.add_argument("service")
    logs.add_argument("-n", "--lines", type=int, default=50)
    verb("config", cmd_config, "print the effective configuration as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {"backend": args.backend} if args.backend else {}
    try:
        settings = load_settings(**overrides)
        return int(args.handler(settings, args))
    except RtcaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

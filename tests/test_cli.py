"""The CLI's argument handling: bad values are clear errors at the prompt, never tracebacks or a background process
that dies at once."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtca.cli import _ingest_run_args, build_parser, main


def test_rate_is_a_positive_number_or_max() -> None:
    parser = build_parser()
    assert parser.parse_args(["ingest", "run", "--rate", "250"]).rate == 250.0
    assert parser.parse_args(["ingest", "run", "--rate", "max"]).rate == "max"
    assert parser.parse_args(["ingest", "run"]).rate is None  # not given: the simulator's default, if it is one
    assert parser.parse_args(["simulator", "serve"]).rate == 100.0


@pytest.mark.parametrize("rate", ["abc", "0", "-5", "nan", "inf"])
def test_a_bad_rate_is_refused_before_anything_starts(rate: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["ingest", "start", "--rate", rate], ["simulator", "serve", "--rate", rate]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(argv)
        assert exit_info.value.code == 2
        assert "argument --rate" in capsys.readouterr().err


def test_ingest_start_passes_only_what_differs_from_the_defaults() -> None:
    parser = build_parser()
    assert _ingest_run_args(parser.parse_args(["ingest", "start"])) == []
    args = parser.parse_args(["ingest", "start", "--source", "replay", "--speed", "max", "--loop"])
    assert _ingest_run_args(args) == ["--source", "replay", "--speed", "max", "--loop"]
    assert _ingest_run_args(parser.parse_args(["ingest", "start", "--source", "simulator", "--rate", "250"])) == [
        "--source", "simulator", "--rate", "250.0"]
    # what start passes, run accepts
    run = parser.parse_args(["ingest", "run", *_ingest_run_args(args)])
    assert (run.source, run.speed, run.loop, run.rate) == ("replay", "max", True, None)


@pytest.mark.parametrize("action", ["run", "start"])
@pytest.mark.parametrize("flags, says", [
    (["--capture", "/nonexistent", "--duration", "5"], "--capture is for --source replay (did you mean --source "
                                                       "replay --capture /nonexistent?)"),
    (["--source", "simulator", "--capture", "X"], "--capture is for --source replay"),
    (["--source", "simulator", "--speed", "5"], "--speed is for --source replay"),
    (["--source", "simulator", "--loop"], "--loop is for --source replay"),
    (["--source", "coinbase", "--shift-time"], "--shift-time is for --source replay"),
    (["--source", "replay", "--rate", "5"], "--rate is for --source simulator"),
    (["--source", "replay", "--seed", "3"], "--seed is for --source simulator"),
    (["--speed", "1"], "--speed is for --source replay"),  # given, even as the default: the source was forgotten
    (["--source", "replay", "--url", "ws://127.0.0.1:9", "--speed", "5"], "not for the server at --url"),
])  # fmt: skip
def test_another_sources_flags_are_refused_not_ignored(action: str, flags: list[str], says: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`rtca ingest run --capture X` ingested live Coinbase, exit 0: --capture is a replay's; each source's flags
    were ignored by the others. Refused before Pulsar or the source is tried, and before a start stops anything."""
    from ports import open_and_refusing_ports

    from rtca.feed import sinks

    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    tried: list[str] = []
    monkeypatch.setattr(sinks, "broker_not_answering", lambda _, url, *__, **___: tried.append(url) or "refused")
    with open_and_refusing_ports() as (_, refusing):
        monkeypatch.setenv("RTCA_PULSAR__BROKER_PORT", str(refusing))
        assert main(["ingest", action, *flags]) == 1
    err = capsys.readouterr().err
    assert says in err and err.count("\n") <= 2 and "Traceback" not in err, err
    assert tried == [], "Pulsar was tried"


@pytest.mark.parametrize("lines", ["0", "-8", "x"])
def test_logs_wants_a_positive_number_of_lines(lines: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["logs", "pulsar", "-n", lines])


def test_a_missing_log_names_the_services_and_counts_the_per_run_logs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The hint listed every log of the run directory: 240 names, mostly `ingest-<id>`, with the services lost in it."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("pulsar", "superset", *(f"ingest-{i:08x}" for i in range(12))):
        (logs / f"{name}.log").write_text("x\n")
    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    assert main(["logs", "nosuch"]) == 1
    hint = capsys.readouterr().err.split("hint:", 1)[1]
    assert hint.split(":", 1)[1].strip().startswith("pulsar, superset, ingest-")
    assert hint.count("ingest-") == 5 and "and 7 more" in hint


def test_an_empty_export_directory_is_refused_not_taken_for_the_tracked_bundle(
        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`rtca superset export "$OUT"` with OUT unset used to overwrite infra/superset with Superset's version."""
    assert main(["superset", "export", ""]) == 1
    assert "an empty output directory" in capsys.readouterr().err


def test_feed_servers_and_recorder_have_commands() -> None:
    parser = build_parser()
    replay = parser.parse_args(["replay", "serve", "--speed", "max", "--port", "9999"])
    assert (replay.speed, replay.port, replay.host) == ("max", 9999, "127.0.0.1")
    simulator = parser.parse_args(["simulator", "serve", "--products", "BTC-USD", "--rate", "50"])
    assert (simulator.products, simulator.rate) == ("BTC-USD", 50.0)
    record = parser.parse_args(["record", "out.capture", "--max-messages", "10"])
    assert (record.output, record.max_messages) == ("out.capture", 10)
    assert record.url is None  # the setting's: RTCA_FEED__COINBASE_URL


def test_record_connects_where_the_settings_say(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from ports import open_and_refusing_ports

    with open_and_refusing_ports() as (_, refusing):
        monkeypatch.setenv("RTCA_FEED__COINBASE_URL", f"ws://127.0.0.1:{refusing}")
        assert main(["record", str(tmp_path / "out.capture"), "--duration", "1"]) == 1
    assert f"nothing recorded from ws://127.0.0.1:{refusing}" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "value", "field"), [
    ("RTCA_PULSAR__WEB_PORT", "abc", "pulsar.web_port"),
    ("RTCA_PULSAR__WEB_PORT", "70000", "pulsar.web_port"),
    ("RTCA_BACKEND", "foo", "backend"),
    ("RTCA_PINOT", "{bad", "\"pinot\""),
    ("RTCA_RUN_DIR", "", "run_dir (RTCA_RUN_DIR): Value error, an empty path"),
    ("RTCA_PINOT__HOST", "::1", "IPv6 literals are not supported"),  # http://::1:9000 failed deep in httpx
    ("RTCA_SUPERSET__HOST", "", "a host name or IPv4 address"),
])  # fmt: skip
def test_invalid_settings_are_named_without_a_traceback(name: str, value: str, field: str,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(name, value)
    assert main(["config"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: invalid settings") and field in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["nan", "0", "-1"])
def test_a_start_timeout_that_could_never_end_or_never_wait_is_refused(value: str, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RTCA_START_TIMEOUT", value)
    assert main(["config"]) == 1
    assert "start_timeout" in capsys.readouterr().err


def test_record_refuses_to_overwrite_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "kept.capture"
    existing.write_text("1.0: {}\n")
    assert main(["record", str(existing), "--max-messages", "1"]) == 1
    assert "exists" in capsys.readouterr().err and existing.read_text() == "1.0: {}\n"


def test_a_run_directory_that_cannot_be_made_is_one_line_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RTCA_RUN_DIR", "/dev/full/run")  # under a file: no directory can be made there
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Not a directory: /dev/full/run") and "RTCA_RUN_DIR" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["pinot", "status"], ["superset", "apply"]])
def test_a_service_that_does_not_answer_is_one_line_not_a_traceback(command: list[str], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    for name in ("RTCA_PINOT__CONTROLLER_PORT", "RTCA_PINOT__BROKER_PORT", "RTCA_SUPERSET__PORT"):
        monkeypatch.setenv(name, str(port))
    monkeypatch.setenv("RTCA_SUPERSET__ADMIN_PASSWORD", "unused")
    assert main(command) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach http://127.0.0.1:{port}: ConnectError") and "rtca up" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["pinot", "status"], ["functions", "status"], ["pinot", "apply", "ticker"]])
def test_an_address_that_answers_html_is_one_line_naming_it_not_a_traceback(command: list[str], tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A proxy's login page (or another service on the port) answered 200 with HTML: JSONDecodeError tracebacks."""
    from fake_http import answering, serving

    with serving(answering(200, "text/html", b"<html>please log in</html>")) as url:
        port = url.rsplit(":", 1)[1]
        monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
        for name in ("RTCA_PINOT__CONTROLLER_PORT", "RTCA_PINOT__BROKER_PORT", "RTCA_PULSAR__WEB_PORT"):
            monkeypatch.setenv(name, port)
        assert main(command) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "but not JSON (text/html)" in err and f"127.0.0.1:{port}" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["record", "x.capture", "--duration", "-1"], ["record", "x.capture", "--duration",
                                  "nan"], ["record", "x.capture", "--max-messages", "0"],
                                  ["simulator", "serve", "--port", "99999"], ["ingest", "start", "--speed", "abc"],
                                  ["replay", "serve", "--speed", "0"]])  # fmt: skip
def test_values_that_would_do_nothing_or_wrap_are_refused_by_the_parser(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2


@pytest.mark.parametrize("command", [["ingest", "run"], ["ingest", "start"], ["replay", "serve"]])
def test_a_bad_speed_says_what_a_speed_is(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The error's first line only reached the user: its hint, the one thing that says what to write, was lost."""
    with pytest.raises(SystemExit) as refused:
        main([*command, "--speed", "fast"])
    assert refused.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith("argument --speed: invalid speed 'fast': use a positive factor such as 1, 10 or 2.5, "
                         "or max"), last


@pytest.mark.parametrize("argv, flag", [
    (["ingest", "run", "--products", ""], "--products"),
    (["ingest", "start", "--products", ","], "--products"),
    (["ingest", "run", "--channels", " , "], "--channels"),
    (["ingest", "run", "--source", "replay", "--capture", ""], "--capture"),
    (["ingest", "run", "--url", ""], "--url"),
    (["record", "x.capture", "--url", ""], "--url"),
    (["simulator", "serve", "--products", ""], "--products"),
])  # fmt: skip
def test_an_empty_value_is_refused_not_taken_for_the_default(argv: list[str], flag: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`--products ''` ingested the default products, `--capture ''` the shipped capture, `--url ''` live Coinbase,
    exit 0, where the runbooks refuse an empty selection."""
    from ports import open_and_refusing_ports

    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # where `record x.capture` would write
    with open_and_refusing_ports() as (taken, refusing), pytest.raises(SystemExit) as refused:
        monkeypatch.setenv("RTCA_PULSAR__BROKER_PORT", str(refusing))  # a run that is not refused ends at once
        main([*argv, *(["--port", str(taken)] if argv[0] == "simulator" else ["--duration", "1"])])
    assert refused.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}:" in last and ("names nothing: omit it" in last or "is empty: omit it" in last), last


def test_functions_delete_of_an_empty_name_says_how_to_mean_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The hint was the runbooks' ("leave the parameter as None"), which means nothing at the prompt."""
    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    assert main(["functions", "delete", ""]) == 1
    err = capsys.readouterr().err
    assert "an empty selection of names" in err and "hint: omit it for all, or name some" in err, err


def test_serving_on_a_taken_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["simulator", "serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "Traceback" not in err, err


def test_recording_nothing_fails_and_leaves_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "empty.capture"
    assert main(["record", str(out), "--url", f"ws://127.0.0.1:{port}", "--duration", "1"]) == 1
    assert "error: nothing recorded from" in capsys.readouterr().err and not out.exists()


def test_a_missing_capture_is_named_before_pulsar_is_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import socket

    from rtca.feed import sinks

    with socket.socket() as probe:  # no Pulsar there: trying it would take the client's timeouts
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("RTCA_PULSAR__BROKER_PORT", str(port))
    tried: list[str] = []
    monkeypatch.setattr(sinks, "broker_not_answering", lambda _, url, *__, **___: tried.append(url) or "refused")
    monkeypatch.setattr(sinks.pulsar, "Client", lambda *a, **k: tried.append("client") or pytest.fail("client"))
    assert main(["ingest", "run", "--source", "replay", "--capture", str(tmp_path / "nowhere.capture")]) == 1
    assert "error: capture not found" in capsys.readouterr().err
    assert tried == [], "Pulsar was tried before the capture was looked for"


@pytest.mark.parametrize("url", ["ws://127.0.0.1:99999", "ws://[::1", "http://127.0.0.1:9/"])
def test_recording_from_a_bad_url_is_one_line_and_keeps_an_earlier_capture(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    earlier = tmp_path / "earlier.capture"
    earlier.write_text("1.0: {}\n")
    assert main(["record", str(earlier), "--force", "--url", url, "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert "websocket URL" in err and "Traceback" not in err, err
    assert earlier.read_text() == "1.0: {}\n"


def test_nohup_keeps_ignoring_sighup() -> None:
    """`nohup rtca bench &` must survive the terminal closing; SIGTERM still cleans up like Ctrl-C."""
    import signal

    from rtca.cli import _terminate_like_ctrl_c

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        _terminate_like_ctrl_c()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert callable(signal.getsignal(signal.SIGTERM))
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_functions_status_exits_3_unless_every_instance_runs(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from rtca.functions import deploy
    from rtca.functions.deploy import FunctionStatus, InstanceStatus

    def instance(running: bool) -> InstanceStatus:
        return InstanceStatus(0, running, "" if running else "UNAVAILABLE", 0, 5, 5, 0, 0, None)

    answers = {"up": [FunctionStatus("a", True, (instance(True),))],
               "down": [FunctionStatus("a", True, (instance(True),)), FunctionStatus("b", True, (instance(False),))],
               "missing": [FunctionStatus("a", False)]}
    for case, expected in (("up", 0), ("down", 3), ("missing", 3)):
        monkeypatch.setattr(deploy, "function_status", lambda settings, names=None, c=case: answers[c])
        assert main(["functions", "status"]) == expected, case
    assert "b: 0/1 running" in capsys.readouterr().out


def test_ingest_against_an_unreachable_pulsar_fails_at_once_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The client's operation timeout is a minute (a restarted broker's producers need it): without a broker to
    connect to, the ingest says so at once instead of waiting for it."""
    import socket

    from rtca.feed import sinks

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("RTCA_PULSAR__BROKER_PORT", str(port))
    clients: list[str] = []  # the client would wait out its operation timeout: it must not even be made
    monkeypatch.setattr(sinks.pulsar, "Client", lambda url, *a, **k: clients.append(url) or pytest.fail(url))
    assert main(["ingest", "run", "--source", "simulator", "--products", "T-USD", "--duration", "30"]) == 1
    assert clients == []
    err = capsys.readouterr().err
    assert f"pulsar: pulsar://127.0.0.1:{port} did not answer" in err and "Traceback" not in err, err


def test_a_variable_that_names_no_setting_is_warned_about(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """One underscore instead of two: the settings would ignore it without a word."""
    import rtca.settings

    monkeypatch.setattr(rtca.settings, "_WARNED", set())  # once per process: an earlier test may have warned
    monkeypatch.setenv("RTCA_PINOT_BROKER_PORT", "18099")
    monkeypatch.setenv("RTCA_PINOT__BROKER_PORT", "18099")
    monkeypatch.setenv("RTCA_KEEP_STACK", "1")  # the tests' own, not a setting
    from rtca.stack.docker import compose_env

    for name in compose_env(rtca.settings.load_settings(), secrets=False):  # exported to run compose by hand
        monkeypatch.setenv(name, "1")
    assert main(["config"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [warnings[0]] and "RTCA_PINOT_BROKER_PORT names no setting" in warnings[0]


def test_invalid_settings_do_not_send_the_user_to_a_command_that_fails_the_same_way(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("RTCA_PINOT__BROKER_PORT", "abc")
    assert main(["config"]) == 1
    err = capsys.readouterr().err
    assert "pinot.broker_port" in err and "lib/rtca/settings.py" in err


def test_output_cut_short_by_its_reader_is_no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rtca pinot status | head -3`: the reader closed the pipe; rtca stops writing, without a traceback."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w", buffering=1) as closed_pipe:  # line-buffered: the first line meets the closed end
        monkeypatch.setattr("sys.stdout", closed_pipe)
        assert main(["config"]) == 0


def test_a_refusal_no_caller_explained_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import httpx

    from rtca import cli

    def refused(settings: object, args: object) -> int:
        request = httpx.Request("GET", "http://127.0.0.1:8080/admin/v2/clusters")
        httpx.Response(401, text="Unauthorized", request=request).raise_for_status()
        return 0

    monkeypatch.setattr(cli, "cmd_config", refused)
    assert main(["config"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: GET http://127.0.0.1:8080/admin/v2/clusters answered HTTP 401: Unauthorized"), err


@pytest.mark.parametrize("argv, says", [(["bench", "--candidates", "timesorted,typo"], "unknown typo"),
                                        (["bench", "kernel", "--candidates", "timesorted"], "not asked for")])
def test_bench_candidates_are_checked_before_any_benchmark_runs(argv: list[str], says: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A typo failed `queries`, which runs last, after the other benchmarks' 50 minutes; without `queries` the
    option was silently ignored."""
    from rtca.bench import suite

    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(suite, "run_suite", lambda *args, **kwargs: pytest.fail("a benchmark ran"))
    assert main(argv) == 1
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [(["bench", "kernel", "--rates", "3000"], "not asked for"),
                                        (["bench", "capacity", "--rates", "3000,fast"], "'fast' is not a rate"),
                                        (["bench", "capacity", "--rates", "nan"], "'nan' is not a rate")])
def test_bench_capacity_rates_are_checked_before_any_benchmark_runs(argv: list[str], says: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from rtca.bench import suite

    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(suite, "run_suite", lambda *args, **kwargs: pytest.fail("a benchmark ran"))
    assert main(argv) == 1
    assert says in capsys.readouterr().err


def test_bench_capacity_rates_and_hold_reach_the_benchmark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rtca.bench import suite

    seen = {}
    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(suite, "run_suite", lambda *args, **kwargs: (seen.update(kwargs), ([], []))[1])
    assert main(["bench", "capacity", "--rates", "3000,5000.5", "--hold", "150"]) == 0
    assert seen["options"]["capacity"] == {"rates": [3000.0, 5000.5], "hold": 150.0}


@pytest.mark.parametrize("ingest, ended, code", [(True, False, 0), (False, False, 3), (None, True, 0)])
def test_status_exits_3_for_a_running_ingest_that_is_not_healthy(ingest: bool | None, ended: bool, code: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An ingest that cannot reach its source showed `not ready` and `rtca status` still exited 0."""
    from rtca import cli
    from rtca.feed import service
    from rtca.stack.process import ServiceState

    def state(name: str, healthy: bool, **kwargs: object) -> ServiceState:
        return ServiceState(name, 1 if healthy or not kwargs else None, healthy, "u", None, **kwargs)  # type: ignore

    monkeypatch.setattr(cli.stack, "status", lambda settings: [state("pulsar", True)])
    monkeypatch.setattr(service, "ingest_state", lambda settings: None if ingest is None else state("ingest", ingest))
    monkeypatch.setattr(service, "ended_ingest",
                        lambda settings: state("ingest", False, ended=True) if ended else None)
    assert main(["status"]) == code


def test_functions_status_tells_a_service_that_is_not_pulsar_from_functions_not_deployed(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Any 404 read as "not deployed": pointed at another service (Superset's port), `rtca functions status` sent the
    user to deploy six functions that were running. And a refused connection did not say which URL refused it."""
    from fake_http import answering, serving

    with serving(answering(404, "text/html; charset=utf-8", b"<!doctype html><html>Not found</html>")) as url:
        monkeypatch.setenv("RTCA_PULSAR__ADMIN_URL_OVERRIDE", url)
        assert main(["functions", "status"]) == 1
    captured = capsys.readouterr()
    assert "not deployed" not in captured.out
    assert f"{url} answered HTTP 404 (text/html; charset=utf-8), not as Pulsar's functions API" in captured.err
    monkeypatch.setenv("RTCA_PULSAR__ADMIN_URL_OVERRIDE", "http://127.0.0.1:1")
    assert main(["functions", "status"]) == 1
    assert "at http://127.0.0.1:1: " in capsys.readouterr().err


def test_an_https_url_on_a_plain_http_port_is_blamed_on_the_scheme_not_the_stack(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The hint said "is the stack up?" while the stack was up and the URL's scheme was wrong."""
    from http.server import BaseHTTPRequestHandler

    from fake_http import serving

    with serving(BaseHTTPRequestHandler) as plain:  # answers a TLS hello in plain text
        url = plain.replace("http://", "https://")
        monkeypatch.setenv("RTCA_PINOT__CONTROLLER_URL_OVERRIDE", url)
        assert main(["pinot", "status"]) == 1
    err = capsys.readouterr().err
    assert f"hint: {url} may not speak TLS: check the scheme" in err and "is the stack up" not in err


@pytest.mark.parametrize("source, code", [(["--url"], 1), (["--source", "simulator", "--max-messages", "5"], 0)])
def test_an_ingest_that_never_reaches_its_source_fails(source: list[str], code: int, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Offline (`--url ws://127.0.0.1:1`): "cannot connect" lines, then a report of 0 received and exit 0. Pulsar
    plays no part in it: in-memory sinks stand in, the source and its websocket are real."""
    import importlib
    from contextlib import asynccontextmanager

    from ports import open_and_refusing_ports

    from rtca.feed.sinks import MemorySink

    ingest = importlib.import_module("rtca.feed.ingest")  # `rtca.feed.ingest` is also the package's function

    @asynccontextmanager
    async def memory_sinks(settings: object, *topics: str):  # type: ignore[no-untyped-def]
        yield [MemorySink() for _ in topics]

    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(ingest, "pulsar_sinks", memory_sinks)
    with open_and_refusing_ports() as (_, refusing):
        url = f"ws://127.0.0.1:{refusing}"
        argv = [*source, url] if source == ["--url"] else source
        assert main(["ingest", "run", *argv, "--duration", "2"]) == code
    out, err = capsys.readouterr()
    if code == 0:
        assert '"received": 5' in out and "error:" not in err, err
        assert out.startswith("ingesting simulator (ws://127.0.0.1:"), out
        return
    assert out.startswith(f"ingesting url ({url}) into "), out  # it said "coinbase", the report "url"
    assert '"received": 0' in out, out
    said = [line for line in err.splitlines() if line.startswith("error: ")]
    assert said and said[-1].startswith(f"error: nothing received from {url} (") and "connection attempts)" in said[-1]
    assert "hint: offline or behind a proxy? `--source replay` or `--source simulator` run without the internet" in err


@pytest.fixture
def simulator_url() -> Iterator[str]:
    """A simulator served by `rtca simulator serve` in a process of its own (the test's `main` has the thread)."""
    import subprocess
    import sys

    server = subprocess.Popen([sys.executable, "-m", "rtca.cli", "simulator", "serve", "--products", "T-USD"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield server.stdout.readline().strip()
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("under, says", [("a-file/sub", "part of the path is a file, not a directory"),
                                         ("a-file", "a file is in the way of a directory: check the path")])
def test_a_bad_output_path_gets_a_hint_about_that_path(under: str, says: str, simulator_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Every filesystem error got "free disk space ... (the run directory is RTCA_RUN_DIR ...)", about neither the
    error nor the path given; a file where the capture's folder should be was a traceback (FileExistsError)."""
    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path / "run"))
    (tmp_path / "a-file").write_text("")
    output = tmp_path / under / "out.capture"
    assert main(["record", str(output), "--url", simulator_url, "--products", "T-USD", "--max-messages", "5",
                 "--duration", "20"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"hint: {says}" in err and "Traceback" not in err, err
    assert "RTCA_RUN_DIR" not in err and "disk space" not in err, err


@pytest.mark.parametrize("output, says", [("", "error: no output file named"), (".", "error: . is a directory")])
def test_record_refuses_an_output_that_is_no_file_name(output: str, says: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`rtca record ''` said "error:  exists"; `rtca record /tmp --force` connected, then failed on "Is a
    directory" with the disk-space hint."""
    from ports import open_and_refusing_ports

    monkeypatch.chdir(tmp_path)
    with open_and_refusing_ports() as (_, refusing):
        assert main(["record", output, "--force", "--url", f"ws://127.0.0.1:{refusing}", "--duration", "1"]) == 1
    assert capsys.readouterr().err.startswith(says)


@pytest.mark.parametrize("code, in_run_dir, says", [
    (errno.ENOSPC, True, "free disk space; the run directory is RTCA_RUN_DIR, `rtca config` shows it"),
    (errno.ENOENT, False, "no such file or directory: check the path"),
    (errno.ENOSPC, False, "free disk space"),
    (errno.EACCES, False, "check the permissions of the path"),
    (errno.EISDIR, False, "the path is a directory: give a file's name"),
])  # fmt: skip
def test_the_filesystem_hint_fits_the_error_and_names_the_run_directory_only_for_its_paths(
        code: int, in_run_dir: bool, says: str, tmp_path: Path) -> None:  # fmt: skip
    from rtca.cli import _filesystem_hint

    run_dir = tmp_path / "run"
    path = run_dir / "logs" / "x.log" if in_run_dir else tmp_path / "elsewhere"
    assert _filesystem_hint(OSError(code, os.strerror(code), str(path)), run_dir) == says


def test_replay_serve_says_which_products_to_ingest() -> None:
    """An ingest given only `--url` subscribes Coinbase's live products, which the replay server refuses ("Failed
    to subscribe"): the server now prints the command with its capture's products."""
    import subprocess
    import sys
    import threading

    from rtca.feed.capture import SHIPPED_CAPTURE, read_capture

    server = subprocess.Popen([sys.executable, "-m", "rtca.cli", "replay", "serve", "--port", "0"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    timer = threading.Timer(60, server.kill)  # a server that never prints must not hang the suite
    timer.start()
    try:
        assert server.stdout is not None
        url, hint = server.stdout.readline().strip(), server.stdout.readline().strip()
    finally:
        timer.cancel()
        server.terminate()
        server.wait(30)
    products = ",".join(sorted(read_capture(SHIPPED_CAPTURE).products))
    assert url.startswith("ws://127.0.0.1:") and hint == f"ingest it: rtca ingest run --url {url} --products {products}"

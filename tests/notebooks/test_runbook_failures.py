"""A runbook that stops at a cell is one line naming the cell and its error (no stack needed: nothing answers)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rtca.cli import main
from rtca.runbook import RunbookFailed, run_runbooks
from rtca.settings import load_settings


def test_a_runbook_that_stops_names_its_cell_and_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    for name in ("RTCA_PINOT__CONTROLLER_PORT", "RTCA_PINOT__BROKER_PORT"):
        monkeypatch.setenv(name, str(port))
    with pytest.raises(RunbookFailed) as failed:
        run_runbooks(load_settings(), ["20-pinot-tables"])
    executed = tmp_path / "runbooks" / "20-pinot-tables.ipynb"
    assert "runbook 20-pinot-tables stopped at cell [" in str(failed.value) and "ConnectError" in str(failed.value)
    # the addresses that did not answer, and what to do (it failed deep in a client, naming neither)
    assert f"http://127.0.0.1:{port}/health did not answer" in str(failed.value), failed.value
    assert "pinot-controller, pinot-broker" in str(failed.value) and "rtca status" in str(failed.value)
    assert str(executed) in str(failed.value) and executed.exists()
    capsys.readouterr()
    assert main(["runbooks", "20-pinot-tables"]) == 1  # the CLI: one line, no traceback
    err = capsys.readouterr().err
    assert "\nerror: runbook 20-pinot-tables stopped at cell [" in err and "Traceback" not in err, err


def test_a_runbook_wait_says_what_it_waits_for_and_fails_with_the_last_error(capsys: pytest.CaptureFixture[str]
                                                                             ) -> None:  # fmt: skip
    from rtca.errors import DeployError
    from rtca.runbook import RunbookCheckFailed, wait_until

    def not_yet() -> int:
        raise DeployError("Pinot could not query: SegmentsUnavailable")

    with pytest.raises(RunbookCheckFailed, match="rows: not true after 0 s .last: DeployError: Pinot could not"):
        wait_until(not_yet, timeout=0.3, what="rows", interval=0.1, note_every=0.1)
    assert "  waiting until rows (" in capsys.readouterr().out
    values = iter([0, 2, 5])
    assert wait_until(lambda: next(values), done=lambda rows: rows >= 5, timeout=5, what="rows", interval=0.01) == 5


def test_a_runbook_wait_outlasts_a_service_that_refuses_while_it_restarts() -> None:
    """A broker restarting during 40-ingest's wait for rows stopped the runbook at once with a bare ConnectError."""
    import httpx

    from rtca.runbook import wait_until

    def answers() -> list[int]:
        if len(calls) < 2:
            calls.append(1)
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return [5]

    calls: list[int] = []
    assert wait_until(answers, timeout=5, what="rows", interval=0.01) == [5] and len(calls) == 2


def test_the_tables_check_outlasts_a_controller_restart_and_fails_at_once_on_a_missing_table(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Runbook 20's check stopped at once with a bare ConnectError when the controller restarted under it."""
    import httpx

    from rtca.pinot.client import PinotClient
    from rtca.runbook import RunbookCheckFailed, check_tables

    settings = load_settings()
    refusals = [httpx.ConnectError("[Errno 111] Connection refused")] * 2
    asked: list[str] = []

    def table(self: PinotClient, name: str) -> dict[str, object] | None:
        asked.append(name)
        if refusals:
            raise refusals.pop()
        return None if name == settings.tables.alerts else {"tableName": name}

    monkeypatch.setattr(PinotClient, "table", table)
    monkeypatch.setattr(PinotClient, "count", lambda self, name, where="": len(name))
    monkeypatch.setattr("rtca.runbook.time.sleep", lambda seconds: None)
    assert check_tables(settings, "ticker") == [(settings.tables.ticker, len(settings.tables.ticker))]
    assert asked == [settings.tables.ticker] * 3  # refused twice, then answered
    asked.clear()
    with pytest.raises(RunbookCheckFailed, match=f"Pinot table {settings.tables.alerts} does not exist"):
        check_tables(settings, "alerts")
    assert asked == [settings.tables.alerts]  # at once: no wait makes it exist


def test_the_functions_check_says_what_it_waits_for(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """It sat silent for up to two minutes."""
    from types import SimpleNamespace

    import rtca.functions.deploy
    from rtca.errors import ConfigError, DeployError
    from rtca.runbook import RunbookCheckFailed, check_functions

    starting = SimpleNamespace(name="router", instances=[0], running=0, latest_exceptions=["ImportError: x"])
    monkeypatch.setattr(rtca.functions.deploy, "function_status", lambda settings, wanted: [starting])
    clock = [0.0]
    monkeypatch.setattr("rtca.runbook.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("rtca.runbook.time.sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    with pytest.raises(RunbookCheckFailed, match="router: 0/1 instances running, latest exception: ImportError"):
        check_functions(load_settings(), timeout=25)
    assert "waiting until every function's instances are running (10 s" in capsys.readouterr().out

    def refused(settings: object, wanted: object) -> list[object]:
        raise DeployError("Pulsar admin: Connection refused")

    monkeypatch.setattr(rtca.functions.deploy, "function_status", refused)
    with pytest.raises(RunbookCheckFailed, match="last: DeployError: Pulsar admin: Connection refused"):
        check_functions(load_settings(), timeout=5)  # not "none deployed"

    def misspelt(settings: object, wanted: object) -> list[object]:
        raise ConfigError("unknown function(s): tikcer-stats")

    monkeypatch.setattr(rtca.functions.deploy, "function_status", misspelt)
    started = clock[0]
    with pytest.raises(ConfigError, match="tikcer-stats"):
        check_functions(load_settings(), ["tikcer-stats"], timeout=60)
    assert clock[0] == started  # at once: no wait makes a wrong name right


def test_unknown_parameters_are_read_off_the_kernels_history() -> None:
    from rtca.runbook import unknown_parameters

    declared = 'backend = "local"  # local | docker\nenv = {}\nsource = "replay"\n'
    history = ["", declared, '# Parameters\nsourse = "simulator"\nbackend = "local"\n', "from rtca import runbook"]
    assert unknown_parameters(history) == (["sourse"], ["backend", "env", "source"])
    assert unknown_parameters(["", declared, "x = 1"]) == ([], [])  # no parameters passed: nothing injected


def test_a_misspelled_runbook_parameter_stops_the_runbook_before_it_does_anything(tmp_path: Path) -> None:
    """papermill only warns ("Passed unknown parameter") and runs the defaults: 40-ingest replaced a running
    simulator ingest by the default replay."""
    import papermill

    from rtca.settings import PROJECT_ROOT

    with pytest.raises(papermill.PapermillExecutionError) as failed:
        papermill.execute_notebook(str(PROJECT_ROOT / "runbooks" / "40-ingest.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"sourse": "simulator"}, cwd=str(PROJECT_ROOT), progress_bar=False,
                                   kernel_name="python3")  # fmt: skip
    error = failed.value
    assert error.ename == "RunbookCheckFailed", error
    assert "unknown runbook parameter(s): sourse (did you mean source?)" in error.evalue
    assert error.exec_count == 3  # the parameters cell, papermill's, then the first of the runbook's own
    # the workbench's errors show as their message and hint only: papermill's report ends with them, not with a
    # traceback through the library
    assert error.traceback == [f"RunbookCheckFailed: {error.evalue}"]


def test_rtca_runbooks_gives_each_parameter_to_the_runbooks_that_take_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`-p source simulator` for `make up`'s five runbooks: 40-ingest takes it, the others would refuse it."""
    import papermill

    ran: dict[str, dict[str, object]] = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda source, target, parameters, **_: ran.setdefault(
        Path(source).stem, parameters))  # fmt: skip
    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    assert main(["runbooks", "-p", "source", "simulator", "-p", "rate", "250", "-p", "env", "{}"]) == 0
    assert ran["40-ingest"] == {"backend": "local", "source": "simulator", "rate": 250, "env": "{}"}
    assert ran["00-stack-up"] == {"backend": "local", "env": "{}"}
    capsys.readouterr()
    ran.clear()
    assert main(["runbooks", "10-deploy-functions", "40-ingest", "-p", "sourse", "simulator"]) == 1
    err = capsys.readouterr().err
    assert "no runbook of 10-deploy-functions, 40-ingest takes parameter(s) sourse (did you mean source?)" in err
    assert ran == {}, "refused before any runbook ran"


def test_make_up_ends_saying_how_to_log_in_to_superset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`rtca up` said where Superset's password is; `make up` (the runbooks, then a status table) did not."""
    import rtca.runbook

    monkeypatch.setenv("RTCA_RUN_DIR", str(tmp_path))
    ran: list[list[str]] = []
    monkeypatch.setattr(rtca.runbook, "run_runbooks", lambda settings, names, parameters: ran.append(list(names))
                        or [])  # the runbooks themselves are tested against the stack; here, what the CLI says
    assert main(["runbooks"]) == 0
    said = capsys.readouterr().out
    assert f"(user admin, password in {tmp_path / 'secrets' / 'superset.json'})" in said, said
    assert main(["runbooks", "40-ingest"]) == 0 and "Superset:" not in capsys.readouterr().out
    assert ran == [list(rtca.runbook.UP_RUNBOOKS), ["40-ingest"]]

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

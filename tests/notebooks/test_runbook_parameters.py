"""Runbook parameters as papermill and schedulers pass them: `-p NAME false` is the string "false" (true to
Python), `-p env ...` a string, lists from `-y`; each is read for what it says or refused naming the form."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtca import runbook
from rtca.errors import ConfigError
from rtca.runbook import RunbookCheckFailed
from rtca.settings import load_settings, name_list


@pytest.mark.parametrize("value, means", [(True, True), (False, False), ("false", False), ("False", False),
                                          (" no ", False), ("0", False), (0, False), ("TRUE", True), ("yes", True),
                                          ("on", True), (1, True)])
def test_a_yes_no_parameter_means_what_it_says(value: object, means: bool) -> None:
    assert runbook.flag("wipe", value) is means


@pytest.mark.parametrize("value", ["maybe", "", None, 2, 0.5, ["false"]])
def test_a_yes_no_parameter_that_says_neither_is_refused(value: object) -> None:
    with pytest.raises(RunbookCheckFailed, match="wipe: .* is neither true nor false"):
        runbook.flag("wipe", value)


@pytest.mark.parametrize("given", [
    {"RTCA_PINOT__BROKER_PORT": 18099},
    '{"RTCA_PINOT__BROKER_PORT": "18099"}',
    "{RTCA_PINOT__BROKER_PORT: 18099}",
    "RTCA_PINOT__BROKER_PORT=18099",
])  # fmt: skip
def test_env_is_a_mapping_however_papermill_passed_it(given: object) -> None:
    assert runbook.env_parameter(given) == {"RTCA_PINOT__BROKER_PORT": "18099"}
    assert runbook.env_parameter("RTCA_A=1, RTCA_B=x=y") == {"RTCA_A": "1", "RTCA_B": "x=y"}
    assert runbook.env_parameter(None) == runbook.env_parameter("") == {}


def test_an_override_taken_out_of_env_is_gone_when_the_cell_runs_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A JupyterLab kernel kept every override a runbook's `env` ever set: clearing `env` changed nothing."""
    import os

    monkeypatch.delenv("RTCA_PINOT__BROKER_PORT", raising=False)
    monkeypatch.setenv("RTCA_PINOT__CONTROLLER_PORT", "19999")
    default = load_settings().pinot.broker_port
    given = runbook.settings(env={"RTCA_PINOT__BROKER_PORT": "18199", "RTCA_PINOT__CONTROLLER_PORT": "19001"})
    assert (given.pinot.broker_port, given.pinot.controller_port) == (18199, 19001)
    again = runbook.settings(env={})
    assert (again.pinot.broker_port, again.pinot.controller_port) == (default, 19999)  # as before the first cell
    assert "RTCA_PINOT__BROKER_PORT" not in os.environ


@pytest.mark.parametrize("given", ["oops", ["RTCA_A=1"], 5])
def test_env_that_is_no_mapping_is_refused_naming_the_forms(given: object) -> None:
    with pytest.raises(RunbookCheckFailed, match="runbook parameter env") as error:
        runbook.env_parameter(given)
    assert "-y 'env:" in str(error.value.hint)


def test_ingest_parameters_become_the_flags_they_mean() -> None:
    args = runbook.ingest_args(source="replay", speed="max", loop="false", shift_time=True,
                               products=["SKL-USD", "YFI-BTC"], channels="ticker, matches")
    assert args == ["--source", "replay", "--speed", "max", "--shift-time",
                    "--products", "SKL-USD,YFI-BTC", "--channels", "ticker,matches"]
    for source in ("replay", "coinbase", "simulator"):
        with pytest.raises(RunbookCheckFailed, match="loop"):
            runbook.ingest_args(source=source, loop="sometimes")


@pytest.mark.parametrize("source, flags", [
    ("replay", ["--speed", "1", "--loop", "--shift-time"]),
    ("coinbase", []),
    ("simulator", ["--rate", "100.0"]),
])  # fmt: skip
def test_the_runbook_passes_only_its_sources_options(source: str, flags: list[str]) -> None:
    """The runbook's defaults (speed 1, loop, shift_time, rate 100) went to every source, and the ingest now
    refuses another source's options: `-p source coinbase` would fail at start with `--speed is for ...`."""
    from rtca.feed.service import _options

    args = runbook.ingest_args(source=source)
    assert args == ["--source", source, *flags]
    assert _options(args)["source"] == source  # what `start_ingest` checks before it starts anything


def test_the_ingest_check_picks_a_table_the_channels_reach() -> None:
    settings = load_settings()
    with pytest.raises(RunbookCheckFailed, match="none of them reaches a Pinot table"):
        runbook.check_ingest(settings, "heartbeat,status", received_since_ms=0, timeout=0)


def test_an_empty_selection_is_refused_not_taken_for_nothing() -> None:
    """`-p tables ''` applied nothing and reported success."""
    assert name_list(None) is None and name_list(" a, b ") == ["a", "b"] and name_list(["a"]) == ["a"]
    for empty in ("", " , ", []):
        with pytest.raises(ConfigError, match="empty selection"):
            name_list(empty)


def test_a_misspelt_runbook_is_named_before_any_runbook_runs(tmp_path: Path) -> None:
    settings = load_settings(run_dir=tmp_path / "run")
    with pytest.raises(RunbookCheckFailed, match="no runbook named 99-typo") as error:
        runbook.run_runbooks(settings, ["20-pinot-tables.ipynb", "99-typo"])
    assert "40-ingest" in str(error.value.hint)
    assert not (tmp_path / "run" / "runbooks").exists()  # nothing executed


@pytest.mark.parametrize("channels, table", [("ticker_batch", "ticker"), ("level2_batch", "book"),
                                             ("heartbeat,level2_50", "book"), (None, "ticker")])
def test_the_ingest_check_knows_the_batched_channels(monkeypatch: pytest.MonkeyPatch, channels: str | None,
                                                     table: str) -> None:  # fmt: skip
    """ticker_batch feeds the ticker table, level2_batch and level2_50 the book: Coinbase's unauthenticated feed."""
    settings = load_settings()
    monkeypatch.setattr(runbook, "check_rows", lambda settings, table, **_: 1)
    assert runbook.check_ingest(settings, channels, received_since_ms=0) == (getattr(settings.tables, table), 1)

"""The exploratory notebooks' parameters as papermill passes them: a misspelt name is refused (papermill only
warns and runs the defaults), a value that is no number is named with the form it needs. Both fail before any
query, so no stack is needed."""

from __future__ import annotations

from pathlib import Path

import papermill
import pytest

from rtca.settings import PROJECT_ROOT

NOTEBOOKS = sorted(PROJECT_ROOT.glob("notebooks/*.ipynb"))


def _stopped(book: Path, tmp_path: Path, parameters: dict[str, object]) -> papermill.PapermillExecutionError:
    with pytest.raises(papermill.PapermillExecutionError) as failed:
        papermill.execute_notebook(str(book), str(tmp_path / "out.ipynb"), parameters=parameters,
                                   cwd=str(PROJECT_ROOT), progress_bar=False, kernel_name="python3")
    return failed.value


@pytest.mark.parametrize("book", NOTEBOOKS, ids=lambda path: path.name)
def test_a_misspelt_notebook_parameter_stops_the_notebook(book: Path, tmp_path: Path) -> None:
    """`-p minutess 30` printed papermill's "Passed unknown parameter" and charted the default window, rc 0."""
    error = _stopped(book, tmp_path, {"minutess": 30})
    assert error.ename == "ConfigError", error
    assert "unknown notebook parameter(s): minutess (did you mean minutes?)" in error.evalue
    assert "this notebook takes: " in error.evalue and "interval" in error.evalue
    assert error.exec_count == 3  # the parameters cell, papermill's, then the notebook's first
    assert error.traceback == [f"ConfigError: {error.evalue}"]  # message and hint, no traceback through rtca


def test_a_window_that_is_no_number_is_named_with_the_form_it_needs(tmp_path: Path) -> None:
    """`-p minutes abc` ended in `ValueError: invalid literal for int()` from deep in the view."""
    error = _stopped(PROJECT_ROOT / "notebooks" / "01-live-market.ipynb", tmp_path, {"minutes": "abc"})
    assert error.ename == "ConfigError", error
    assert "parameter minutes: 'abc' is not a whole number at least 1" in error.evalue
    assert "-p minutes 15" in error.evalue

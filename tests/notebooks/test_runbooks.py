"""The runbooks and exploratory notebooks against the real stack: executed by papermill and checked by nbval."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rtca.functions.deploy import function_status
from rtca.pinot.client import PinotClient
from rtca.runbook import UP_RUNBOOKS, RunbookCheckFailed, check_rows, run_runbooks
from rtca.settings import PROJECT_ROOT, Settings
from rtca.superset.client import SupersetClient

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def inventory(settings: Settings) -> dict[str, object]:
    """What the runbooks create, counted: a second run must leave every number unchanged."""
    with PinotClient(settings) as pinot:
        tables = sorted(t for t in settings.tables.model_dump().values() if pinot.table(t) is not None)
    with SupersetClient.from_settings(settings) as superset:
        counts = {kind: superset.get(f"/api/v1/{kind}/", q="(page_size:1)")["count"]
                  for kind in ("database", "dataset", "chart", "dashboard")}
    functions = sorted(s.name for s in function_status(settings) if s.deployed)
    return {"tables": tables, "superset": counts, "functions": functions}


def test_runbooks_run_twice_without_duplicates(stack_up: Settings) -> None:
    first = run_runbooks(stack_up, UP_RUNBOOKS)
    after_first = inventory(stack_up)
    second = run_runbooks(stack_up, UP_RUNBOOKS)
    after_second = inventory(stack_up)
    print(f"executed {len(first)} + {len(second)} runbooks; inventory {after_second}")
    assert after_first == after_second
    assert len(after_first["tables"]) == len(stack_up.tables.model_dump())  # type: ignore[arg-type]
    assert after_first["superset"]["dashboard"] >= 5  # type: ignore[index]


def test_the_ingest_check_counts_rows_of_this_run_only(stack_up: Settings) -> None:
    """Runbook 40's check: rows received before the ingest (re)started prove nothing about it."""
    table = stack_up.tables.ticker
    with PinotClient(stack_up) as pinot:
        assert pinot.count(table) > 0  # the runbooks' ingest has filled it
    with pytest.raises(RunbookCheckFailed, match="received since"):
        check_rows(stack_up, table, timeout=3, received_since_ms=int(time.time() * 1000) + 3_600_000)
    assert check_rows(stack_up, table, timeout=120, received_since_ms=int(time.time() * 1000)) >= 1  # still flows


def test_nbval_on_runbooks_and_notebooks(stack_up: Settings) -> None:
    """nbval runs every cell of the runbooks (but the teardown) and of every exploratory notebook."""
    books = [PROJECT_ROOT / "runbooks" / f"{name}.ipynb" for name in UP_RUNBOOKS]
    books += sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q",
         *map(str, books)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1800,
    )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout

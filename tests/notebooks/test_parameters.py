"""Every runbook's and notebook's parameters cell reads as papermill's parameters (`papermill --help-notebook`
lists them, with their help): a comment papermill cannot parse hides the parameter from it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import papermill
import pytest

from rtca.settings import PROJECT_ROOT

BOOKS = sorted([*PROJECT_ROOT.glob("runbooks/*.ipynb"), *PROJECT_ROOT.glob("notebooks/*.ipynb")])


@pytest.mark.parametrize("book", BOOKS, ids=lambda path: path.name)
def test_papermill_reads_every_parameter(book: Path) -> None:
    cells = [c for c in json.loads(book.read_text())["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, "one parameters cell"
    assigned = [node.targets[0].id for node in ast.parse("".join(cells[0]["source"])).body
                if isinstance(node, ast.Assign)]  # fmt: skip
    parameters = papermill.inspect_notebook(str(book))
    assert list(parameters) == assigned
    assert all(p["help"] for p in parameters.values()), "each parameter says what it is"

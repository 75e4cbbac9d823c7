"""`${NAME}` placeholders: filled everywhere in a tree, other dollar signs left alone, unknown names refused."""

from __future__ import annotations

import pytest

from rtca.errors import ConfigError
from rtca.placeholders import fill


def test_fills_nested_strings_and_leaves_other_dollars() -> None:
    tree = {"uri": "pinot+${URL}/query", "list": ["${URL}", 3, None], "format": "$,.2f", "sql": "SELECT '$x'"}
    assert fill(tree, {"URL": "http://h:1"}, "f") == {
        "uri": "pinot+http://h:1/query", "list": ["http://h:1", 3, None], "format": "$,.2f", "sql": "SELECT '$x'"}


def test_unknown_placeholder_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"charts/x.yaml: unknown placeholder \$\{NOPE\}"):
        fill({"a": "${NOPE}"}, {"URL": "u"}, "charts/x.yaml")

"""`${NAME}` placeholders in config-as-code files (infra/pinot/, infra/superset/), filled from settings.

Why not `string.Template`: it treats every `$` as syntax, and these files hold `$` of their own (a d3 currency
format such as `$,.2f`, SQL). Only `${UPPER_CASE}` is a placeholder here; an unknown one is an error, not a
silent leftover.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rtca.errors import ConfigError

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def fill(value: Any, values: Mapping[str, str], where: str) -> Any:
    """`value` (a JSON/YAML tree) with every `${NAME}` in its strings replaced by `values[NAME]`."""
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise ConfigError(f"{where}: unknown placeholder ${{{name}}}",
                                  hint=f"known: {', '.join('${' + k + '}' for k in values)}")
            return values[name]

        return PLACEHOLDER.sub(replace, value)
    if isinstance(value, dict):
        return {k: fill(v, values, where) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values, where) for v in value]
    return value

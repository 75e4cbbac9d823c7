"""environment.yml (conda users) and pyproject.toml (pip) must pin the same packages at the same versions."""

from __future__ import annotations

import tomllib

import yaml

from rtca.settings import PROJECT_ROOT


def test_environment_yml_matches_pyproject_pins() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pip_pins = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    conda_pins = {line for line in pip_section if not line.startswith("-e")}
    assert conda_pins == pip_pins
    assert all("==" in pin for pin in pip_pins), "every dependency is pinned exactly"
    assert "python=3.11" in env["dependencies"]

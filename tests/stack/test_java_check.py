"""The Java check looks at the java the stack will run: JAVA_HOME's when set (Pulsar's launcher and Maven use it),
else the first on PATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rtca.errors import PrerequisiteError
from rtca.stack.artifacts import require_java


def fake_jdk(root: Path, version: str) -> Path:
    """A directory with bin/java printing `java -version`'s first line for `version` (as a JDK does, on stderr)."""
    java = root / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2024-01-16\' >&2\n')
    java.chmod(0o755)
    return root


def test_java_home_is_the_java_checked_and_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = fake_jdk(tmp_path / "jdk11", "11.0.22"), fake_jdk(tmp_path / "jdk17", "17.0.10")
    monkeypatch.setenv("PATH", f"{new / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("JAVA_HOME", str(old))  # what Pulsar's launcher would run, whatever PATH says
    with pytest.raises(PrerequisiteError, match=r"Java 17 or newer is needed, found .*11\.0\.22.* from JAVA_HOME"):
        require_java()
    monkeypatch.setenv("JAVA_HOME", str(new))
    assert require_java() == str(new / "bin" / "java")
    monkeypatch.delenv("JAVA_HOME")
    assert require_java() == str(new / "bin" / "java")  # the first on PATH


def test_a_java_home_without_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(PrerequisiteError, match="has no bin/java") as failure:
        require_java()
    assert "unset it" in str(failure.value.hint)

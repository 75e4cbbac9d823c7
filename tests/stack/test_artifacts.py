"""The artifact steps of a first start (found by a cold-start walkthrough): Maven's repository follows the settings,
a failure names its cause, long steps are never silent, and a plugin rebuild ships only its own jars."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import psutil
import pytest

from rtca.errors import ArtifactError
from rtca.settings import load_settings
from rtca.stack import artifacts

PROJECT = Path(__file__).resolve().parents[2]


needs_maven = pytest.mark.skipif(shutil.which("mvn") is None, reason="needs Maven")


@needs_maven
def test_maven_uses_the_configured_repository_and_names_its_error(tmp_path: Path) -> None:
    """Java takes the home folder from the user account, not $HOME: a HOME pointed elsewhere still filled (or, when
    not writable, failed on) the account's ~/.m2, and the message blamed the network."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = load_settings(run_dir=tmp_path / "run", maven_repo=blocker / "repository")
    with pytest.raises(ArtifactError) as raised:
        artifacts.pinot_lib(settings.model_copy(update={"cache_dir": tmp_path / "cache"}))
    message = str(raised.value)
    print(f"error shown to the user: {message}")
    assert "Could not create local repository" in message and str(blocker / "repository") in message
    assert "RTCA_MAVEN_REPO" in message and str(settings.logs_dir / "artifacts.log") in message


def test_a_long_step_says_it_is_still_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setattr(artifacts, "HEARTBEAT_S", 0.2)
    log = tmp_path / "artifacts.log"
    log.write_text("an earlier step's output\n")
    code, output = artifacts._run_logged(
        [sys.executable, "-c", "import time; print('fetching', flush=True); time.sleep(0.9); print('fetched')"],
        log=log, doing="fetching things")  # fmt: skip
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip().startswith("still fetching")]
    assert code == 0 and output == "fetching\nfetched\n"  # this run's output only, to name a failure's cause
    assert len(lines) >= 3 and all(str(log) in line for line in lines), lines
    assert log.read_text() == "an earlier step's output\nfetching\nfetched\n"


@needs_maven
def test_maven_follows_home_and_the_settings_it_finds_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, RTCA_MAVEN_REPO leaves the repository to Maven's own configuration, read under $HOME (not under the
    account's home folder, which Java would take): a workshop's pre-filled offline repository still works."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    home = tmp_path / "home"
    (home / ".m2").mkdir(parents=True)
    (home / ".m2" / "settings.xml").write_text(
        f"<settings><localRepository>{blocker / 'offline-repo'}</localRepository></settings>")
    monkeypatch.setenv("HOME", str(home))
    settings = load_settings(run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    assert settings.maven_repo is None
    with pytest.raises(ArtifactError, match="Could not create local repository at .*offline-repo"):
        artifacts.pinot_lib(settings)


def test_an_interrupted_step_stops_its_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rtca up` stopped by Ctrl-C or SIGTERM left Maven or pip running, writing into folders the next start
    rebuilds."""
    monkeypatch.setattr(artifacts, "HEARTBEAT_S", 0.1)
    pid_file = tmp_path / "child.pid"

    def interrupt(message: str) -> None:  # the heartbeat's line: as if Ctrl-C came during the wait
        if pid_file.exists() and pid_file.read_text():
            raise KeyboardInterrupt

    monkeypatch.setattr(artifacts, "say", interrupt)
    with pytest.raises(KeyboardInterrupt):
        artifacts._run_logged([sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write("
                               "str(os.getpid())); time.sleep(60)"], log=tmp_path / "a.log", doing="sleeping")
    child = int(pid_file.read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


@needs_maven
def test_a_plugin_rebuild_ships_only_its_own_jars(tmp_path: Path) -> None:
    """`mvn package` adds to target/plugin-lib: after a change of version the old jar was copied to Pinot too."""
    infra = tmp_path / "infra"
    module = infra / "pinot-pulsar-plugin"
    shutil.copytree(PROJECT / "infra" / "pinot-pulsar-plugin", module, ignore=shutil.ignore_patterns("target"))
    stale = module / "target" / "plugin-lib" / "pinot-pulsar-plugin-0.0.1-old.jar"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier build's jar")
    settings = load_settings(run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", infra_dir=infra)
    built = artifacts.plugin_lib(settings)
    jars = sorted(p.name for p in built.glob("*.jar"))
    assert stale.name not in jars and any(name.startswith("pinot-pulsar-plugin-") for name in jars), jars


def test_a_superset_version_the_requirements_do_not_pin_is_refused_before_any_install(tmp_path: Path) -> None:
    """RTCA_SUPERSET__VERSION alone changed nothing but the name of an initialisation marker."""
    from rtca.errors import ConfigError

    settings = load_settings(run_dir=tmp_path, cache_dir=tmp_path / "cache", superset={"version": "5.0.0"})
    with pytest.raises(ConfigError, match=r"Superset 5.0.0 is configured but .*apache-superset==6"):
        artifacts.superset_venv(settings)
    assert not (tmp_path / "cache").exists()

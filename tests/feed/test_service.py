"""`rtca ingest start` as the runbook uses it: idempotent for the same flags, a restart for others (another source)."""

from __future__ import annotations

import pytest

from rtca.feed.service import start_ingest, stop_ingest
from rtca.errors import ConfigError, ServiceError
from rtca.settings import Settings
from rtca.stack.process import Supervisor

pytestmark = pytest.mark.stack


def test_start_leaves_a_running_ingest_alone_and_restarts_one_with_other_flags(
        stack_up: Settings, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # topics of the test's own (the child inherits them); nothing listens on port 9, so the ingest only retries
    monkeypatch.setenv("RTCA_TOPICS__RAW", f"test-raw-{unique}")
    monkeypatch.setenv("RTCA_TOPICS__FEED_HEALTH", f"test-health-{unique}")
    name = f"ingest-{unique}"
    flags = ["--url", "ws://127.0.0.1:9", "--products", "TEST-USD"]
    try:
        first, done = start_ingest(stack_up, flags, name=name)
        assert done == "started" and first.pid is not None
        again, done = start_ingest(stack_up, flags, name=name)
        assert (done, again.pid) == ("running", first.pid)
        spelled_out, done = start_ingest(stack_up, [*flags, "--speed", "1", "--rate", "100.0"], name=name)
        assert (done, spelled_out.pid) == ("running", first.pid)  # the defaults, spelled out: the same options
        other, done = start_ingest(stack_up, [*flags, "--channels", "ticker"], name=name)
        assert done == "restarted" and other.pid not in (None, first.pid)
        process = Supervisor(stack_up).process(name)
        assert process is not None and process.cmdline()[-2:] == ["--channels", "ticker"]
    finally:
        stop_ingest(stack_up, name=name)
    assert Supervisor(stack_up).process(name) is None


def test_start_fails_naming_the_log_when_the_ingest_ends_at_once(stack_up: Settings, unique: str) -> None:
    name = f"ingest-{unique}"
    try:
        with pytest.raises(ServiceError, match="exited during start-up") as failure:
            start_ingest(stack_up, ["--source", "replay", "--capture", f"/nonexistent-{unique}.capture"], name=name)
        assert "capture not found" in Supervisor(stack_up).log_file(name).read_text()
        assert f"rtca logs {name}" in str(failure.value.hint)
    finally:
        stop_ingest(stack_up, name=name)


def test_a_short_ingest_that_ends_well_during_start_up_is_finished_not_failed(
        stack_up: Settings, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTCA_TOPICS__RAW", f"test-raw-{unique}")
    monkeypatch.setenv("RTCA_TOPICS__FEED_HEALTH", f"test-health-{unique}")
    name = f"ingest-{unique}"
    try:
        state, done = start_ingest(stack_up, ["--source", "simulator", "--products", "TEST-USD", "--max-messages",
                                              "20", "--rate", "200"], name=name)
        assert done == "finished" and state.pid is None
        assert '"ended": "max_messages"' in Supervisor(stack_up).log_file(name).read_text()
    finally:
        stop_ingest(stack_up, name=name)


def test_invalid_options_are_refused_before_a_running_ingest_is_touched(
        stack_up: Settings, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTCA_TOPICS__RAW", f"test-raw-{unique}")
    monkeypatch.setenv("RTCA_TOPICS__FEED_HEALTH", f"test-health-{unique}")
    name = f"ingest-{unique}"
    try:
        first, _ = start_ingest(stack_up, ["--url", "ws://127.0.0.1:9"], name=name)
        with pytest.raises(ConfigError, match="invalid ingest options"):
            start_ingest(stack_up, ["--source", "cionbase"], name=name)
        process = Supervisor(stack_up).process(name)
        assert process is not None and process.pid == first.pid  # still the one that ran
    finally:
        stop_ingest(stack_up, name=name)

"""`rtca ingest start` as the runbook uses it: idempotent for the same flags, a restart for others (another source)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from rtca import runbook
from rtca.errors import ConfigError, ServiceError
from rtca.feed.service import describe_start, ended_ingest, ingest_state, start_ingest, stop_ingest
from rtca.settings import Settings
from rtca.stack.process import Supervisor
from waiting import wait_for

pytestmark = pytest.mark.stack


@pytest.fixture
def name(stack_up: Settings, unique: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An ingest service name of the test's own, on topics of its own (the child inherits them); stopped after."""
    monkeypatch.setenv("RTCA_TOPICS__RAW", f"test-raw-{unique}")
    monkeypatch.setenv("RTCA_TOPICS__FEED_HEALTH", f"test-health-{unique}")
    yield f"ingest-{unique}"
    stop_ingest(stack_up, name=f"ingest-{unique}")
    assert Supervisor(stack_up).process(f"ingest-{unique}") is None


#: Nothing listens on port 9: an ingest of it only retries, and publishes nothing.
NOWHERE = ["--url", "ws://127.0.0.1:9", "--products", "TEST-USD"]


def test_start_leaves_a_running_ingest_alone_and_restarts_one_with_other_flags(stack_up: Settings,
                                                                               name: str) -> None:
    first, done = start_ingest(stack_up, NOWHERE, name=name)
    assert done == "started" and first.pid is not None
    again, done = start_ingest(stack_up, NOWHERE, name=name)
    assert (done, again.pid) == ("running", first.pid)
    spelled_out, done = start_ingest(stack_up, [*NOWHERE, "--source", "coinbase"], name=name)
    assert (done, spelled_out.pid) == ("running", first.pid)  # the default, spelled out: the same options
    other, done = start_ingest(stack_up, [*NOWHERE, "--channels", "ticker"], name=name)
    assert done == "restarted" and other.pid not in (None, first.pid)
    process = Supervisor(stack_up).process(name)
    assert process is not None and process.cmdline()[-2:] == ["--channels", "ticker"]


def test_two_starts_at_once_start_one_ingest(stack_up: Settings, name: str) -> None:
    """Both found no ingest and started one each: the second pid file replaced the first, and that ingest published
    every frame again, out of `rtca down`'s reach (found by review). The run directory's lock makes one wait."""
    import threading

    import psutil

    barrier, said = threading.Barrier(2), []

    def start() -> None:
        barrier.wait()
        said.append(start_ingest(stack_up, NOWHERE, name=name)[1])

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(said) == ["running", "started"]
    ours = [p for p in psutil.Process().children(recursive=True) if "ws://127.0.0.1:9" in " ".join(p.cmdline())]
    assert len(ours) == 1


def test_start_fails_naming_the_log_when_the_ingest_ends_at_once(stack_up: Settings, name: str) -> None:
    with pytest.raises(ServiceError, match="exited during start-up") as failure:
        start_ingest(stack_up, ["--source", "replay", "--capture", f"/nonexistent-{name}.capture"], name=name)
    assert "capture not found" in Supervisor(stack_up).log_file(name).read_text()
    assert f"rtca logs {name}" in str(failure.value.hint)


def test_a_short_ingest_that_ends_well_is_never_a_failed_start(stack_up: Settings, name: str) -> None:
    # it may end before or after the start sees it publish: "finished" or "started", never an error
    _, done = start_ingest(stack_up, ["--source", "simulator", "--products", "TEST-USD", "--max-messages", "20",
                                      "--rate", "200"], name=name)
    assert done in ("started", "finished")
    wait_for(lambda: Supervisor(stack_up).process(name) is None, timeout=30, what="the short ingest ends")
    assert '"ended": "max_messages"' in Supervisor(stack_up).log_file(name).read_text()


def test_invalid_options_are_refused_before_a_running_ingest_is_touched(stack_up: Settings, name: str) -> None:
    first, _ = start_ingest(stack_up, NOWHERE, name=name)
    with pytest.raises(ConfigError, match="invalid ingest options"):
        start_ingest(stack_up, ["--source", "cionbase"], name=name)
    process = Supervisor(stack_up).process(name)
    assert process is not None and process.pid == first.pid  # still the one that ran


def test_status_shows_how_an_ingest_ended_until_it_is_stopped(stack_up: Settings, name: str) -> None:
    start_ingest(stack_up, ["--source", "simulator", "--products", "TEST-USD", "--max-messages", "20",
                            "--rate", "200"], name=name)  # fmt: skip
    wait_for(lambda: Supervisor(stack_up).process(name) is None, timeout=30, what="the short ingest ends")
    ended = ended_ingest(stack_up, name=name)
    assert ended is not None and ended.note.startswith("finished (max_messages)")
    assert stop_ingest(stack_up, name=name) is False  # it was not running; no longer shown as ended
    assert ended_ingest(stack_up, name=name) is None

    with pytest.raises(ServiceError):
        start_ingest(stack_up, ["--source", "replay", "--capture", f"/nonexistent-{name}.capture"], name=name)
    ended = ended_ingest(stack_up, name=name)
    assert ended is not None and ended.note.startswith("exited: ") and "capture not found" in ended.note


def test_a_running_ingest_under_other_settings_is_restarted(stack_up: Settings, name: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The same flags with another raw topic (the runbook's `env`) is another ingest: leaving the running one alone
    reported `running` while it published to the old topic."""
    first, _ = start_ingest(stack_up, NOWHERE, name=name)
    monkeypatch.setenv("RTCA_TOPICS__RAW", f"{first.url.rsplit('/', 1)[-1]}-other")
    other, done = start_ingest(stack_up, NOWHERE, name=name)
    assert done == "restarted" and other.pid not in (None, first.pid)
    process = Supervisor(stack_up).process(name)
    assert process is not None and process.environ()["RTCA_TOPICS__RAW"].endswith("-other")
    again, done = start_ingest(stack_up, NOWHERE, name=name)
    assert (done, again.pid) == ("running", other.pid)


def test_an_unknown_channel_is_refused_before_a_running_ingest_is_touched(stack_up: Settings, name: str) -> None:
    first, _ = start_ingest(stack_up, NOWHERE, name=name)
    with pytest.raises(ConfigError, match="unknown channel"):
        start_ingest(stack_up, [*NOWHERE, "--channels", "tickr"], name=name)
    process = Supervisor(stack_up).process(name)
    assert process is not None and process.pid == first.pid


def test_a_product_the_capture_lacks_is_refused_before_a_running_ingest_is_touched(stack_up: Settings,
                                                                                   name: str) -> None:  # fmt: skip
    """The replay server would refuse it ("Failed to subscribe") only once the running ingest had been replaced."""
    first, _ = start_ingest(stack_up, NOWHERE, name=name)
    with pytest.raises(ConfigError, match="FOO-USD not in the capture"):
        start_ingest(stack_up, ["--source", "replay", "--products", "FOO-USD"], name=name)
    process = Supervisor(stack_up).process(name)
    assert process is not None and process.pid == first.pid


def test_a_refused_subscription_ends_the_ingest_and_the_runbook_check_says_why_at_once(stack_up: Settings,
                                                                                       name: str) -> None:  # fmt: skip
    """It ran on, `healthy`, publishing nothing; runbook 40 then waited its whole 180 s for rows and failed
    without the reason, which was in the ingest's log only. Now the start fails with the reason if the refusal
    comes during it, else the runbook's check does, at once."""

    since = int(time.time() * 1000)
    refused = ["--source", "simulator", "--products", "TEST-USD", "--channels", "ticker,full"]  # full: authenticated
    reason = "refused the subscription: Failed to subscribe: full requires authentication"
    try:
        state, done = start_ingest(stack_up, refused, name=name)
    except ServiceError as exc:
        assert reason in str(exc)
    else:
        print(describe_start(stack_up, state, done))
        with pytest.raises(runbook.RunbookCheckFailed, match=reason):
            runbook.check_ingest(stack_up, ["ticker", "full"], received_since_ms=since, timeout=600, name=name)
    ended = ended_ingest(stack_up, name=name)
    assert ended is not None and reason in ended.note


def test_an_ingest_that_cannot_reach_its_source_is_not_healthy_and_the_runbook_check_says_why(
        stack_up: Settings, name: str) -> None:  # fmt: skip
    """Runbook 40 with `-p source coinbase` on a machine without the internet waited 180 s and failed on a row
    count, while `rtca status` said `healthy`; the cause ("cannot connect: gaierror") was in the ingest's log only."""
    since = int(time.time() * 1000)
    start_ingest(stack_up, NOWHERE, name=name)
    with pytest.raises(runbook.RunbookCheckFailed, match="cannot reach its source") as failed:
        runbook.check_ingest(stack_up, ["ticker"], received_since_ms=since, timeout=600, name=name)
    message = str(failed.value)
    print(f"runbook 40's check: {message}")
    assert "ws://127.0.0.1:9: cannot connect: " in message and "-p source replay" in message
    state = ingest_state(stack_up, name=name)
    assert state is not None and not state.healthy and "cannot connect" in state.note
    assert Supervisor(stack_up).process(name) is not None  # it keeps trying


def test_a_start_says_whether_market_data_flows_not_only_that_the_process_runs(stack_up: Settings,
                                                                              name: str) -> None:
    """`rtca ingest start` offline said "healthy" for live Coinbase, which it could not reach."""
    from rtca.feed.service import receiving

    start_ingest(stack_up, NOWHERE, name=name)
    flowing, said = receiving(stack_up, name=name, timeout=60)
    assert not flowing and said.startswith("not receiving yet: ws://127.0.0.1:9: cannot connect"), said
    start_ingest(stack_up, ["--source", "simulator", "--products", "TEST-USD", "--rate", "50"], name=name)
    assert receiving(stack_up, name=name, timeout=60) == (True, "receiving market data")

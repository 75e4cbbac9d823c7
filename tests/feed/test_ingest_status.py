"""`rtca status` for an ingest that is not running: never started, stopped by rtca, or ended by itself (a crash
must not look like an ingest never started)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from rtca.cli import _print_states
from rtca.feed.service import NAME, ended_ingest, ingest_state, stop_ingest
from rtca.settings import Settings, load_settings
from rtca.stack.process import Launch, Service, Supervisor
from waiting import wait_for


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(backend="external", run_dir=tmp_path)


def stand_in(settings: Settings, code: str) -> None:
    """An ingest that runs `code` instead, under the supervisor as `rtca ingest start` runs it."""
    Supervisor(settings).start(Service(NAME, lambda: Launch([sys.executable, "-c", code]), url=""))


def test_never_started_and_stopped_ingests_are_not_shown(settings: Settings) -> None:
    assert ended_ingest(settings) is None
    stand_in(settings, "import time; print('publishing', flush=True); time.sleep(300)")
    assert ingest_state(settings) is not None and ended_ingest(settings) is None  # running: not ended
    assert stop_ingest(settings) is True
    assert ingest_state(settings) is None and ended_ingest(settings) is None


def test_a_killed_ingest_is_shown_as_exited(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    stand_in(settings, "import time; print('pub' 'lishing', flush=True); time.sleep(300)")  # not in its argv
    process = Supervisor(settings).process(NAME)
    assert process is not None
    wait_for(lambda: "\npublishing" in Supervisor(settings).log_file(NAME).read_text(), timeout=10,
             what="the ingest to say it publishes")
    os.kill(process.pid, signal.SIGKILL)
    wait_for(lambda: Supervisor(settings).process(NAME) is None, timeout=10, what="the ingest to die")
    ended = ended_ingest(settings)
    assert ended is not None and ended.pid is None and ended.note == "exited: publishing; `rtca logs ingest`"
    _print_states([ended])
    assert "ended" in capsys.readouterr().out.splitlines()[1]
    assert stop_ingest(settings) is False and ended_ingest(settings) is None  # acknowledged by `ingest stop`


def test_an_ingest_that_failed_quotes_its_error_not_the_hint(settings: Settings) -> None:
    stand_in(settings, 'import sys; print("error: capture not found: x", file=sys.stderr); print("  hint: y"); '
                       'sys.exit(2)')
    wait_for(lambda: Supervisor(settings).process(NAME) is None, timeout=10, what="the ingest to end")
    ended = ended_ingest(settings)
    assert ended is not None and ended.note == "exited: error: capture not found: x; `rtca logs ingest`"


def test_an_ingest_that_finished_says_why(settings: Settings) -> None:
    stand_in(settings, 'print("publishing"); print(\'{"source": "replay", "ended": "end_of_stream"}\')')
    wait_for(lambda: Supervisor(settings).process(NAME) is None, timeout=10, what="the ingest to end")
    ended = ended_ingest(settings)
    assert ended is not None and ended.note == "finished (end_of_stream); `rtca logs ingest`"


def test_an_ingest_stopped_by_a_signal_is_not_shown(settings: Settings) -> None:
    stand_in(settings, 'print(\'{"source": "replay", "ended": "stopped"}\')')  # its report after a SIGTERM
    wait_for(lambda: Supervisor(settings).process(NAME) is None, timeout=10, what="the ingest to end")
    assert ended_ingest(settings) is None


def test_an_ingest_that_logged_much_before_failing_is_still_shown(settings: Settings) -> None:
    stand_in(settings, 'import sys; [print("BTC-USD: missed trades 11..20 (10)") for _ in range(3000)]; '
                       'print("error: the feed went away", file=sys.stderr); sys.exit(1)')  # 100 KB, over the tail
    wait_for(lambda: Supervisor(settings).process(NAME) is None, timeout=10, what="the ingest to end")
    ended = ended_ingest(settings)
    assert ended is not None and ended.note.startswith("exited: error: the feed went away")


def test_data_flows_once_the_ingest_says_so_since_its_last_start(settings: Settings) -> None:
    """Runbook 40's check counted the ticker rows of any ingest before this one's subscription was refused."""
    from rtca.feed.ingest import DATA_FLOWS
    from rtca.feed.service import data_flows

    log = Supervisor(settings).log_file(NAME)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = f"=== 2026-11-30 09:00:00 starting {NAME}: python -m rtca.cli ingest run\n"
    log.write_text(start + "ingesting replay (ws://x) into t\n")
    assert not data_flows(settings)
    log.write_text(start + f"ingesting replay (ws://x) into t\n{DATA_FLOWS} from ws://x\n")
    assert data_flows(settings)
    log.write_text(start + f"{DATA_FLOWS} from ws://x\n" + start)  # started again since
    assert not data_flows(settings)
    log.write_text(start + f"{DATA_FLOWS} from ws://x\n" + "a gap warning\n" * 10_000)  # the start is long past
    assert data_flows(settings)


def test_the_same_ingest_started_through_another_name_of_the_interpreter_is_left_running(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rtca ingest start` (the script: python3.11) then runbook 40 (`python -m rtca.cli`) stopped and restarted it."""
    from pathlib import Path

    from rtca.feed import service

    args = ["--source", "simulator"]
    python = Path(settings.rtca_command[0])
    other = str(python.with_name("python3.11" if python.name != "python3.11" else "python"))

    class Running:
        @staticmethod
        def cmdline() -> list[str]:
            return [other, "-m", "rtca.cli", "ingest", "run", *args]

        @staticmethod
        def environ() -> dict[str, str]:
            return dict(os.environ)

    done: list[str] = []
    monkeypatch.setattr(service.Supervisor, "process", lambda self, name: Running())
    monkeypatch.setattr(service.Supervisor, "stop", lambda self, name: done.append("stop"))
    monkeypatch.setattr(service.Supervisor, "state", lambda self, s: None)
    assert service.start_ingest(settings, args)[1] == "running" and done == []

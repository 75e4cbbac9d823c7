"""What the supervised ingest's log tells a start: read off log lines as `rtca ingest run` writes them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from rtca.feed import connection
from rtca.feed.service import LOG_FORMAT, connection_trouble
from rtca.settings import Settings
from rtca.stack.process import STARTING, Supervisor
from waiting import wait_for


def log_line(logger: logging.Logger, message: str) -> str:
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, None, None)
    return logging.Formatter(LOG_FORMAT).format(record)


def test_connection_trouble_says_the_message_without_the_log_lines_prefix(tmp_path: Path) -> None:
    """The ingest's log lines carry time, level and logger since `rtca ingest run` logs rtca's INFO lines: the
    start then said "not receiving yet: 2026-12-01 01:39:50,756 WARNING rtca.feed.connection: ws://...: cannot
    connect" instead of the message."""
    settings = Settings(run_dir=tmp_path)
    log = Supervisor(settings).log_file("ingest-x")
    log.parent.mkdir(parents=True, exist_ok=True)
    refused = "ws://127.0.0.1:9: cannot connect: ConnectionRefusedError: [Errno 111] Connect call failed"
    log.write_text("\n".join([
        f"=== 2026-12-01 01:39:49 {STARTING} ingest-x: rtca ingest run --url ws://127.0.0.1:9",
        log_line(logging.getLogger("rtca.feed.ingest"), "ingesting url (ws://127.0.0.1:9) into raw"),
        log_line(connection.log, refused.replace("111", "110")),
        log_line(connection.log, refused),
    ]) + "\n")
    trouble = connection_trouble(settings, name="ingest-x")
    assert trouble is not None and (trouble.last_error, trouble.attempts) == (refused, 2)
    assert trouble.describe().startswith(f"{refused} (2 failed attempt(s) in a row")


def test_a_stopping_ingest_is_given_the_time_of_both_its_drains(tmp_path: Path) -> None:
    """Stops killed it after 30 s while it waited up to 60 s for Pulsar to confirm its frames, and 60 more for its
    health records: what Pulsar had not confirmed was lost, with no report (found by review). A stand-in ingest
    that takes 31 s to exit after SIGTERM is waited for."""
    from rtca.feed.ingest import DRAIN_TIMEOUT_S
    from rtca.feed.service import STOP_TIMEOUT_S, stop_ingest
    from rtca.stack.process import Launch, Service

    assert STOP_TIMEOUT_S > 2 * DRAIN_TIMEOUT_S
    settings = Settings(run_dir=tmp_path)  # type: ignore[call-arg]
    supervisor = Supervisor(settings)
    slow = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(31), print('drained', flush=True), sys.exit(0)))\n"
            "print('ingesting', flush=True)\ntime.sleep(120)")  # fmt: skip
    supervisor.start(Service("ingest", lambda: Launch([sys.executable, "-u", "-c", slow]), url="", may_finish=True))
    wait_for(lambda: "\ningesting\n" in supervisor.log_file("ingest").read_text(), timeout=10, what="it runs")
    assert stop_ingest(settings)
    assert "\ndrained\n" in supervisor.log_file("ingest").read_text()

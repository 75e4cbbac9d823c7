"""The recorder writes a session in the capture format, which replays to the same frames."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rtca.feed.capture import Capture, Opened, Sent, read_capture
from rtca.feed.protocol import parse_frame
from rtca.feed.recorder import RecordReport, _one_line, record_session
from rtca.feed.replay import replay_server
from rtca.feed.server import Faults
from rtca.feed.simulator import simulator_server

Run = Callable[..., Any]


def test_record_a_replay_to_the_same_frames(run: Run, small: Capture, tmp_path: Path) -> None:
    async def session() -> RecordReport:
        async with replay_server(small, speed="max") as server:
            return await record_session(tmp_path / "copy.capture", url=server.url, products=small.products,
                                        channels=small.channels)

    report = run(session())
    print(report)
    copy = read_capture(report.path)
    assert report.ended == "end_of_stream" and report.frames == len(copy.frames) == 1 + 1497
    assert isinstance(copy.events[0], Opened) and isinstance(copy.events[1], Sent)
    assert [f.text for f in copy.frames[1:]] == [f.text for f in small.frames if "subscriptions" not in f.text]
    assert copy.counts()["subscriptions"] == 1


def test_record_writes_every_connection(run: Run, small: Capture, tmp_path: Path) -> None:
    async def session() -> RecordReport:
        async with replay_server(small, speed="max", faults=Faults(drop_after=300)) as server:
            return await record_session(tmp_path / "two.capture", url=server.url, products=small.products,
                                        channels=small.channels)

    report = run(session())
    events = read_capture(report.path).events
    assert report.connections == 2
    assert sum(isinstance(e, Opened) for e in events) == 2 and sum(isinstance(e, Sent) for e in events) == 2


def test_record_the_simulator_for_a_number_of_frames(run: Run, tmp_path: Path) -> None:
    async def session() -> RecordReport:
        async with simulator_server(["AAA-USD", "BBB-USD"], rate=None, seed=4) as server:
            return await record_session(tmp_path / "sim.capture", url=server.url, products=["AAA-USD", "BBB-USD"],
                                        channels=["level2_batch", "matches", "ticker", "heartbeat"],
                                        max_messages=300)

    report = run(session())
    capture = read_capture(report.path)
    assert report.ended == "max_messages" and report.data == 300 and len(capture.frames) == 1 + 300  # subscriptions
    assert all(parse_frame(f.text) for f in capture.frames)
    assert set(capture.channels) == {"level2", "matches", "ticker", "heartbeat"}


def test_frames_that_cannot_be_one_line() -> None:
    assert _one_line(b'{"a": 1}') == '{"a": 1}'
    assert _one_line(b'{"a":\n 1}') == '{"a":1}'
    assert _one_line(b"two\nlines, not json") is None
    assert _one_line(b"\xff\xfe") is None


def test_a_session_the_server_refused_records_no_market_data_and_says_why(run: Run, small: Capture,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    """Coinbase answers an unknown product or an authenticated-only channel with an `error` frame: counted as a
    recorded frame, it made `rtca record` succeed with a capture nothing can replay."""
    async def session() -> RecordReport:
        async with replay_server(small, speed="max") as server:
            return await record_session(tmp_path / "refused.capture", url=server.url, products=["BTC-XYZ"],
                                        channels=["ticker"], duration=1.5)  # fmt: skip

    report = run(session())
    print(report, report.errors)
    assert report.frames >= 1 and report.data == 0
    assert report.errors and "BTC-XYZ is not a valid product" in report.errors[0]


def test_a_full_disk_while_connecting_stops_the_recorder_instead_of_reconnecting(run: Run, small: Capture) -> None:
    """The connection lines are written when a connection opens: their OSError read as a connection failure, and
    the recorder retried forever."""
    async def session() -> RecordReport:
        async with replay_server(small, speed="max") as server:
            return await record_session("/dev/full", url=server.url, products=small.products,
                                        channels=small.channels, duration=10)  # fmt: skip

    with pytest.raises(OSError) as failed:
        run(session())
    assert failed.value.errno == errno.ENOSPC


def test_max_messages_counts_market_data_not_the_servers_answer(run: Run, small: Capture, tmp_path: Path) -> None:
    """`--max-messages 1` stopped at the subscriptions answer, then failed as "nothing recorded"."""
    async def session() -> RecordReport:
        async with replay_server(small, speed="max") as server:
            return await record_session(tmp_path / "one.capture", url=server.url, products=small.products,
                                        channels=small.channels, max_messages=1)  # fmt: skip

    report = run(session())
    assert report.ended == "max_messages" and report.data == 1 and report.frames == 2

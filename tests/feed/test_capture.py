"""The capture format: the shipped capture's contents, lossless round trips, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtca.errors import ConfigError
from rtca.feed.capture import (
    SHIPPED_CAPTURE,
    Capture,
    CaptureWriter,
    Opened,
    Received,
    Sent,
    parse_line,
    read_capture,
    write_capture,
)


def test_shipped_capture_holds_what_its_readme_says(shipped: Capture) -> None:
    counts = shipped.counts()
    print("counts:", dict(counts), "duration:", shipped.duration)
    assert counts == {"l2update": 9719, "ticker": 107, "match": 97, "last_match": 10, "snapshot": 10,
                      "subscriptions": 3}
    assert len(shipped.frames) == 9946
    assert sorted(shipped.products) == sorted(["SKL-USD", "SKL-BTC", "SKL-GBP", "BAND-GBP", "BAND-BTC", "NMR-EUR",
                                               "YFI-BTC", "DASH-BTC", "NU-GBP", "CRV-EUR"])
    assert shipped.channels == ("level2", "ticker", "matches")
    assert 30.7 < shipped.duration < 30.9
    assert isinstance(shipped.events[0], Opened) and isinstance(shipped.events[1], Sent)


def test_shipped_capture_has_its_attribution() -> None:
    readme = (SHIPPED_CAPTURE.parent / "README.md").read_text()
    assert "Bryant Moscon" in readme and "cryptofeed" in readme and "Copyright (C) 2017-2025" in readme


def test_rewriting_the_shipped_capture_gives_the_same_text(shipped: Capture, tmp_path: Path) -> None:
    copy = write_capture(tmp_path / "copy.capture", shipped.events)
    original = [line for line in SHIPPED_CAPTURE.read_text().splitlines() if line]
    assert copy.read_text().splitlines() == original


def test_round_trip_of_every_event_kind(tmp_path: Path) -> None:
    events = (
        Opened("ws://127.0.0.1:1234", 1700000000.25),
        Sent("ws://127.0.0.1:1234", 1700000000.5, '{"type":"subscribe","product_ids":["A-B"],"channels":["ticker"]}'),
        Received(1700000000.123456, '{"type":"heartbeat","note":"a: colon and <- arrow"}'),
        Received(1700000001.0, "not json: kept as is"),
    )
    path = write_capture(tmp_path / "events.capture", events)
    assert read_capture(path).events == events


@pytest.mark.parametrize("line", ["garbage", "1.5 no colon", "ws://x <-> notanumber", "abc: {}"])
def test_bad_line_names_file_and_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "bad.capture"
    path.write_text('1700000000.0: {"type":"x"}\n' + line + "\n")
    with pytest.raises(ConfigError, match=r"bad\.capture:2"):
        read_capture(path)


def test_parse_line_forms() -> None:
    assert parse_line("wss://h <-> 1.5") == Opened("wss://h", 1.5)
    assert parse_line('wss://h <- 2.5: {"a": 1}') == Sent("wss://h", 2.5, '{"a": 1}')
    assert parse_line('3.5: {"b": ": x"}') == Received(3.5, '{"b": ": x"}')


def test_missing_capture_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="capture not found"):
        read_capture(tmp_path / "nope.capture")


def test_writer_refuses_line_breaks(tmp_path: Path) -> None:
    with CaptureWriter(tmp_path / "w.capture") as writer, pytest.raises(ValueError):
        writer.write(Received(1.0, "two\nlines"))


def test_a_capture_that_is_not_utf8_is_a_config_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.capture"
    path.write_bytes(b'1.0: {"type":"heartbeat"}\n1.5: {"type":"\xff"}\n')
    with pytest.raises(ConfigError, match=r"bad.capture:2: not UTF-8"):
        read_capture(path)


@pytest.mark.parametrize("line", ["nan: {}", "inf: {}", "ws://x <- -inf: {}", "ws://x <-> nan"])
def test_a_time_that_is_no_number_is_a_bad_line(tmp_path: Path, line: str) -> None:
    """`nan` and `inf` parse as floats; replayed, they crashed the server's pump and left its clients hanging."""
    path = tmp_path / "nan.capture"
    path.write_text(f'1.0: {{"type":"ticker"}}\n{line}\n')
    with pytest.raises(ConfigError, match=r"nan.capture:2: not a capture line"):
        read_capture(path)


def test_the_writer_creates_the_file_with_its_first_event_only(tmp_path: Path) -> None:
    """A recorder that never connects must leave an earlier capture of the same name (`--force`) as it was."""
    path = tmp_path / "kept.capture"
    path.write_text("1.0: {}\n")
    with CaptureWriter(path, lazy=True) as writer:
        assert not writer.written
    assert path.read_text() == "1.0: {}\n"
    with CaptureWriter(path, lazy=True) as writer:
        writer.write(Received(2.0, "{}"))
    assert path.read_text() == "2.0: {}\n"
    assert write_capture(path, []) == path and path.read_text() == ""  # not lazy: an empty capture is a file

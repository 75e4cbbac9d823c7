"""The capture format: a websocket session as text, one event a line (the format of cryptofeed's sample data).

    <url> <-> <epoch>               a connection opened
    <url> <- <epoch>: <json>        a frame the client sent (subscribe)
    <epoch>: <json>                 a frame received; <epoch> = local receive time in seconds

Epochs are written with `repr(float)`, so reading and writing a capture gives back the same text. Frames are
kept as the exact text received; a frame with a line break cannot be stored (the recorder re-serialises JSON
frames without the break and skips anything else).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO

import orjson

from rtca.errors import ConfigError
from rtca.feed.protocol import CHANNEL_OF_TYPE

SHIPPED_CAPTURE = Path(__file__).resolve().parent / "captures" / "coinbase-2021-04-17-ws.capture"
"""A real 30 s recording shipped with the package (attribution in captures/README.md)."""


@dataclass(frozen=True, slots=True)
class Opened:
    url: str
    at: float


@dataclass(frozen=True, slots=True)
class Sent:
    url: str
    at: float
    text: str


@dataclass(frozen=True, slots=True)
class Received:
    at: float
    text: str


CaptureEvent = Opened | Sent | Received


@dataclass(frozen=True)
class Capture:
    """A whole capture in memory (the shipped one is 1.6 MB)."""

    events: tuple[CaptureEvent, ...]
    path: Path | None = None

    @cached_property
    def frames(self) -> tuple[Received, ...]:
        return tuple(event for event in self.events if isinstance(event, Received))

    @cached_property
    def _summary(self) -> tuple[Counter[str], tuple[str, ...], tuple[str, ...]]:
        """Frame counts per type, products and channels in order of first appearance (one pass)."""
        types: Counter[str] = Counter()
        products: dict[str, None] = {}
        channels: dict[str, None] = {}
        for frame in self.frames:
            try:
                obj = orjson.loads(frame.text)
            except orjson.JSONDecodeError:
                types["malformed"] += 1
                continue
            kind = obj.get("type") if isinstance(obj, dict) else None
            types[kind if isinstance(kind, str) else "malformed"] += 1
            if kind in CHANNEL_OF_TYPE:
                channels[CHANNEL_OF_TYPE[kind]] = None
                if isinstance(obj.get("product_id"), str):
                    products[obj["product_id"]] = None
        return types, tuple(products), tuple(channels)

    def counts(self) -> Counter[str]:
        """Received frames per `type` ("malformed" for frames without one)."""
        return Counter(self._summary[0])

    @property
    def products(self) -> tuple[str, ...]:
        """The products whose market data the capture holds: a replay's default subscription."""
        return self._summary[1]

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels the capture's frames come from (level2, ticker, matches, ...)."""
        return self._summary[2]

    @property
    def duration(self) -> float:
        """Seconds from the first received frame to the last."""
        return self.frames[-1].at - self.frames[0].at if self.frames else 0.0


def parse_line(line: str) -> CaptureEvent:
    """One capture line -> event; `ValueError` when it is none of the three forms."""
    head, sep, text = line.partition(": ")
    parts = head.split(" ")
    if len(parts) == 1 and sep:
        return Received(_epoch(parts[0]), text)
    if len(parts) == 3 and parts[1] == "<-" and sep:
        return Sent(parts[0], _epoch(parts[2]), text)
    parts = line.split(" ")
    if len(parts) == 3 and parts[1] == "<->":
        return Opened(parts[0], _epoch(parts[2]))
    raise ValueError("not a capture line")


def _epoch(text: str) -> float:
    """Epoch seconds; `nan` and `inf` parse as floats but are no time (they broke the replay's pacing)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a time: {text}")
    return value


def format_event(event: CaptureEvent) -> str:
    match event:
        case Received(at, text):
            return f"{at!r}: {text}"
        case Sent(url, at, text):
            return f"{url} <- {at!r}: {text}"
        case Opened(url, at):
            return f"{url} <-> {at!r}"
    raise TypeError(f"not a capture event: {event!r}")


def iter_capture(path: Path) -> Iterator[CaptureEvent]:
    """Events of a capture file, lazily; blank lines are skipped."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                                  hint="a capture is a UTF-8 text file, as `rtca record` writes it") from None
            if not line:
                continue
            try:
                yield parse_line(line)
            except ValueError:
                raise ConfigError(
                    f"{path}:{number}: not a capture line: {line[:80]!r}",
                    hint="a capture has `<epoch>: <json>`, `<url> <- <epoch>: <json>` or `<url> <-> <epoch>` lines",
                ) from None


def read_capture(path: Path | str) -> Capture:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"capture not found: {path}", hint=f"the shipped capture is {SHIPPED_CAPTURE}")
    return Capture(tuple(iter_capture(path)), path)


class CaptureWriter:
    """Writes events to a capture file, line by line (flushed, so a killed recorder leaves a valid file). With
    `lazy`, the file is created (or replaced) by the first event only: a recorder that never connects leaves an
    earlier capture of the same name as it was."""

    def __init__(self, path: Path | str, *, lazy: bool = False) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None
        if not lazy:
            self._open()

    def _open(self) -> IO[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8", buffering=1)
        return self._file

    def write(self, event: CaptureEvent) -> None:
        text = format_event(event)
        if "\n" in text or "\r" in text:
            raise ValueError("a capture event cannot contain a line break")
        (self._file or self._open()).write(text + "\n")

    @property
    def written(self) -> bool:
        return self._file is not None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_capture(path: Path | str, events: Iterable[CaptureEvent]) -> Path:
    with CaptureWriter(path) as writer:
        for event in events:
            writer.write(event)
    return writer.path

"""Replay a capture through a local websocket server that speaks the exchange's protocol.

Frames keep their recorded spacing divided by `speed` (None: as fast as the client reads). The capture's own
`subscriptions` and `error` frames are not replayed: the server answers subscriptions itself. Frames are sent as
recorded, byte for byte, unless something must change:
- looping: each pass shifts `time` forward by the capture's period and offsets `sequence` and `trade_id` by their
  per-product span, so that they keep increasing (trade ids stay consecutive across passes). A frame older than
  the capture (the `last_match` and first ticker a subscription starts with, replayed at each pass) is sent no
  earlier than the latest time the earlier passes sent for its product and channel, so times never go back from
  one pass to the next. A counter the offset would take to 2**63 or beyond, or a time past the year 9999, is sent
  as recorded (the frame's other fields still move);
- `shift_time`: times move by (now - capture start), so that they look live and freshness downstream means
  something (at speeds other than 1x they drift from the wall clock);
- the `skip_trade_ids` / `sequence_jump` faults.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from rtca.errors import ConfigError
from rtca.feed.book import L2Book
from rtca.feed.capture import SHIPPED_CAPTURE, Capture, read_capture
from rtca.feed.protocol import CHANNEL_OF_TYPE, INT_LIMIT, dumps, epoch_us, format_time_us, parse_time
from rtca.feed.server import Faults, FeedServer, Outgoing, ServerStats, serve_foreground

_NOT_REPLAYED = frozenset({"subscriptions", "error"})
_COUNTERS = ("sequence", "trade_id", "last_trade_id")


def parse_speed(value: float | str | None) -> float | None:
    """`max` (or None) -> None (no pacing); `1`, `10`, `2.5x` -> a positive factor."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "max"):
        return None
    try:
        speed = float(value.removesuffix("x") if isinstance(value, str) else value)
    except ValueError:
        speed = 0.0
    if not speed > 0 or speed == float("inf"):
        raise ConfigError(f"invalid speed {value!r}", hint="use a positive factor such as 1, 10 or 2.5, or max")
    return speed


@dataclass(frozen=True, slots=True)
class _Entry:
    offset: float
    """Seconds since the capture's first frame."""
    text: str
    obj: dict[str, Any] | None
    type: str | None
    channel: str | None
    product: str | None
    time_field: str | None
    time_us: int | None


def _entries(capture: Capture) -> list[_Entry]:
    start = capture.frames[0].at if capture.frames else 0.0
    entries = []
    for frame in capture.frames:
        try:
            obj = orjson.loads(frame.text)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            entries.append(_Entry(frame.at - start, frame.text, None, None, None, None, None, None))
            continue
        kind = obj.get("type") if isinstance(obj.get("type"), str) else None
        if kind in _NOT_REPLAYED:
            continue
        product = obj.get("product_id") if isinstance(obj.get("product_id"), str) else None
        time_field = "timestamp" if kind == "auction" else "time"
        try:
            time_us: int | None = epoch_us(parse_time(obj.get(time_field)))
        except (TypeError, ValueError):
            time_field, time_us = None, None
        entries.append(_Entry(
            frame.at - start, frame.text, obj, kind, CHANNEL_OF_TYPE.get(kind or ""), product, time_field, time_us,
        ))
    return entries


def _spans(entries: list[_Entry]) -> dict[tuple[str, str], int]:
    """(product, counter) -> max - min + 1 of that counter: the offset one loop adds."""
    low: dict[tuple[str, str], int] = {}
    high: dict[tuple[str, str], int] = {}
    for entry in entries:
        if entry.obj is None or entry.product is None:
            continue
        for name in _COUNTERS:
            value = entry.obj.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                key = (entry.product, "trade_id" if name == "last_trade_id" else name)
                low[key] = min(low.get(key, value), value)
                high[key] = max(high.get(key, value), value)
    return {key: high[key] - low[key] + 1 for key in low}


class ReplaySource:
    """A `FrameSource` playing a capture; keeps the book, last ticker and last match for new subscribers."""

    def __init__(
        self,
        capture: Capture,
        *,
        speed: float | None = 1.0,
        loop: bool = False,
        shift_time: bool = False,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._entries = _entries(capture)
        if not self._entries:
            raise ConfigError(f"capture {capture.path} has no frames to replay")
        self.products = frozenset(e.product for e in self._entries if e.product is not None)
        self.speed = speed
        self.loop = loop
        self.shift_time = shift_time
        self.faults = faults or Faults()
        self._clock = clock
        self._spans = _spans(self._entries)
        pairs = zip(self._entries, self._entries[1:], strict=False)
        gaps = sorted(gap for a, b in pairs if (gap := b.offset - a.offset) > 0)
        # One pass lasts the capture plus a typical gap, so the next pass does not start on the last frame's time;
        # from the earliest to the latest receive time (a clock step while recording can put them out of order).
        offsets = [e.offset for e in self._entries]
        self._period = max(offsets) - min(0.0, min(offsets)) + (gaps[len(gaps) // 2] if gaps else 0.001)
        self._start_us = int(capture.frames[0].at * 1e6)
        self.passes = 0
        self._index = 0
        self._shift_us = 0
        self._base = 0.0
        self._fault_offsets: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._matches_seen: defaultdict[str, int] = defaultdict(int)
        self._sequenced = 0
        self._books: defaultdict[str, L2Book] = defaultdict(L2Book)
        self._last: dict[tuple[str, str], Outgoing] = {}
        self._last_match: dict[str, dict[str, Any]] = {}
        self._last_status: Outgoing | None = None
        self._sent_us: dict[tuple[str, str | None], int] = {}
        """(product, channel) -> the latest time sent so far."""
        self._floor_us: dict[tuple[str, str | None], int] = {}
        """(product, channel) -> the latest time the earlier passes sent: no frame of this pass goes before it."""

    # --- FrameSource -------------------------------------------------------------------------------------------
    async def next(self) -> Outgoing | None:
        if self._index == len(self._entries):
            if not self.loop:
                return None
            self.passes += 1
            self._index = 0
        entry = self._entries[self._index]
        if self.speed is not None:
            delay = self._base + self._position() / self.speed - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)
        if self._index == 0:
            self._start_pass()
        self._index += 1
        self._count_faults(entry)
        frame, obj = self._render(entry)
        self._remember(frame, obj)
        return frame

    def state(self, channel: str, product: str | None) -> list[Outgoing]:
        if channel == "level2" and product in self._books:
            return [Outgoing(dumps(self._books[product].snapshot(product)), "snapshot", channel, product)]
        if channel == "matches" and product in self._last_match:
            text = dumps({**self._last_match[product], "type": "last_match"})
            return [Outgoing(text, "last_match", channel, product)]
        if channel == "status":
            return [self._last_status] if self._last_status else []
        last = self._last.get((channel, product or ""))
        return [last] if last else []

    def resume(self) -> None:
        self._base = asyncio.get_running_loop().time() - self._position() / (self.speed or 1.0)
        if self.shift_time:
            self._shift_us = max(self._shift_us, self._now_shift())

    # --- internals ---------------------------------------------------------------------------------------------
    def _position(self) -> float:
        """Capture seconds from the start of the first pass to the next frame."""
        index = self._index % len(self._entries)
        passes = self.passes + (1 if self._index == len(self._entries) else 0)
        return passes * self._period + self._entries[index].offset

    def _now_shift(self) -> int:
        """Microseconds that make the next frame's time roughly now."""
        offset = self._entries[self._index % len(self._entries)].offset
        return int(self._clock() * 1e6) - self._start_us - int(offset * 1e6)

    def _start_pass(self) -> None:
        if self.passes:
            self._shift_us += int(self._period * 1e6)
            self._floor_us = dict(self._sent_us)
        if self.shift_time:
            self._shift_us = max(self._shift_us, self._now_shift())

    def _count_faults(self, entry: _Entry) -> None:
        if entry.product is None or entry.obj is None:
            return
        skip, jump = self.faults.skip_trade_ids, self.faults.sequence_jump
        if skip and entry.type == "match":
            self._matches_seen[entry.product] += 1
            if self._matches_seen[entry.product] % skip[0] == 0:
                self._fault_offsets[(entry.product, "trade_id")] += skip[1]
        if jump and isinstance(entry.obj.get("sequence"), int):
            self._sequenced += 1
            if self._sequenced % jump[0] == 0:
                self._fault_offsets[(entry.product, "sequence")] += jump[1]

    def _render(self, entry: _Entry) -> tuple[Outgoing, dict[str, Any] | None]:
        """The frame as this pass sends it: the recorded text unless a counter or the time must move (each kept as
        recorded where the move would take it out of range: a looping replay must not stop on one frame)."""
        obj = entry.obj
        offsets = {}
        if obj is not None and entry.product is not None:
            for name in _COUNTERS:
                key = (entry.product, "trade_id" if name == "last_trade_id" else name)
                offset = self.passes * self._spans.get(key, 0) + self._fault_offsets.get(key, 0)
                value = obj.get(name)
                # a recorded id the shift takes to 2**63 or beyond (no JSON encoding past 2**64): sent as recorded
                if offset and isinstance(value, int) and value + offset < INT_LIMIT:
                    offsets[name] = value + offset
        moved = None
        if entry.time_us is not None and entry.time_field is not None:
            series = (entry.product or "", entry.channel)
            moved = max(entry.time_us + self._shift_us, self._floor_us.get(series, 0))
            if self.shift_time:  # never ahead of now: looping faster than recorded, later passes would run ahead
                moved = min(moved, int(self._clock() * 1e6))  # of the clock (and a router refuses future times)
            self._sent_us[series] = max(moved, self._sent_us.get(series, moved))
            if moved == entry.time_us:
                moved = None
        if obj is None or not (offsets or moved is not None):
            return Outgoing(entry.text, entry.type, entry.channel, entry.product), obj
        changed = {**obj, **offsets}
        if moved is not None and entry.time_field is not None:
            try:
                changed[entry.time_field] = format_time_us(moved)
            except ValueError:  # a recorded time the shift takes past the year 9999: sent as recorded
                pass
        return Outgoing(dumps(changed), entry.type, entry.channel, entry.product), changed

    def _remember(self, frame: Outgoing, obj: dict[str, Any] | None) -> None:
        """Keep what a new subscriber must get first."""
        product = frame.product
        if obj is None or product is None:
            if frame.type == "status":
                self._last_status = frame
            return
        try:
            if frame.type == "snapshot":
                self._books[product].reset(obj["bids"], obj["asks"])
            elif frame.type == "l2update":
                book = self._books[product]
                for side, price, size in obj["changes"]:
                    book.apply(side, price, size)
            elif frame.type in ("match", "last_match"):
                self._last_match[product] = obj
            elif frame.channel is not None:
                self._last[(frame.channel, product)] = frame
        except (KeyError, TypeError, ValueError, ArithmeticError):
            pass  # a malformed recorded frame is replayed as is; it just does not update the book


def replay_server(
    capture: Capture | Path | str | None = None,
    *,
    speed: float | str | None = 1.0,
    loop: bool = False,
    shift_time: bool = False,
    faults: Faults | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> FeedServer:
    """A replay `FeedServer` (not started: `async with replay_server(...) as server: server.url`)."""
    if not isinstance(capture, Capture):
        capture = read_capture(capture or SHIPPED_CAPTURE)
    source = ReplaySource(capture, speed=parse_speed(speed), loop=loop, shift_time=shift_time, faults=faults)
    return FeedServer(source, host=host, port=port, faults=faults)


def serve_replay(
    *,
    capture: Path | str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float | str = 1.0,
    loop: bool = False,
    shift_time: bool = False,
    announce: Callable[[str], None] | None = None,
) -> ServerStats:
    """`rtca replay serve`: serve a capture (default: the shipped one) until it ends or SIGINT / SIGTERM. Once it
    listens, `announce(url)`; by default it prints the URL, then the ingest command with the capture's products (an
    ingest given only the URL subscribes Coinbase's live products, which this server refuses)."""
    server = replay_server(capture, speed=speed, loop=loop, shift_time=shift_time, host=host, port=port)
    products = ",".join(sorted(server.source.products))

    def say(url: str) -> None:
        print(url, flush=True)
        print(f"  ingest it: rtca ingest run --url {url} --products {products}", flush=True)

    return serve_foreground(server, announce=announce or say)

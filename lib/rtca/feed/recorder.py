"""Record a websocket session (live by default) to the capture format, for later replays.

Every connection (reconnects included) writes its `<->` and subscribe lines, then each frame as received. A frame
with a line break cannot be stored as one line: a JSON frame is re-serialised without it, anything else (and a
binary frame that is not UTF-8) is skipped and counted. The server's `subscriptions` and `error` answers are
recorded too but are no market data: a session that brought nothing else recorded nothing (`RecordReport.data`),
and the errors' reasons say why (an unknown product, a channel that needs authentication).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

import orjson

from rtca.feed.capture import CaptureWriter, Opened, Received, Sent
from rtca.feed.connection import FeedConnection
from rtca.feed.lifecycle import run_until, stop_on_signals
from rtca.feed.protocol import COINBASE_WS_URL, LIVE_CHANNELS, LIVE_PRODUCTS, subscribe_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordReport:
    path: Path
    url: str
    ended: str
    """end_of_stream | duration | max_messages | stopped."""
    frames: int
    skipped: int
    connections: int
    seconds: float
    data: int = 0
    """Frames of market data (all but the server's `subscriptions` and `error` answers)."""
    errors: tuple[str, ...] = ()
    """The server's `error` answers: message and reason (the first few)."""

    def __str__(self) -> str:
        why = {"end_of_stream": "the stream ended", "duration": "its duration was over",
               "max_messages": "its frame count was reached", "stopped": "stopped"}.get(self.ended, self.ended)
        return (f"recorded {self.frames} frames from {self.url} to {self.path} in {self.seconds:.1f} s: {why} "
                f"({self.connections} connection(s), {self.skipped} frames skipped)")


def _one_line(data: bytes) -> str | None:
    """The frame as one capture line, or None when it cannot be one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\n" not in text and "\r" not in text:
        return text
    try:
        return orjson.dumps(orjson.loads(data)).decode()
    except orjson.JSONDecodeError:
        return None


def _server_answer(data: bytes) -> str | None:
    """None for market data; "" for a `subscriptions` answer; message and reason of an `error` answer."""
    if b'"subscriptions"' not in data and b'"error"' not in data:
        return None  # the cheap test first: this runs for every frame
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("type") not in ("subscriptions", "error"):
        return None
    if obj["type"] == "subscriptions":
        return ""
    return ": ".join(str(obj[k]) for k in ("message", "reason") if obj.get(k)) or "error"


async def record_session(
    output: Path | str,
    *,
    url: str = COINBASE_WS_URL,
    products: Sequence[str] = LIVE_PRODUCTS,
    channels: Sequence[str] = LIVE_CHANNELS,
    duration: float | None = None,
    max_messages: int | None = None,
    silence_timeout: float = 10.0,
    stop: asyncio.Event | None = None,
) -> RecordReport:
    """Record until `duration`, `max_messages`, the end of a finite stream, or `stop`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    frames = skipped = data = 0
    errors: list[str] = []
    with CaptureWriter(output, lazy=True) as writer:

        def opened(at_url: str, at: float, subscribe: str) -> None:
            writer.write(Opened(at_url, at))
            writer.write(Sent(at_url, at, subscribe))

        connection = FeedConnection(url, subscribe_frame(products, channels), silence_timeout=silence_timeout,
                                    on_open=opened)

        async def consume() -> str:
            nonlocal frames, skipped, data
            async with aclosing(connection.frames()) as stream:
                async for frame in stream:
                    line = _one_line(frame.data)
                    if line is None:
                        skipped += 1
                        continue
                    writer.write(Received(frame.received_at, line))
                    frames += 1
                    answer = _server_answer(frame.data)
                    if answer is None:
                        data += 1
                    elif answer and len(errors) < 5:
                        errors.append(answer)
                    if max_messages is not None and data >= max_messages:  # frames of market data
                        return "max_messages"
            return "end_of_stream"

        ended = await run_until(consume(), duration=duration, stop=stop)
    report = RecordReport(writer.path, url, ended, frames, skipped, connection.state.connections,
                          round(loop.time() - started, 3), data, tuple(errors))
    log.info("%s", report)
    return report


def record(
    output: Path | str,
    *,
    url: str = COINBASE_WS_URL,
    products: Sequence[str] | None = None,
    channels: Sequence[str] | None = None,
    duration: float | None = None,
    max_messages: int | None = None,
) -> RecordReport:
    """`rtca record`: record in the foreground until `duration`, `max_messages` or SIGINT / SIGTERM."""

    async def main() -> RecordReport:
        with stop_on_signals() as stop:
            return await record_session(
                output, url=url, products=products or LIVE_PRODUCTS, channels=channels or LIVE_CHANNELS,
                duration=duration, max_messages=max_messages, stop=stop,
            )

    return asyncio.run(main())

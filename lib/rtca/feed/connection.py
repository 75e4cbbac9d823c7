"""The websocket client: connect, subscribe, yield frames; reconnect with backoff; close a silent connection.

Transport only: frames come out as the exact bytes received, stamped with the receive time; what they mean is
ingest's business. A connection that delivered at least one frame and stayed open `stable_after` seconds resets
the backoff (one that answers, e.g. with an `error` frame, and drops us at once must not be retried in a tight
loop). A server closing with `END_OF_STREAM` (our replay server and simulator, at the end of a finite stream) ends
the iteration instead of reconnecting, unless `end_of_stream` is off (the exchange has no end of stream: a live
feed reconnects whatever the close code).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.protocol import State
from websockets.uri import parse_uri

from rtca.errors import ConfigError
from rtca.feed.protocol import END_OF_STREAM

log = logging.getLogger(__name__)

#: Words of the connection's log lines that `rtca status` and the runbooks read (an ingest that cannot connect).
CANNOT_CONNECT = "cannot connect"
RECEIVING_AGAIN = "receiving again"
#: Failed attempts, with nothing ever received, after which `FeedConnection`'s `offline_hint` is logged (once).
HINT_AFTER_ATTEMPTS = 3

MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Largest frame accepted (websockets' default is 1 MiB; a full level2 snapshot can be bigger)."""
MAX_UNSENT_BYTES = 8 * 1024 * 1024
"""What may wait to be sent before the server is taken for one that does not read: ingest only sends its
subscription and pongs, so more means pongs piling up (a server flooding pings grew them by 22 MB a second)."""
POLL_S = 1.0
"""How often a connection without frames is looked at (`_trouble`, the silence watchdog)."""
CLOSE_TIMEOUT_S = 2.0
"""Closing waits this long at most, then drops the connection: websockets' close first waits for what is unsent
to drain, with no limit, and a server that does not read kept a stopping ingest alive for good."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential delays with jitter: attempt n waits a random time in [(1 - jitter) d, d], d = initial * factor^n,
    capped at `maximum`."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return ceiling * (1.0 - self.jitter * rng.random())


@dataclass(frozen=True, slots=True)
class Frame:
    data: bytes
    """The frame exactly as received (text frames are not decoded)."""
    received_at: float
    """Epoch seconds."""
    connection: int
    """1 for the first connection, 2 after the first reconnect, ..."""

    @property
    def received_ms(self) -> int:
        return int(self.received_at * 1000)


@dataclass
class ConnectionState:
    """Live view of the connection, read by feed health."""

    url: str
    connected: bool = False
    attempts: int = 0
    """Connections tried, failed or not."""
    connections: int = 0
    """Connections opened (a server may close one before our subscription goes out: also a failure)."""
    failures: int = 0
    """Connection attempts that failed before the subscription went out."""
    silences: int = 0
    """Connections the watchdog closed."""
    last_error: str | None = None

    @property
    def reconnects(self) -> int:
        return max(0, self.connections - 1)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_host(host: str) -> None:
    """Raise UnicodeError for a host name the resolver will never take ("exa..mple", a label over 63 characters):
    asyncio encodes it with IDNA at each connect, and that error, a ValueError, would be retried as a failed
    attempt forever."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host.encode("idna")


class FeedConnection:
    """`async for frame in FeedConnection(url, subscribe).frames(): ...` (close it by leaving the loop, or with
    `contextlib.aclosing`)."""

    def __init__(
        self,
        url: str,
        subscribe: str,
        *,
        silence_timeout: float = 10.0,
        backoff: Backoff | None = None,
        open_timeout: float = 10.0,
        stable_after: float = 10.0,
        max_size: int = MAX_FRAME_BYTES,
        on_open: Callable[[str, float, str], None] | None = None,
        rng: random.Random | None = None,
        end_of_stream: bool = True,
        offline_hint: str | None = None,
    ) -> None:
        """`subscribe` is the subscribe frame's text, sent right after each connect (the exchange requires it
        within 5 s); `on_open(url, at, subscribe)` is called after it went out (the recorder writes it down);
        `offline_hint` is logged once after `HINT_AFTER_ATTEMPTS` failed attempts while nothing was ever received
        (a warning a minute for good was all an offline user saw)."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a port out of range
        except ValueError as exc:  # a port out of range, an unclosed IPv6 bracket
            raise ConfigError(f"invalid websocket URL {url!r}: {exc}",
                              hint="use ws://host:port or wss://host") from None
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError(f"not a websocket URL: {url!r}", hint="use ws://host:port or wss://host")
        try:
            parse_uri(url)
            _check_host(parts.hostname)
        except (InvalidURI, ValueError) as exc:  # ValueError: UnicodeError from a host name IDNA cannot encode
            raise ConfigError(f"invalid websocket URL {url!r}: {exc}",
                              hint="use ws://host:port or wss://host") from None
        self.url = url
        self.subscribe = subscribe
        self.silence_timeout = silence_timeout
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.stable_after = stable_after
        self.max_size = max_size
        self.on_open = on_open
        self.end_of_stream = end_of_stream
        self.offline_hint = offline_hint
        self.state = ConnectionState(url)
        self._rng = rng or random.Random()
        self._open: ClientConnection | None = None  # the connection our subscription went out on, while open

    async def send(self, text: str) -> bool:
        """Send a frame on the open connection (a resubscription, `rtca.feed.resync`); False when none is open or it
        closed meanwhile: the next connection sends the whole subscription again anyway."""
        ws = self._open
        if ws is None:
            return False
        try:
            await ws.send(text)
        except ConnectionClosed:
            return False
        return True

    async def frames(self) -> AsyncIterator[Frame]:
        """Frames as they arrive, across reconnects; ends only at `END_OF_STREAM` (if `end_of_stream`)."""
        attempt = 0
        failed_in_a_row = 0  # attempts that failed since frames last flowed
        ever_delivered = hinted = False
        while True:
            self.state.attempts += 1
            delivered = False
            opened_at: float | None = None
            hook_failed: BaseException | None = None
            ws = None
            try:
                ws = await connect(
                    self.url,
                    max_size=self.max_size,
                    open_timeout=self.open_timeout,
                    close_timeout=1.0,  # we stop reading before closing: do not wait long for the handshake
                    proxy=None if _is_loopback(self.url) else True,
                )
                opened_at = time.monotonic()
                self.state.connections += 1
                try:
                    await ws.send(self.subscribe)
                except ConnectionClosed:  # the server closed first: what it sent with its handshake is still
                    pass  # read below, then `recv` raises and this attempt counts as failed
                else:
                    self.state.connected = True
                    self._open = ws
                if self.state.connected and self.on_open is not None:
                    try:
                        self.on_open(self.url, time.time(), self.subscribe)
                    except BaseException as exc:  # e.g. the recorder's disk is full: not a connection problem
                        hook_failed = exc
                        raise
                last_frame = time.monotonic()
                while True:
                    try:  # a wake-up every `POLL_S` (cancelling `recv` loses nothing) to look at the connection
                        async with asyncio.timeout(min(POLL_S, self.silence_timeout)):
                            data = await ws.recv(decode=False)
                    except TimeoutError:
                        if (problem := _trouble(ws)) is not None:
                            self.state.last_error = problem
                            log.warning("%s: %s, reconnecting", self.url, problem)
                            break
                        if time.monotonic() - last_frame < self.silence_timeout:
                            continue
                        self.state.silences += 1
                        self.state.last_error = f"no frame for {self.silence_timeout:g} s"
                        log.warning("%s: silent for %g s, reconnecting", self.url, self.silence_timeout)
                        break
                    last_frame = time.monotonic()
                    if not delivered and failed_in_a_row:  # the recovery, beside the warnings it ends
                        log.warning("%s: %s after %d failed connection attempt(s)", self.url, RECEIVING_AGAIN,
                                    failed_in_a_row)  # fmt: skip
                        failed_in_a_row = 0
                    delivered = ever_delivered = True
                    yield Frame(data, time.time(), self.state.connections)
                    # after the frame in hand is out (what websockets received before it failed the connection
                    # still comes, then `recv` times out on an empty queue and `_trouble` says why)
                    if (problem := _unread(ws)) is not None:
                        self.state.last_error = problem
                        log.warning("%s: %s, reconnecting", self.url, problem)
                        break
            except ConnectionClosed as exc:
                if self.end_of_stream and exc.rcvd is not None and exc.rcvd.code == END_OF_STREAM:
                    log.info("%s: end of stream", self.url)
                    return
                if not self.state.connected:  # closed before our subscription went out: an attempt that failed
                    self.state.failures += 1
                    failed_in_a_row += 1
                self.state.last_error = str(exc)
                log.warning("%s: connection closed: %s", self.url, exc)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ValueError) as exc:
                # InvalidURI / ValueError: the URL was checked in __init__, so the server redirected to a URL
                # that is not a websocket one (or not a URL): a connection failure like any other, retried.
                if exc is hook_failed or (isinstance(exc, ValueError) and self.state.connected):
                    raise
                self.state.failures += 1
                failed_in_a_row += 1
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: %s: %s", self.url, CANNOT_CONNECT, self.state.last_error)
            finally:
                self.state.connected = False
                self._open = None
                if ws is not None:  # within `CLOSE_TIMEOUT_S`
                    await _close(ws, self.url)
            if (self.offline_hint and not hinted and not ever_delivered
                    and failed_in_a_row >= HINT_AFTER_ATTEMPTS):  # fmt: skip
                log.warning("%s: nothing received in %d attempts: %s", self.url, failed_in_a_row, self.offline_hint)
                hinted = True
            if delivered and opened_at is not None and time.monotonic() - opened_at >= self.stable_after:
                attempt = 0  # a connection that worked for a while: the next one waits the shortest delay
            delay = self.backoff.delay(attempt, self._rng)
            attempt += 1
            await asyncio.sleep(delay)


def _trouble(ws: ClientConnection) -> str | None:
    """Why a connection that is still open is of no more use, if it is not: ingest closed it (websockets fails a
    connection on a frame over `max_size` or that breaks the protocol; the server may never finish the close, and
    the reason showed nowhere, only "silent for 10 s" afterwards), or the server does not read what it is sent."""
    sent = ws.protocol.close_sent
    if sent is not None and ws.protocol.close_rcvd is None:  # not the answer to a close of the server's
        return f"ingest closed the connection: {sent.code} {sent.reason}".rstrip()
    return _unread(ws)


def _unread(ws: ClientConnection) -> str | None:
    unsent = ws.transport.get_write_buffer_size()
    if unsent > MAX_UNSENT_BYTES:
        return f"the server does not read what ingest sends ({unsent} bytes unsent: pongs to its pings)"
    return None


async def _close(ws: ClientConnection, url: str) -> None:
    """Close within `CLOSE_TIMEOUT_S`, else drop the connection."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close()
    except TimeoutError:
        log.warning("%s: not closed after %g s (the server does not read): connection dropped", url, CLOSE_TIMEOUT_S)
    finally:  # also when cancelled again while closing
        if ws.state is not State.CLOSED:
            ws.transport.abort()

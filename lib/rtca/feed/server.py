"""A local websocket server that speaks the exchange's protocol; the replay server and the simulator are this
server with different `FrameSource`s.

Protocol, as on the exchange: a client must subscribe within `subscribe_timeout` seconds; each subscribe or
unsubscribe is answered with the full subscription set (or an `error` frame: an unknown product or channel, or one
of the authenticated feed's, `full` and `level3`); a client that stops reading is dropped after
`SLOW_CLIENT_SECONDS`, as the exchange drops slow consumers; a client receives only the channels
and products it subscribed to (`level2_batch` is served from level2 data), and each newly subscribed
(channel, product) first gets the current state: a level2 snapshot, the last ticker, the last match as
`last_match`.

One pump broadcasts the source to the subscribed clients and pauses while nobody is subscribed, so a client that
reconnects resumes where its previous connection stopped (after a fresh snapshot): nothing the server sent before a
drop is lost or sent twice. A finite source ends with close code `END_OF_STREAM`.

`Faults` are test hooks: drop every connection once after N frames, go silent once after N frames for S seconds
(ending when the silent client leaves or another subscribes), inject raw frames after frame N; the replay source
also reads `skip_trade_ids` and `sequence_jump`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from rtca.errors import ConfigError, RtcaError
from rtca.feed.lifecycle import run_until, stop_on_signals
from rtca.feed.protocol import (
    CHANNELS,
    DATA_CHANNEL,
    END_OF_STREAM,
    PRODUCTLESS_CHANNELS,
    MalformedFrame,
    Subscribe,
    error_frame,
    parse_frame,
    subscriptions_frame,
)

log = logging.getLogger(__name__)

SLOW_CLIENT_SECONDS = 5.0
"""A client whose send buffer stays full this long is dropped, so one that stops reading does not stall the others
(their ingest would call the feed silent and reconnect)."""
_FRAME_HEADER = 14
"""The most a websocket frame adds to its payload (2 to 14 bytes). A send on an open connection that keeps the
transport's buffer under its high-water mark, with writing not paused (the buffer at or under its low-water mark),
never waits for the client, so it goes without the `SLOW_CLIENT_SECONDS` timeout, whose timer cost as much as the send
(most sends on loopback). On a closing connection a send waits for the client to close, up to websockets'
``close_timeout`` (10 s): that one keeps the timeout."""
UNSERVED_CHANNELS = frozenset({"full", "level3"})
"""Channels of the exchange's authenticated feed: refused with an error, as the exchange refuses them without a key."""

Subscribed = dict[str, tuple[str, ...]]
"""Channel name (as the client wrote it) -> products, in subscription order."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A frame to send: its text and what it is, for filtering and counting."""

    text: str
    type: str | None = None
    channel: str | None = None
    """Data channel (`level2`, `ticker`, ...); None sends it to every subscribed client."""
    product: str | None = None


class FrameSource(Protocol):
    products: Collection[str]
    """Products a client may subscribe to."""

    async def next(self) -> Outgoing | None:
        """The next frame, when it is due (the source paces itself); None at the end of a finite stream."""

    def state(self, channel: str, product: str | None) -> list[Outgoing]:
        """Frames a new subscriber of (data channel, product) gets first: snapshot, last ticker, last_match."""

    def resume(self) -> None:
        """Pacing restarts now: called when a client subscribes after a pause."""


@dataclass(frozen=True)
class Faults:
    """Test hooks; every count is in frames broadcast since the server started."""

    drop_after: int | None = None
    """Close every connection (code 1011) once, after this many frames."""
    silence_after: int | None = None
    """Send nothing, once, after this many frames ..."""
    silence_for: float = 0.0
    """... for this many seconds, or until the silent client leaves or another subscribes."""
    inject_after: Mapping[int, Sequence[str | bytes]] = field(default_factory=dict)
    """Raw frames (text or binary) sent to every subscribed client after frame N, whatever its subscription."""
    skip_trade_ids: tuple[int, int] | None = None
    """Replay: (every, by): every `every`-th match of a product raises its trade ids by `by` (missed trades)."""
    sequence_jump: tuple[int, int] | None = None
    """Replay: (every, by): every `every`-th sequenced frame raises its product's sequence by `by` (normal)."""


@dataclass
class ServerStats:
    connections: int = 0
    frames_sent: int = 0
    """Frames sent to clients, all connections (replies, state and injected frames included)."""
    sent_by_type: Counter[str] = field(default_factory=Counter)


class _Client:
    __slots__ = ("closed", "subscribed", "wants", "ws")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.subscribed: Subscribed = {}
        self.wants: frozenset[tuple[str, str | None]] = frozenset()
        self.closed = False


def _wants(subscribed: Subscribed) -> list[tuple[str, str | None]]:
    """(data channel, product) pairs a subscription asks for, in order."""
    pairs: dict[tuple[str, str | None], None] = {}
    for name, products in subscribed.items():
        channel = DATA_CHANNEL.get(name, name)
        for product in (None,) if channel in PRODUCTLESS_CHANNELS else products:
            pairs[(channel, product)] = None
    return list(pairs)


def _apply(subscribed: Subscribed, request: Subscribe) -> Subscribed:
    """The subscription set after a subscribe / unsubscribe request."""
    result = dict(subscribed)
    for name, products in request.requested().items():
        if request.type == "subscribe":
            kept = () if name in PRODUCTLESS_CHANNELS else products
            result[name] = tuple(dict.fromkeys(result.get(name, ()) + kept))
        elif products and name not in PRODUCTLESS_CHANNELS:
            remaining = tuple(p for p in result.get(name, ()) if p not in products)
            if remaining:
                result[name] = remaining
            else:
                result.pop(name, None)
        else:
            result.pop(name, None)
    return result


class FeedServer:
    """Serves a `FrameSource` on a websocket port (0 = any free port; see `port` / `url` once started).

    Use as `async with FeedServer(source) as server:`; `finished` is set when a finite source has ended.
    """

    def __init__(
        self,
        source: FrameSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        subscribe_timeout: float = 5.0,
    ) -> None:
        self.source = source
        self.host = host
        self._requested_port = port
        self.faults = faults or Faults()
        self.subscribe_timeout = subscribe_timeout
        self.stats = ServerStats()
        self.finished = asyncio.Event()
        self.failure: BaseException | None = None
        """Why the pump stopped, if it failed (the server is then finished, its clients closed with 1011)."""
        self.failed = asyncio.Event()
        """Set with `failure`: an in-process ingest stops on it (reconnecting would find the same dead server)."""
        self._clients: set[_Client] = set()
        self._changes: deque[tuple[_Client, Subscribed]] = deque()
        self._wake = asyncio.Event()
        self._pending: Outgoing | None = None
        self._server: Server | None = None
        self._pump_task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> FeedServer:
        try:  # no compression: it would only cost CPU on loopback
            self._server = await serve(self._serve_client, self.host, self._requested_port, compression=None)
        except OSError as exc:  # the port is taken, the host does not resolve or is not this machine's
            raise ConfigError(f"cannot listen on {self.host}:{self._requested_port}: {exc.strerror or exc}",
                              hint="another --port (0: a free one) or --host") from None
        self._pump_task = asyncio.create_task(self._pump(), name="feed-server-pump")
        self._pump_task.add_done_callback(self._pump_done)
        return self

    async def stop(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FeedServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"ws://{host}:{self.port}"

    def _pump_done(self, task: asyncio.Task[None]) -> None:
        """A failed pump finishes the server: listening on, it would leave its clients waiting for frames forever."""
        if task.cancelled() or task.exception() is None:
            return
        self.failure = task.exception()
        log.error("feed server pump failed", exc_info=self.failure)
        self.failed.set()
        self.finished.set()
        for client in list(self._clients):
            asyncio.ensure_future(client.ws.close(CloseCode.INTERNAL_ERROR, "the feed server failed"))

    # --- one connection ----------------------------------------------------------------------------------------
    async def _serve_client(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self._clients.add(client)
        self.stats.connections += 1
        try:
            try:
                async with asyncio.timeout(self.subscribe_timeout):
                    first = await ws.recv()
            except TimeoutError:
                await ws.close(CloseCode.POLICY_VIOLATION, f"subscribe within {self.subscribe_timeout:g} s")
                return
            await self._on_request(client, first)
            async for data in ws:
                await self._on_request(client, data)
        except ConnectionClosed:
            pass
        finally:
            self._forget(client)

    async def _on_request(self, client: _Client, data: str | bytes) -> None:
        try:
            request = parse_frame(data)
            if not isinstance(request, Subscribe):
                raise MalformedFrame("bad_type", "Type has to be either subscribe or unsubscribe")
            self._check(request)
        except MalformedFrame as exc:
            await self._send(client, error_frame("Failed to subscribe", exc.detail), "error")
            return
        client.subscribed = _apply(client.subscribed, request)
        await self._send(client, subscriptions_frame(client.subscribed), "subscriptions")
        if self.finished.is_set():  # a failed server must not look like a stream that ended
            await client.ws.close(*((CloseCode.INTERNAL_ERROR, "the feed server failed") if self.failure
                                    else (END_OF_STREAM, "end of stream")))  # fmt: skip
            return
        self._changes.append((client, client.subscribed))
        self._wake.set()

    def _check(self, request: Subscribe) -> None:
        if not request.channels:
            raise MalformedFrame("bad_fields", "No channels provided")
        for name, products in request.requested().items():
            if name not in CHANNELS:
                raise MalformedFrame("bad_fields", f"{name} is not a valid channel")
            if name in UNSERVED_CHANNELS:  # subscribed, they would only bring silence (and a client's reconnects)
                raise MalformedFrame("bad_fields", f"{name} requires authentication, which this server does not offer")
            if name in PRODUCTLESS_CHANNELS:
                continue
            if not products and request.type == "subscribe":
                raise MalformedFrame("bad_fields", f"No product ids provided for {name}")
            for product in products:
                if product not in self.source.products:
                    raise MalformedFrame("bad_fields", f"{product} is not a valid product")

    def _forget(self, client: _Client) -> None:
        client.closed = True
        self._clients.discard(client)
        self._wake.set()

    async def _send(self, client: _Client, data: str | bytes, kind: str | None) -> bool:
        text = isinstance(data, str)
        payload = data.encode() if text else data
        try:
            transport = client.ws.transport
            low, high = transport.get_write_buffer_limits()
            buffered = transport.get_write_buffer_size()
            if client.ws.state is State.OPEN and buffered <= low and buffered + len(payload) + _FRAME_HEADER <= high:
                await client.ws.send(payload, text=text)  # open, writing not paused, nor will it be: cannot wait
            else:
                async with asyncio.timeout(SLOW_CLIENT_SECONDS):  # only a full send buffer makes it wait at all
                    await client.ws.send(payload, text=text)
        except ConnectionClosed:
            self._forget(client)
            return False
        except TimeoutError:  # it stopped reading: drop it, as the exchange drops slow consumers, not the others
            log.warning("dropping a client that has not read for %g s", SLOW_CLIENT_SECONDS)
            self._forget(client)
            client.ws.transport.abort()  # it would not read a close frame either
            return False
        self.stats.frames_sent += 1
        self.stats.sent_by_type[kind or "other"] += 1
        return True

    # --- the pump ----------------------------------------------------------------------------------------------
    def _subscribed_clients(self) -> list[_Client]:
        return [client for client in self._clients if client.wants]

    async def _apply_changes(self) -> None:
        """Newly subscribed pairs get the current state first, then the client is served with the rest."""
        while self._changes:
            client, subscribed = self._changes.popleft()
            if client.closed:
                continue
            pairs = _wants(subscribed)
            for channel, product in pairs:
                if (channel, product) not in client.wants:
                    for frame in self.source.state(channel, product):
                        await self._send(client, frame.text, frame.type)
            client.wants = frozenset(pairs)

    async def _until_subscribed(self) -> None:
        paused = False
        while True:
            await self._apply_changes()
            if self._subscribed_clients():
                break
            paused = True
            self._wake.clear()
            await self._wake.wait()
        if paused:
            self.source.resume()

    async def _broadcast(self, frame: Outgoing) -> bool:
        """Send to every client that wants it; False when it reached nobody because of closed connections."""
        delivered = failed = False
        for client in self._subscribed_clients():
            if frame.channel is None or (frame.channel, frame.product) in client.wants:
                if await self._send(client, frame.text, frame.type):
                    delivered = True
                else:
                    failed = True
        return delivered or not failed

    async def _pump(self) -> None:
        broadcast = 0
        while True:
            await self._until_subscribed()
            frame = self._pending if self._pending is not None else await self.source.next()
            self._pending = None
            if frame is None:
                await self._finish()
                return
            await self._apply_changes()
            if not await self._broadcast(frame):
                self._pending = frame
                continue
            broadcast += 1
            await self._inject_faults(broadcast)
            if broadcast % 256 == 0:
                await asyncio.sleep(0)  # let connections and the rest of the loop run at max speed

    async def _inject_faults(self, broadcast: int) -> None:
        faults = self.faults
        for raw in faults.inject_after.get(broadcast, ()):
            for client in self._subscribed_clients():
                await self._send(client, raw, "injected")
        if broadcast == faults.drop_after:
            log.info("fault: dropping every connection after %d frames", broadcast)
            clients = self._subscribed_clients()
            await asyncio.gather(*(c.ws.close(CloseCode.INTERNAL_ERROR, "fault: dropped") for c in clients))
        if broadcast == faults.silence_after:
            log.info("fault: silent for %g s after %d frames", faults.silence_for, broadcast)
            self._wake.clear()
            try:
                async with asyncio.timeout(faults.silence_for):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _finish(self) -> None:
        self.finished.set()
        clients = list(self._clients)
        await asyncio.gather(*(c.ws.close(END_OF_STREAM, "end of stream") for c in clients))


def serve_foreground(server: FeedServer, *, announce: Callable[[str], None] = print) -> ServerStats:
    """Run a server until its finite stream ended or SIGINT / SIGTERM; `announce` gets its URL once it listens."""

    async def until_finished() -> str:
        await server.finished.wait()
        return "end_of_stream"

    async def main() -> ServerStats:
        with stop_on_signals() as stop:
            async with server:
                announce(server.url)
                await run_until(until_finished(), stop=stop)
        if server.failure is not None:
            failure = server.failure
            raise RtcaError(f"the feed server stopped: {type(failure).__name__}: {failure}",
                            hint="its log has the traceback; a capture's frames are checked when it is read")
        return server.stats

    return asyncio.run(main())

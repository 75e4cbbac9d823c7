"""The websocket client reconnects after a drop or a silence, resubscribes, and loses nothing the server sent."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import orjson
import pytest

from rtca.errors import ConfigError
from rtca.feed.capture import Capture
from rtca.feed.connection import CANNOT_CONNECT, HINT_AFTER_ATTEMPTS, RECEIVING_AGAIN, Backoff, FeedConnection
from rtca.feed.protocol import subscribe_frame
from rtca.feed.replay import replay_server
from rtca.feed.server import Faults, ServerStats

Run = Callable[..., Any]
FAST = Backoff(initial=0.05, maximum=0.2)
RECONNECT = Backoff(initial=0.1, maximum=30.0)
"""The drop and silence tests': the first reconnect attempt waits at most 0.1 s (`Backoff.delay(0)`: a connection
starts its attempts at 0); a reconnect that needed more attempts, or a watchdog that saw the silence late, shows in
the time it took."""
MARGIN_S = 5.0
"""What a reconnect may take beyond the configured silence timeout and its first backoff: the watchdog's look every
`POLL_S` (1 s), the close, the connect, the subscription and its answer, all on a loaded 2-core CI machine."""


def first_delay_max(backoff: Backoff) -> float:
    """The longest the first reconnect attempt may wait (`Backoff.delay(0, ...)` without jitter)."""
    return min(backoff.maximum, backoff.initial)


def reconnect_gap(stamps: list[tuple[int, float]]) -> float:
    """Seconds from the last frame of the first connection to the first frame of the second (`Frame.connection`
    and `Frame.received_at`, in the order received)."""
    last = max(at for connection, at in stamps if connection == 1)
    first = min(at for connection, at in stamps if connection == 2)
    return first - last


async def replay_through_client(capture: Capture, faults: Faults, *, silence_timeout: float = 10.0) -> tuple[
        FeedConnection, Counter[str], ServerStats, list[tuple[int, float]]]:
    """Replay the capture at max speed into a FeedConnection; (connection, types received, server stats,
    (connection number, receive time) of each frame)."""
    async with replay_server(capture, speed="max", faults=faults) as server:
        connection = FeedConnection(server.url, subscribe_frame(capture.products, capture.channels),
                                    silence_timeout=silence_timeout, backoff=RECONNECT)
        kinds: Counter[str] = Counter()
        stamps = []
        async with aclosing(connection.frames()) as frames:
            async for frame in frames:
                kinds[orjson.loads(frame.data)["type"]] += 1
                stamps.append((frame.connection, frame.received_at))
        return connection, kinds, server.stats, stamps


def test_dropped_connection_reconnects_resubscribes_and_misses_nothing(run: Run, shipped: Capture) -> None:
    connection, kinds, stats, stamps = run(replay_through_client(shipped, Faults(drop_after=3000)))
    gap, bound = reconnect_gap(stamps), first_delay_max(RECONNECT) + MARGIN_S
    print("received:", dict(kinds), "server sent:", dict(stats.sent_by_type))
    print(f"server closed the connection: first frame on the new one {gap:.3f} s after the last (bound {bound:g} s)")
    assert connection.state.connections == 2 and connection.state.reconnects == 1
    assert kinds == stats.sent_by_type  # every frame the server sent, on both connections
    assert kinds["subscriptions"] == 2  # resubscribed
    assert kinds["l2update"] == 9719 and kinds["match"] == 97 and kinds["ticker"] >= 107
    assert kinds["snapshot"] == 20  # the resubscription starts with a fresh snapshot per product
    assert [c for c, _ in stamps].index(2) == 3000 + 1  # first connection: its subscriptions reply and 3000 frames
    assert 0 <= gap <= bound  # reconnected within the first attempt's backoff (plus the margin)


def test_silent_server_trips_the_watchdog_and_the_client_reconnects(run: Run, shipped: Capture) -> None:
    faults = Faults(silence_after=500, silence_for=30.0)
    timeout = 0.5
    connection, kinds, stats, stamps = run(replay_through_client(shipped, faults, silence_timeout=timeout),
                                           timeout=45)  # fmt: skip
    gap, bound = reconnect_gap(stamps), timeout + first_delay_max(RECONNECT) + MARGIN_S
    print("received:", dict(kinds), "state:", connection.state)
    print(f"silence: first frame on the new connection {gap:.3f} s after the last (bound {bound:g} s)")
    assert connection.state.silences == 1 and connection.state.reconnects == 1
    assert kinds == stats.sent_by_type
    assert kinds["l2update"] == 9719 and kinds["match"] == 97
    assert timeout <= gap <= bound  # the watchdog waited its timeout, not (much) more, then the first backoff


async def read_for(connection: FeedConnection, seconds: float) -> None:
    """Take the connection's frames for `seconds` (its reconnects and failures are counted in its state)."""
    async with aclosing(connection.frames()) as frames:
        try:
            async with asyncio.timeout(seconds):
                async for _ in frames:
                    pass
        except TimeoutError:
            pass


def test_refused_connections_are_retried_with_backoff(run: Run) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe is closed

    async def attempts() -> int:
        connection = FeedConnection(f"ws://127.0.0.1:{port}", subscribe_frame(["A-B"], ["ticker"]), backoff=FAST)
        await read_for(connection, 0.8)
        return connection.state.failures

    failures = run(attempts())
    print("failed attempts in 0.8 s:", failures)
    assert 2 <= failures <= 12  # 0.025 .. 0.2 s apart; without backoff it would be hundreds


def test_the_log_says_when_frames_flow_again_after_failed_attempts(run: Run, shipped: Capture,
                                                                   caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """`rtca status` and runbook 40 read an ingest's trouble off its log: the warnings of failed attempts need a
    line that says they are over."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def fail_then_receive() -> int:
        connection = FeedConnection(f"ws://127.0.0.1:{port}", subscribe_frame(shipped.products, shipped.channels),
                                    backoff=FAST)  # fmt: skip
        async with aclosing(connection.frames()) as frames:
            reading = asyncio.ensure_future(anext(frames))
            while connection.state.failures < 3:
                await asyncio.sleep(0.02)
            async with replay_server(shipped, speed="max", port=port):
                await reading
                for _ in range(10):
                    await anext(frames)
                await frames.aclose()  # before the server: it would wait for our side to close
        return connection.state.failures

    with caplog.at_level(logging.WARNING, logger="rtca.feed.connection"):
        failures = run(fail_then_receive())
    lines = [r.getMessage() for r in caplog.records]
    print(lines)
    assert sum(f": {CANNOT_CONNECT}: " in line for line in lines) == failures >= 3
    assert lines[-1] == f"ws://127.0.0.1:{port}: {RECEIVING_AGAIN} after {failures} failed connection attempt(s)"


def test_an_unreachable_source_gets_its_hint_once_not_at_every_attempt(run: Run,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Offline, the ingest only repeated "cannot connect" (a line a minute for good): after a few failed attempts
    with nothing ever received it says what to try, once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def attempts(hint: str | None) -> int:
        connection = FeedConnection(f"ws://127.0.0.1:{port}", subscribe_frame(["A-B"], ["ticker"]), backoff=FAST,
                                    offline_hint=hint)  # fmt: skip
        await read_for(connection, 1.5)
        return connection.state.attempts

    with caplog.at_level(logging.WARNING, logger="rtca.feed.connection"):
        tried = run(attempts("offline? try the replay"))
        lines = [r.getMessage() for r in caplog.records]
        caplog.clear()
        run(attempts(None))
        unhinted = [r.getMessage() for r in caplog.records]
    hints = [i for i, line in enumerate(lines) if "offline? try the replay" in line]
    assert tried > HINT_AFTER_ATTEMPTS + 1 and len(hints) == 1, lines
    assert lines[hints[0]] == (f"ws://127.0.0.1:{port}: nothing received in {HINT_AFTER_ATTEMPTS} attempts: "
                               f"offline? try the replay")
    assert sum(f": {CANNOT_CONNECT}: " in line for line in lines[:hints[0]]) == HINT_AFTER_ATTEMPTS
    assert not any("nothing received" in line for line in unhinted)  # the recorder's: no --source to suggest


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    backoff = Backoff(initial=0.5, maximum=8.0, factor=2.0, jitter=0.5)
    rng = random.Random(1)
    delays = [backoff.delay(attempt, rng) for attempt in range(10)]
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jittered even at the cap
    assert backoff.delay(1000, rng) <= 8.0


def test_a_non_websocket_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        FeedConnection("http://example.com", "{}")


@pytest.mark.parametrize("url", ["ws://exa..mple:9/", "ws://" + "a" * 64 + ".example/", "wss://b\u00fccher..example/"])
def test_a_host_name_that_cannot_be_resolved_ever_is_a_config_error(url: str) -> None:
    """A host IDNA cannot encode fails every connect with a UnicodeError (a ValueError): it must be named at once,
    not retried as a connection failure forever (nor escape as a bare UnicodeError)."""
    with pytest.raises(ConfigError, match="invalid websocket URL"):
        FeedConnection(url, "{}")


def test_ip_literal_hosts_are_still_accepted() -> None:
    for url in ("ws://127.0.0.1:9/", "ws://[::1]:9/", "wss://ws-feed.exchange.coinbase.com", "ws://localhost:8765"):
        FeedConnection(url, "{}")


@pytest.mark.parametrize("location", ["http://example.invalid/", "ws://[::1", "ftp://example.invalid/feed"])
def test_a_redirect_to_a_non_websocket_url_is_a_failed_attempt_not_a_crash(run: Run, location: str) -> None:
    """A proxy or hostile server answering the handshake with a redirect must not stop ingest (nor blame the
    user's URL): the attempt fails and is retried with backoff."""

    async def attempts() -> tuple[int, str | None]:
        async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(redirect, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            connection = FeedConnection(f"ws://127.0.0.1:{port}", subscribe_frame(["A-B"], ["ticker"]), backoff=FAST)
            await read_for(connection, 0.8)
            return connection.state.failures, connection.state.last_error

    failures, last_error = run(attempts())
    print("failed attempts in 0.8 s:", failures, last_error)
    assert failures >= 2 and last_error


def test_a_server_that_answers_then_drops_us_at_once_gets_a_growing_backoff(run: Run) -> None:
    """E.g. an `error` frame ("Failed to subscribe") then a close, on every connection: one frame delivered must
    not reset the backoff, or the client reconnects every `initial` seconds forever."""
    from websockets.asyncio.server import serve

    async def connections() -> int:
        async def answer_and_close(ws: Any) -> None:
            await ws.recv()
            await ws.send('{"type":"error","message":"Failed to subscribe","reason":"A-B is not a valid product"}')
            await ws.close()

        async with serve(answer_and_close, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            connection = FeedConnection(f"ws://127.0.0.1:{port}", subscribe_frame(["A-B"], ["ticker"]),
                                        backoff=Backoff(initial=0.05, maximum=1.0, jitter=0.0))
            await read_for(connection, 2.5)
            return connection.state.connections

    opened = run(connections())
    print("connections in 2.5 s:", opened)
    assert opened <= 10  # 0.05, 0.1, 0.2, 0.4, 0.8, 1.0 s apart; without growth ~40


@pytest.mark.parametrize("end_of_stream", [True, False])
def test_the_end_of_stream_close_code_ends_only_where_it_is_taken(run: Run, end_of_stream: bool) -> None:
    """Our servers end a finite stream with close code 4000; the exchange has none, so for a live feed (ingest turns
    it off for `--source coinbase`) any server closing with 4000 ended the run instead of a reconnect."""
    from websockets.asyncio.server import serve

    from rtca.feed.protocol import END_OF_STREAM

    async def frames() -> tuple[int, int]:
        async def one_frame_then_4000(ws: Any) -> None:
            await ws.recv()
            await ws.send('{"type":"heartbeat"}')
            await ws.close(END_OF_STREAM, "end of stream")

        async with serve(one_frame_then_4000, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            connection = FeedConnection(f"ws://127.0.0.1:{port}", subscribe_frame(["A-B"], ["heartbeat"]),
                                        backoff=Backoff(initial=0.01, maximum=0.05), end_of_stream=end_of_stream)
            got = 0
            async with aclosing(connection.frames()) as stream:
                async for _ in stream:
                    got += 1
                    if got == 3:
                        break
            return got, connection.state.connections

    got, connections = run(asyncio.wait_for(frames(), 30))
    assert (got, connections) == ((1, 1) if end_of_stream else (3, 3))


def _ws_frame(payload: bytes, opcode: int) -> bytes:
    """One unmasked server frame (payloads under 126 bytes)."""
    return bytes([0x80 | opcode, len(payload)]) + payload


async def _accept_websocket(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    import base64
    import hashlib
    import re

    request = await reader.readuntil(b"\r\n\r\n")
    key = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", request).group(1)  # type: ignore[union-attr]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def test_a_server_that_floods_pings_and_never_reads_is_left_and_the_connection_closes_in_time(
        run: Run, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Pongs piled up unsent (22 MB a second), and closing waited for them to drain, without end: an ingest told to
    stop stayed alive until killed."""
    import rtca.feed.connection as connection_module

    monkeypatch.setattr(connection_module, "MAX_UNSENT_BYTES", 512 * 1024, raising=False)

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _accept_websocket(reader, writer)  # and never read again
        ping = _ws_frame(b"p" * 125, 9) * 2000
        data = _ws_frame(b'{"type":"heartbeat"}', 1)
        try:
            for _ in range(400):  # 100 MB of pings at most, a data frame now and then
                writer.write(ping + data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        writer.close()

    async def scenario() -> tuple[float, str | None, int]:
        server = await asyncio.start_server(flood, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            connection = FeedConnection(f"ws://127.0.0.1:{port}", subscribe_frame(["A-B"], ["ticker"]), backoff=FAST)
            began = asyncio.get_running_loop().time()
            await read_for(connection, 3.0)  # then stop: closing must not wait for the unsent pongs
            return asyncio.get_running_loop().time() - began, connection.state.last_error, connection.state.connections

    took, last_error, connections = run(scenario())
    print(f"stopped after {took:.1f} s; last error: {last_error}; connections: {connections}")
    assert took < 7.0  # 3 s of reading, then a close of 2 s at most (20 s before: until the server gave up)
    assert last_error is not None and "does not read what ingest sends" in last_error


def test_frames_received_before_the_connection_failed_are_all_delivered(run: Run) -> None:
    """Five frames, then one over the size limit, in one write: websockets fails the connection at the big one
    but still hands out the five; a check of the connection between two frames dropped them (a review's catch)."""

    async def burst(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _accept_websocket(reader, writer)
        await asyncio.sleep(0.2)
        big = b"x" * 5000
        writer.write(b"".join(_ws_frame(b'{"type":"heartbeat","n":%d}' % i, 1) for i in range(5))
                     + bytes([0x81, 126]) + len(big).to_bytes(2, "big") + big)
        await writer.drain()
        await asyncio.sleep(5)  # never answers the close

    async def scenario() -> tuple[int, str | None]:
        server = await asyncio.start_server(burst, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            connection = FeedConnection(f"ws://127.0.0.1:{port}", subscribe_frame(["A-B"], ["ticker"]),
                                        backoff=Backoff(initial=5.0, maximum=5.0), max_size=1000)  # fmt: skip
            got = 0
            async with aclosing(connection.frames()) as frames:
                try:
                    async with asyncio.timeout(2.5):
                        async for _ in frames:
                            got += 1
                except TimeoutError:
                    pass
            return got, connection.state.last_error

    got, last_error = run(scenario())
    print("delivered:", got, "last error:", last_error)
    assert got == 5 and last_error is not None and "1009" in last_error


def test_frames_a_server_sends_with_its_handshake_are_delivered_even_if_it_closes_before_our_subscription(
        run: Run) -> None:  # fmt: skip
    """A server may send frames right after the handshake (the exchange does not, a replay of a recording may) and
    close before our subscription goes out: sending it then fails, and the frames already received were dropped."""

    async def greet_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _accept_websocket(reader, writer)
        writer.write(b"".join(_ws_frame(b'{"type":"heartbeat","n":%d}' % i, 1) for i in range(3))
                     + _ws_frame((1000).to_bytes(2, "big") + b"bye", 8))  # a close frame, never our subscription
        await writer.drain()
        writer.close()

    async def scenario() -> tuple[list[int], int, int]:
        server = await asyncio.start_server(greet_and_close, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            connection = FeedConnection(f"ws://127.0.0.1:{port}", subscribe_frame(["A-B"], ["ticker"]),
                                        backoff=Backoff(initial=5.0, maximum=5.0))  # one connection in the window
            got: list[int] = []
            async with aclosing(connection.frames()) as frames:
                try:
                    async with asyncio.timeout(2.0):
                        async for frame in frames:
                            got.append(orjson.loads(frame.data)["n"])
                except TimeoutError:
                    pass
            return got, connection.state.connections, connection.state.failures

    got, connections, failures = run(scenario())
    print("delivered:", got, "connections:", connections, "failed attempts:", failures)
    assert got == [0, 1, 2]
    assert (connections, failures) == (1, 1)  # opened, but not subscribed: a failed attempt for the backoff

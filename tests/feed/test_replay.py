"""The replay server speaks the exchange's protocol: handshake, filtering, level2_batch, pacing, loops, faults."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from rtca.errors import ConfigError
from rtca.feed.capture import SHIPPED_CAPTURE, Capture, Received, read_capture, write_capture
from rtca.feed.protocol import CHANNEL_OF_TYPE, END_OF_STREAM, parse_time, subscribe_frame
from rtca.feed.replay import ReplaySource, parse_speed, replay_server
from rtca.feed.server import Faults

Run = Callable[..., Any]


async def close_code(url: str, products: list[str], channels: list[str]) -> int | None:
    """Subscribe and read until the server closes the connection: the code it closed with."""
    async with connect(url) as ws:
        await ws.send(subscribe_frame(products, channels))
        try:
            async for _ in ws:
                pass
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return ws.close_code


async def collect(ws: ClientConnection, limit: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
    """Frames until the server closes (or `limit`), and the close code."""
    frames: list[dict[str, Any]] = []
    try:
        while limit is None or len(frames) < limit:
            frames.append(orjson.loads(await ws.recv()))
    except ConnectionClosed as exc:
        return frames, exc.rcvd.code if exc.rcvd else None
    return frames, None


async def session(capture: Capture, products: list[str], channels: list[str], **options: Any) -> tuple[
        list[dict[str, Any]], int | None]:
    async with replay_server(capture, **options) as server, connect(server.url) as ws:
        await ws.send(subscribe_frame(products, channels))
        return await collect(ws)


def capture_count(capture: Capture, types: set[str], products: set[str]) -> int:
    count = 0
    for frame in capture.frames:
        obj = orjson.loads(frame.text)
        count += obj["type"] in types and obj.get("product_id") in products
    return count


def test_subscriptions_reply_first_then_only_what_was_asked(run: Run, shipped: Capture) -> None:
    products = ["SKL-USD", "BAND-GBP"]
    frames, code = run(session(shipped, products, ["ticker", "matches"], speed="max"))
    assert frames[0] == {"type": "subscriptions", "channels": [{"name": "ticker", "product_ids": products},
                                                               {"name": "matches", "product_ids": products}]}
    kinds = Counter(f["type"] for f in frames[1:])
    print("received:", dict(kinds))
    assert {f["product_id"] for f in frames[1:]} == set(products)
    assert set(kinds) == {"ticker", "match", "last_match"}
    assert kinds["ticker"] == capture_count(shipped, {"ticker"}, set(products))
    assert kinds["match"] + kinds["last_match"] == capture_count(shipped, {"match", "last_match"}, set(products))
    assert code == END_OF_STREAM


def test_level2_batch_is_served_from_level2_data(run: Run, shipped: Capture) -> None:
    frames, _ = run(session(shipped, ["NU-GBP"], ["level2_batch"], speed="max"))
    assert frames[0]["channels"] == [{"name": "level2_batch", "product_ids": ["NU-GBP"]}]
    kinds = Counter(f["type"] for f in frames[1:])
    assert kinds == {"snapshot": 1, "l2update": capture_count(shipped, {"l2update"}, {"NU-GBP"})}
    assert frames[1]["type"] == "snapshot"


def test_frames_are_sent_exactly_as_recorded(run: Run, shipped: Capture) -> None:
    async def texts() -> list[str]:
        async with replay_server(shipped, speed="max") as server, connect(server.url) as ws:
            await ws.send(subscribe_frame(shipped.products, shipped.channels))
            received = []
            try:
                while True:
                    received.append(await ws.recv())
            except ConnectionClosed:
                return received[1:]

    recorded = [f.text for f in shipped.frames if '"type":"subscriptions"' not in f.text]
    assert run(texts()) == recorded


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        ({"type": "subscribe", "product_ids": ["SKL-USD"], "channels": ["nope"]}, "nope is not a valid channel"),
        ({"type": "subscribe", "product_ids": ["BTC-XYZ"], "channels": ["ticker"]}, "BTC-XYZ is not a valid product"),
        ({"type": "subscribe", "product_ids": [], "channels": ["ticker"]}, "No product ids provided for ticker"),
        ({"type": "hello"}, "Type has to be either subscribe or unsubscribe"),
        ({"type": "subscribe", "product_ids": ["SKL-USD"], "channels": ["full"]},  # else silence, and reconnects
         "full requires authentication, which this server does not offer"),
        ({"type": "subscribe", "product_ids": ["SKL-USD"], "channels": ["level3"]},
         "level3 requires authentication, which this server does not offer"),
    ],
)
def test_bad_requests_get_an_error_and_the_connection_stays(run: Run, shipped: Capture, request_: dict[str, Any],
                                                           reason: str) -> None:
    async def exchange() -> tuple[dict[str, Any], dict[str, Any]]:
        async with replay_server(shipped, speed="max") as server, connect(server.url) as ws:
            await ws.send(orjson.dumps(request_).decode())
            error = orjson.loads(await ws.recv())
            await ws.send(subscribe_frame(["SKL-USD"], ["ticker"]))
            return error, orjson.loads(await ws.recv())

    error, reply = run(exchange())
    assert error == {"type": "error", "message": "Failed to subscribe", "reason": reason}
    assert reply["type"] == "subscriptions"


def test_unsubscribe_updates_the_subscription_set(run: Run, shipped: Capture) -> None:
    async def exchange() -> dict[str, Any]:
        async with replay_server(shipped, speed=1) as server, connect(server.url) as ws:
            await ws.send(subscribe_frame(["SKL-USD", "NU-GBP"], ["ticker", "matches"]))
            await ws.recv()
            await ws.send(subscribe_frame(["NU-GBP"], ["ticker"], kind="unsubscribe"))
            while True:
                frame = orjson.loads(await ws.recv())
                if frame["type"] == "subscriptions":
                    return frame

    reply = run(exchange())
    assert reply["channels"] == [{"name": "ticker", "product_ids": ["SKL-USD"]},
                                 {"name": "matches", "product_ids": ["SKL-USD", "NU-GBP"]}]


def test_a_client_that_does_not_subscribe_is_disconnected(run: Run, shipped: Capture) -> None:
    async def wait() -> int | None:
        server = replay_server(shipped)
        server.subscribe_timeout = 0.3
        async with server, connect(server.url) as ws:
            return (await collect(ws))[1]

    assert run(wait()) == 1008


def synthetic(tmp_path: Path, offsets: list[float]) -> Capture:
    """One product's matches (consecutive trade ids, increasing sequences) at the given receive offsets."""
    start = 1700000000.0
    frames = [Received(start + offset, orjson.dumps({
        "type": "match", "trade_id": 100 + i, "sequence": 5000 + 10 * i, "product_id": "AAA-USD", "side": "buy",
        "size": "1", "price": "2.5", "time": f"2023-11-14T22:13:{20 + offset:09.6f}Z",
    }).decode()) for i, offset in enumerate(offsets)]
    return read_capture(write_capture(tmp_path / "synthetic.capture", frames))


def test_speed_keeps_the_recorded_spacing(run: Run, tmp_path: Path) -> None:
    capture = synthetic(tmp_path, [0.0, 0.5, 1.0])

    async def timed() -> float:
        started = time.monotonic()
        frames, _ = await session(capture, ["AAA-USD"], ["matches"], speed=2)
        assert len(frames) == 4
        return time.monotonic() - started

    elapsed = run(timed())
    print(f"3 frames over 1 s at 2x took {elapsed:.2f} s")
    assert elapsed > 0.45  # paced, never faster (the exact spacing: test_frames_keep_their_spacing_over_speed)


@pytest.mark.parametrize("speed", [2.0, 0.5])
def test_frames_keep_their_spacing_over_speed(run: Run, tmp_path: Path, speed: float, loop_clock: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Recorded at 0, 0.5 and 1.0 s: sent at those offsets divided by `speed`, read off a fake loop clock."""
    import rtca.feed.replay

    monkeypatch.setattr(rtca.feed.replay, "asyncio", loop_clock)
    source = ReplaySource(synthetic(tmp_path, [0.0, 0.5, 1.0]), speed=speed)
    assert run(loop_clock.send_times(source)) == pytest.approx([0.0, 0.5 / speed, 1.0 / speed], abs=1e-9)


def test_looping_shifts_times_and_keeps_counters_increasing(run: Run, tmp_path: Path) -> None:
    capture = synthetic(tmp_path, [0.0, 0.1, 0.2])

    async def two_passes() -> list[dict[str, Any]]:
        # An endless max-speed stream: close without waiting for the handshake behind the unread frames.
        async with replay_server(capture, speed="max", loop=True) as server, connect(server.url,
                                                                                     close_timeout=0.1) as ws:
            await ws.send(subscribe_frame(["AAA-USD"], ["matches"]))
            return (await collect(ws, limit=1 + 9))[0][1:]

    frames = run(two_passes())
    assert [f["trade_id"] for f in frames] == list(range(100, 109))
    assert [f["sequence"] for f in frames] == [5000, 5010, 5020, 5021, 5031, 5041, 5042, 5052, 5062]
    times = [parse_time(f["time"]).timestamp() for f in frames]
    period = 0.2 + 0.1  # the capture's span plus its typical gap
    assert times[3] - times[0] == pytest.approx(period, abs=1e-6)
    assert times == sorted(times)


def test_shift_time_moves_times_to_now(run: Run, shipped: Capture) -> None:
    frames, _ = run(session(shipped, ["SKL-USD"], ["matches"], speed="max", shift_time=True))
    lags = [time.time() - parse_time(f["time"]).timestamp() for f in frames[1:]]
    print(f"lag of shifted times: {min(lags):.1f} .. {max(lags):.1f} s")
    assert all(-40 < lag < 40 for lag in lags)  # the capture spans 31 s, played at max speed


def test_skip_trade_ids_fault_jumps_trade_ids(run: Run, shipped: Capture) -> None:
    frames, _ = run(session(shipped, shipped.products, ["matches"], speed="max", faults=Faults(skip_trade_ids=(2, 3))))
    ids: dict[str, list[int]] = defaultdict(list)
    for frame in frames[1:]:
        ids[frame["product_id"]].append(frame["trade_id"])
    jumps = sum(b - a - 1 for trades in ids.values() for a, b in zip(trades, trades[1:], strict=False))
    expected = 3 * sum(capture_count(shipped, {"match"}, {p}) // 2 for p in shipped.products)
    print("missed trade ids:", jumps, "expected:", expected)
    assert jumps == expected > 0


def test_parse_speed() -> None:
    assert parse_speed("max") is None and parse_speed(None) is None
    assert parse_speed("10x") == 10.0 and parse_speed(2.5) == 2.5 and parse_speed("1") == 1.0
    for bad in ("fast", "0", "-1", "inf"):
        with pytest.raises(ConfigError):
            parse_speed(bad)


def test_a_shift_past_the_year_9999_sends_the_frame_as_recorded(tmp_path: Path) -> None:
    far = '{"type":"ticker","product_id":"X-USD","sequence":1,"price":"1","time":"9999-12-31T23:59:59.999999Z"}'
    path = tmp_path / "far.capture"
    path.write_text(f"0.0: {far}\n1.0: {far}\n")
    source = ReplaySource(read_capture(path), speed=None, loop=True)  # the second pass shifts times by its period

    async def three() -> list[str]:
        return [(await source.next()).text for _ in range(3)]  # type: ignore[union-attr]

    sent = asyncio.run(three())
    assert source.passes == 1 and all(orjson.loads(t)["time"] == "9999-12-31T23:59:59.999999Z" for t in sent)


def test_a_counter_the_shift_takes_past_a_long_is_sent_as_recorded(tmp_path: Path) -> None:
    """A capture with a trade id near 2**63: the second pass shifted it past 2**64, `dumps` raised and the whole
    stream stopped. Such an id is sent as recorded (as a time past the year 9999); the other counters still move."""
    frame = ('{{"type":"match","product_id":"X-USD","trade_id":{},"sequence":{},"price":"1","size":"1",'
             '"side":"buy","time":"2021-04-17T16:43:30.244075Z"}}')
    path = tmp_path / "big.capture"
    path.write_text(f"0.0: {frame.format(1, 1)}\n0.1: {frame.format(2**63 - 1, 2)}\n")
    source = ReplaySource(read_capture(path), speed=None, loop=True)

    async def eight() -> list[dict[str, Any]]:
        return [orjson.loads((await source.next()).text) for _ in range(8)]  # type: ignore[union-attr]

    sent = asyncio.run(eight())
    assert source.passes == 3 and [f["trade_id"] for f in sent[1::2]] == [2**63 - 1] * 4
    assert [f["sequence"] for f in sent] == sorted(f["sequence"] for f in sent)  # still increasing


def test_a_fast_looping_replay_never_dates_frames_after_now() -> None:
    clock = [1_800_000_000.0]
    source = ReplaySource(read_capture(SHIPPED_CAPTURE), speed=None, loop=True, shift_time=True,
                          clock=lambda: clock[0])
    stamps = []

    async def play() -> None:
        for _ in range(3 * 9_946):  # three passes of the shipped capture, the clock moving 1 ms a frame
            frame = await source.next()
            assert frame is not None
            clock[0] += 0.001
            obj = orjson.loads(frame.text)
            if isinstance(obj.get("time"), str):
                stamps.append((parse_time(obj["time"]).timestamp(), clock[0]))

    asyncio.run(play())
    assert source.passes >= 2
    assert all(stamp <= now + 1e-6 for stamp, now in stamps)  # looping at max speed never runs ahead
    times = [stamp for stamp, _ in stamps]
    assert times[-1] > times[0]


def test_looping_never_sends_a_product_channel_time_back_from_one_pass_to_the_next() -> None:
    """Each pass replays the `last_match` and first ticker the subscription started with, older than the capture:
    shifted by the period only, they went back before what the previous pass sent (found at 1x with shift_time)."""
    source = ReplaySource(read_capture(SHIPPED_CAPTURE), speed=None, loop=True, shift_time=True,
                          clock=lambda: 1_800_000_000.0 + source._position())  # the clock of a 1x replay

    async def play() -> list[tuple[int, dict[str, Any]]]:
        sent = []
        for _ in range(3 * len(source._entries)):
            frame = await source.next()
            assert frame is not None
            sent.append((source.passes, orjson.loads(frame.text)))
        return sent

    latest: dict[tuple[Any, Any], float] = {}
    back = []
    for passes, obj in asyncio.run(play()):
        if not isinstance(obj.get("time"), str):
            continue
        series, at = (obj.get("product_id"), CHANNEL_OF_TYPE.get(obj["type"])), parse_time(obj["time"]).timestamp()
        if at < latest.get(series, at):
            back.append((passes, *series, obj["type"], round(latest[series] - at, 3)))
        latest[series] = max(at, latest.get(series, at))
    print(f"{len(back)} times back:", back[:5])
    assert source.passes == 2 and back == []


def test_a_capture_whose_receive_times_go_back_still_loops_forward(tmp_path: Path) -> None:
    """The period is the span of receive times, not the last frame's offset (a clock step while recording)."""
    path = tmp_path / "clock-step.capture"
    lines = [f'{at}: {{"type":"match","product_id":"X-USD","trade_id":{i},"sequence":{i},"side":"buy",'
             f'"price":"1","size":"1","time":"2023-11-14T22:13:{20 + i:02d}.000000Z"}}'
             for i, at in enumerate((1000.0, 1005.0, 998.0, 997.0))]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    source = ReplaySource(read_capture(path), speed=None, loop=True)

    async def passes() -> list[float]:
        return [parse_time(orjson.loads((await source.next()).text)["time"]).timestamp()  # type: ignore[union-attr]
                for _ in range(12)]  # fmt: skip

    times = asyncio.run(passes())
    firsts = times[0::4]
    print("each pass's first time:", firsts)
    assert firsts == sorted(firsts) and len(set(firsts)) == 3


async def _read_for(ws: ClientConnection, seconds: float) -> tuple[int, float]:
    """Frames read in `seconds`, and the longest wait for one."""
    frames, longest, started = 0, 0.0, time.monotonic()
    last = started
    while time.monotonic() - started < seconds:
        async with asyncio.timeout(20):
            await ws.recv()
        frames, now = frames + 1, time.monotonic()
        longest, last = max(longest, now - last), now
    return frames, longest


def test_a_client_that_stops_reading_is_dropped_and_the_others_keep_flowing(
        run: Run, shipped: Capture, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The pump sent to each client in turn: one full send buffer stalled every client for ~30 s (until websockets'
    keepalive gave up), long enough for their ingest to call the feed silent and reconnect."""
    import rtca.feed.server

    monkeypatch.setattr(rtca.feed.server, "SLOW_CLIENT_SECONDS", 1.0)

    async def read_beside_a_stuck_client() -> tuple[int, float, int]:
        async with replay_server(shipped, speed="max", loop=True) as server:
            stuck = await connect(server.url, max_queue=1)  # subscribes, then never reads
            await stuck.send(subscribe_frame(shipped.products, shipped.channels))
            async with connect(server.url, close_timeout=0.1) as ws:
                await ws.send(subscribe_frame(shipped.products, shipped.channels))
                frames, longest = await _read_for(ws, 8.0)
            stuck.transport.abort()
            return frames, longest, server.stats.connections

    frames, longest, connections = run(read_beside_a_stuck_client())
    print(f"{frames} frames in 8 s beside a client that stopped reading; longest wait {longest:.2f} s")
    assert frames > 1_000 and longest < 15.0 and connections == 2  # waits of ~30 s before the drop (a busy machine
    # stretches the normal ones to a few seconds)


async def _closing_client_that_stops_reading(url: str, subscribe: str) -> asyncio.StreamWriter:
    """A client that subscribes, lets frames fill its socket's buffers unread, starts the closing handshake and then
    neither reads nor closes its socket: its connection stays CLOSING (the server cannot flush its reply), where a
    websockets send waits for the close up to ``close_timeout`` (10 s)."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
    await reader.readuntil(b"\r\n\r\n")

    def masked(opcode: int, payload: bytes) -> bytes:  # a client's frames are masked (RFC 6455 5.3)
        mask = os.urandom(4)
        size = bytes([0x80 | len(payload)]) if len(payload) < 126 else b"\xfe" + struct.pack("!H", len(payload))
        return bytes([0x80 | opcode]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    writer.write(masked(0x1, subscribe.encode()))
    await writer.drain()
    await asyncio.sleep(0.2)  # frames fill the socket's buffers, unread
    writer.write(masked(0x8, struct.pack("!H", 1000)))
    await writer.drain()
    return writer


def test_a_client_that_closes_then_stops_reading_does_not_stall_the_others(
        run: Run, shipped: Capture, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Sends skip the slow-client timer when they cannot wait; a send on a closing connection can (websockets waits
    for the client's close up to 10 s), and stalled every other client that long (found by review)."""
    import rtca.feed.server

    monkeypatch.setattr(rtca.feed.server, "SLOW_CLIENT_SECONDS", 1.0)
    subscribe = subscribe_frame(shipped.products, shipped.channels)

    async def read_beside_a_closing_client() -> tuple[int, float]:
        async with replay_server(shipped, speed="max", loop=True) as server:
            async with connect(server.url, close_timeout=0.1) as ws:
                await ws.send(subscribe)
                async with asyncio.timeout(20):
                    await ws.recv()
                stuck = await _closing_client_that_stops_reading(server.url, subscribe)
                frames, longest = await _read_for(ws, 12.0)
            stuck.transport.abort()
            return frames, longest

    frames, longest = run(read_beside_a_closing_client())
    print(f"{frames} frames in 12 s beside a client that closed and stopped reading; longest wait {longest:.2f} s")
    assert frames > 1_000 and longest < 8.0  # 10 s when the send waited for the close


def test_a_feed_server_whose_source_fails_stops_with_the_error_instead_of_hanging() -> None:
    """The pump died and the server listened on: its clients waited for frames forever."""
    from rtca.errors import RtcaError
    from rtca.feed.server import FeedServer, Outgoing, serve_foreground

    class Broken:
        products = frozenset({"X-USD"})

        async def next(self) -> Outgoing | None:
            raise ValueError("a frame this source cannot make")

        def state(self, channel: str, product: str | None) -> list[Outgoing]:
            return []

        def resume(self) -> None:
            pass

    server = FeedServer(Broken())
    codes: list[int | None] = []
    threads: list[threading.Thread] = []

    def subscribe(url: str) -> None:  # a client, so the pump asks the source for a frame
        async def client() -> None:
            codes.append(await close_code(url, ["X-USD"], ["ticker"]))

        threads.append(threading.Thread(target=lambda: asyncio.run(client()), daemon=True))
        threads[0].start()

    with pytest.raises(RtcaError, match="the feed server stopped: ValueError: a frame this source cannot make"):
        serve_foreground(server, announce=subscribe)
    threads[0].join(10)
    assert codes == [1011]  # told, not left waiting


@pytest.mark.parametrize("bad", [["buy", "NaN", "1"], ["sell", "101.5", "Infinity"], ["buy", "abc", "1"]])
def test_a_recorded_level_that_is_no_decimal_is_replayed_and_later_subscribers_still_get_the_book(
        run: Run, bad: list[Any]) -> None:  # fmt: skip
    """A "NaN" price became a key of the book the server keeps; the next subscriber's snapshot sorted the keys and
    the error failed the pump: every client was closed with 1011 and an ingest beside it stopped. The bad level is
    skipped, and only it: the snapshot's other levels (numbers too) and the frame's other changes are kept."""
    snapshot = {"type": "snapshot", "product_id": "BTC-USD", "bids": [["100.00", "1"], [99.5, 2], ["x", "1"]],
                "asks": [["101.00", "1"]]}  # fmt: skip
    update = {"type": "l2update", "product_id": "BTC-USD", "time": "2021-04-17T16:43:30.244075Z",
              "changes": [bad, ["buy", "99.00", "3"]]}  # fmt: skip
    ticker = {"type": "ticker", "product_id": "BTC-USD", "price": "100.5", "time": "2021-04-17T16:43:31Z"}
    frames = (Received(1.0, orjson.dumps(snapshot).decode()), Received(1.1, orjson.dumps(update).decode()),
              *(Received(1.2 + i / 10, orjson.dumps({**ticker, "sequence": i + 1}).decode()) for i in range(20)))

    async def two_subscribers() -> tuple[list[dict[str, Any]], list[dict[str, Any]], BaseException | None]:
        async with replay_server(Capture(frames), speed="max", loop=True) as server:
            seen = []
            for _ in range(2):  # the first gets the update replayed; the second subscribes after it
                async with connect(server.url, close_timeout=0.1) as ws:
                    await ws.send(subscribe_frame(["BTC-USD"], ["level2", "ticker"]))
                    got, _code = await collect(ws, limit=25)
                    seen.append(got)
            return seen[0], seen[1], server.failure

    first, second, failure = run(two_subscribers())
    assert failure is None
    assert any(f["type"] == "l2update" and f["changes"][0] == bad for f in first)  # replayed as recorded
    snapshots = [f for f in second if f["type"] == "snapshot"]
    assert snapshots and snapshots[0]["bids"] == [["100.00", "1"], [99.5, 2], ["99.00", "3"]]
    assert snapshots[0]["asks"] == [["101.00", "1"]]
    assert sum(f["type"] == "ticker" for f in second) >= 5  # and the feed goes on

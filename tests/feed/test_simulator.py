"""The simulator is deterministic for a seed, protocol-valid, and served with the exchange's protocol."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from decimal import Decimal
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rtca.feed.book import L2Book
from rtca.feed.gaps import GapDetector
from rtca.feed.protocol import END_OF_STREAM, L2Update, Match, Ticker, parse_message, subscribe_frame
from rtca.feed.simulator import PACING_SLACK, SimulatedMarket, SimulatorSource, simulator_server

Run = Callable[..., Any]
PRODUCTS = ["BTC-USD", "ETH-USD", "DOGE-USD", "ZZZ-EUR"]
START_US = 1_700_000_000_000_000


def frames(seed: int, steps: int, products: list[str] = PRODUCTS) -> list[dict[str, Any]]:
    market = SimulatedMarket(products, seed=seed, start_us=START_US)
    return [frame for step in range(steps) for frame in market.step(START_US + step * 20_000)]


def test_same_seed_same_market() -> None:
    assert frames(7, 3000) == frames(7, 3000)
    assert frames(7, 3000) != frames(8, 3000)


def test_frames_are_valid_and_consistent() -> None:
    market = SimulatedMarket(PRODUCTS, seed=3, start_us=START_US)
    books = {}
    for product in PRODUCTS:
        book = L2Book()
        snapshot = market.snapshot(product)
        book.reset(snapshot["bids"], snapshot["asks"])
        books[product] = book
    detector, kinds = GapDetector(), Counter[str]()
    trades: dict[str, list[int]] = {p: [] for p in PRODUCTS}
    for step in range(20_000):
        for frame in market.step(START_US + step * 10_000):
            message = parse_message(frame)  # raises on anything invalid
            kinds[message.type] += 1
            detector.observe(message)
            if isinstance(message, L2Update):
                book = books[message.product_id]
                for side, price, size in frame["changes"]:
                    book.apply(side, price, size)
                best_bid, best_ask = book.best("buy"), book.best("sell")
                assert best_bid is not None and best_ask is not None and best_bid < best_ask, "crossed book"
            if isinstance(message, Match):
                trades[message.product_id].append(message.trade_id)
                assert message.price == books[message.product_id].best("sell" if message.side == "sell" else "buy")
            if isinstance(message, Ticker):
                assert message.best_bid_size is not None and message.best_bid is not None
    print("kinds:", dict(kinds))
    assert set(kinds) == {"l2update", "match", "ticker", "heartbeat"}
    assert kinds["match"] == kinds["ticker"] > 1000
    assert detector.missed_trades == 0 and detector.out_of_order == 0
    assert all(ids == list(range(ids[0], ids[0] + len(ids))) for ids in trades.values())


def test_books_reach_beyond_the_depth_bands() -> None:
    """Besides the levels a tick apart at the top (under 2 bps together), each side keeps resting orders up to 100 bps
    away, as a real book does: the book function's depth within 10 bps is a part of its depth within 50 bps, not the
    whole book (before, the simulator's whole book lay within 2 bps of the mid)."""
    market = SimulatedMarket(PRODUCTS, seed=5, start_us=START_US)
    for step in range(20_000):
        market.step(START_US + step * 10_000)
    near_total = band_total = 0.0
    for product in PRODUCTS:
        book = market.products[product].book
        bid, ask = book.best("buy"), book.best("sell")
        assert bid is not None and ask is not None
        mid = (bid + ask) / 2
        for side in ("buy", "sell"):
            away = {abs(price - mid) / mid * 10_000: float(size) for price, (_, size) in book.side(side).items()}
            near = sum(size for bps, size in away.items() if bps <= 10)
            band = sum(size for bps, size in away.items() if bps <= 50)
            assert max(away) > 10, f"{product} {side}: nothing beyond 10 bps"
            assert 0 < near < sum(away.values())
            near_total, band_total = near_total + near, band_total + band
    assert band_total > near_total


def test_server_subscription_state_and_rate(run: Run) -> None:
    async def session() -> tuple[list[dict[str, Any]], float, int | None]:
        async with simulator_server(PRODUCTS, rate=400, seed=1, limit=400) as server, connect(server.url) as ws:
            started = time.monotonic()
            await ws.send(subscribe_frame(["BTC-USD", "ETH-USD"], ["level2_batch", "ticker", "matches", "status"]))
            received = []
            try:
                while True:
                    received.append(orjson.loads(await ws.recv()))
            except ConnectionClosed as exc:
                return received, time.monotonic() - started, exc.rcvd.code if exc.rcvd else None

    received, elapsed, code = run(session())
    print(f"{len(received)} frames in {elapsed:.2f} s")
    assert received[0]["type"] == "subscriptions"
    state = [f["type"] for f in received[1:8]]
    assert state == ["snapshot", "snapshot", "ticker", "ticker", "last_match", "last_match", "status"]
    assert {f.get("product_id") for f in received[8:]} <= {"BTC-USD", "ETH-USD"}
    assert "heartbeat" not in {f["type"] for f in received}  # not subscribed
    assert code == END_OF_STREAM
    assert elapsed > 0.7  # 400 frames at 400/s: never faster (the exact pacing: test_frames_are_paced_at_the_rate)


@pytest.mark.parametrize("rate", [400.0, 37.5])
def test_frames_are_paced_at_the_rate(run: Run, rate: float, loop_clock: Any, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:  # fmt: skip
    """Frame i goes out i / rate seconds after the source resumed, or up to `PACING_SLACK` before that with the frames
    due before it (one wake-up of the loop for them all): read off a fake loop clock, not the wall's."""
    import rtca.feed.simulator

    monkeypatch.setattr(rtca.feed.simulator, "asyncio", loop_clock)
    sent = run(loop_clock.send_times(SimulatorSource(PRODUCTS, rate=rate, seed=1, limit=200)))
    assert len(sent) == 200
    due = [i / rate for i in range(200)]
    early = [d - s for s, d in zip(sent, due, strict=True)]
    assert min(early) >= -1e-9 and max(early) <= PACING_SLACK + 1e-9
    assert sent == sorted(sent)
    wake_ups = len(set(sent))
    if 1 / rate < PACING_SLACK:  # 400/s: frames 2.5 ms apart go out three at a time
        assert wake_ups < len(sent) / 2
    else:  # 37.5/s: each frame at its own time
        assert sent == pytest.approx(due, abs=1e-9)


def test_a_trade_that_empties_a_side_sends_the_level_that_refills_it() -> None:
    """The simulator keeps a side alive by adding a level further out when a trade takes its last one; that level
    must be in the trade's l2update, or every subscriber's book lacks a level the simulator trades against."""
    market = SimulatedMarket(PRODUCTS[:1], seed=5, start_us=START_US)
    product = market.products[PRODUCTS[0]]
    for side in ("buy", "sell"):  # one level of the smallest size left per side: the next trade there takes it
        best = product.book.best(side)
        for price in [p for p in product.book.side(side) if p != best]:
            product.set_level(side, price, 0 * price)
        product.set_level(side, best, Decimal("0.00000001"))
    book = L2Book()
    snapshot = market.snapshot(PRODUCTS[0])
    book.reset(snapshot["bids"], snapshot["asks"])
    for step in range(1, 5):
        match, _ticker, update = market._trade(product, START_US + step * 1000)
        for side, price, size in update["changes"]:
            book.apply(side, price, size)
        assert book.snapshot(PRODUCTS[0]) == market.snapshot(PRODUCTS[0]), f"trade {step} ({match['side']} side)"
        assert book.best("buy") is not None and book.best("sell") is not None

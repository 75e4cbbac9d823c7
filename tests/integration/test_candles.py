"""Candles (Pinot SQL over `coinbase_matches`, `rtca.pinot.queries.candles_sql`) against pandas on the same trades.

The trades are the test's own (a product name no feed uses), routed exactly as the router routes a match and
produced to the real matches topic, so the real table consumes them; pandas resamples the same trades by minute.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import pandas as pd
import pytest

from rtca.feed.sinks import pulsar_client
from rtca.functions.routing import convert
from rtca.pinot.client import PinotClient
from rtca.pinot.queries import candles_sql
from rtca.pinot.tables import apply_tables
from rtca.settings import Settings
from waiting import wait_for

pytestmark = pytest.mark.stack

TRADES = 400


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def trades(stack_up: Settings, unique: str) -> Iterator[tuple[str, pd.DataFrame]]:
    """TRADES matches of a product of our own over the last 30 minutes (distinct times), in Pinot."""
    apply_tables(stack_up)
    product = f"CNDL{unique.upper()}-USD"
    rng = random.Random(unique)
    now_ms = int(time.time() * 1000)
    times = sorted(rng.sample(range(now_ms - 30 * 60_000, now_ms - 60_000), TRADES))
    price = 100.0
    rows = []
    client = pulsar_client(stack_up)
    producer = client.create_producer(stack_up.topic(stack_up.topics.matches), batching_enabled=True)
    try:
        for trade_id, ms in enumerate(times, start=1):
            price = round(max(1.0, price * (1 + rng.gauss(0, 0.002))), 2)
            size = round(rng.uniform(0.0001, 3.0), 8)
            frame = {"type": "match", "product_id": product, "trade_id": trade_id, "sequence": 1000 + trade_id,
                     "price": f"{price:.2f}", "size": f"{size:.8f}", "side": rng.choice(["buy", "sell"]),
                     "time": _iso(ms), "maker_order_id": "m", "taker_order_id": "t"}
            routed = convert(frame, now_ms)
            producer.send_async(routed.data, None, partition_key=product, event_timestamp=ms)
            rows.append({"event_ms": ms, "price": price, "size": size})
        producer.flush()
    finally:
        client.close()
    with PinotClient(stack_up) as pinot:
        where = f"WHERE product_id = '{product}'"
        wait_for(lambda: pinot.count(stack_up.tables.matches, where) >= TRADES, timeout=180,
                 what=f"{TRADES} trades of {product} in {stack_up.tables.matches}")
    yield product, pd.DataFrame(rows)


def test_one_minute_candles_equal_pandas(stack_up: Settings, trades: tuple[str, pd.DataFrame]) -> None:
    product, frame = trades
    frame["bucket"] = frame["event_ms"] // 60_000 * 60_000
    frame["notional"] = frame["price"] * frame["size"]
    grouped = frame.sort_values("event_ms").groupby("bucket")
    expected = pd.DataFrame({
        "open": grouped["price"].first(), "high": grouped["price"].max(), "low": grouped["price"].min(),
        "close": grouped["price"].last(), "volume": grouped["size"].sum(),
        "vwap": grouped["notional"].sum() / grouped["size"].sum(), "trades": grouped.size(),
    })  # fmt: skip
    with PinotClient(stack_up) as pinot:
        bars = pinot.query(candles_sql(stack_up, product, minutes=60))
    got = pd.DataFrame(bars, columns=["bucket", "open", "high", "low", "close", "volume", "vwap", "trades"])
    got["bucket"] = got["bucket"].astype("int64")
    got = got.set_index("bucket").astype(float)
    print(f"{product}: {len(frame)} trades, {len(expected)} pandas candles, {len(got)} Pinot candles")
    assert list(got.index) == list(expected.index)
    pd.testing.assert_frame_equal(got, expected.astype(float), check_exact=False, rtol=1e-9, atol=0,
                                  check_names=False)

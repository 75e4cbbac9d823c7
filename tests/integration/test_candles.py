"""Candles (Pinot SQL over `coinbase_matches`, `rtca.pinot.queries.candles_sql`) against pandas on the same trades.

The trades are the test's own (product names no feed uses), routed exactly as the router routes a match and
produced to the real matches topic, so the real table consumes them; pandas buckets the same trades
(`references.pandas_candles`). Three inputs: random trades, the shipped capture's matches (times shifted into the
last hours) and a seeded simulator run; the last two are put in the table once and queried in 1 s, 1 min and 1 h
candles.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import orjson
import pandas as pd
import pytest
from references import pandas_candles, settle_candle_ties

from rtca.feed.capture import SHIPPED_CAPTURE, read_capture
from rtca.feed.protocol import format_time_us, parse_time
from rtca.feed.simulator import SimulatedMarket
from rtca.feed.sinks import pulsar_client
from rtca.functions.routing import convert
from rtca.pinot.client import PinotClient
from rtca.pinot.queries import candles_sql
from rtca.pinot.tables import apply_tables
from rtca.settings import Settings
from waiting import wait_for

pytestmark = pytest.mark.stack

TRADES = 400
COLUMNS = ["bucket", "open", "high", "low", "close", "volume", "vwap", "trades"]
SIZES_MS = {"1s": 1_000, "1m": 60_000, "1h": 3_600_000}
HOUR_MS = 3_600_000


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
            rows.append({"product_id": product, "event_ms": ms, "trade_id": trade_id, "price": price, "size": size})
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
    expected = pandas_candles(frame, 60_000).droplevel("product_id")
    with PinotClient(stack_up) as pinot:
        bars = pinot.query(candles_sql(stack_up, product, minutes=60))
    got = pd.DataFrame(bars, columns=COLUMNS)
    got["bucket"] = got["bucket"].astype("int64")
    got = got.set_index("bucket").sort_index().astype(float)  # asked newest first
    print(f"{product}: {len(frame)} trades, {len(expected)} pandas candles, {len(got)} Pinot candles")
    assert list(got.index) == list(expected.index)
    pd.testing.assert_frame_equal(got, settle_candle_ties(got, expected), check_exact=False, rtol=1e-9, atol=0,
                                  check_names=False)


def _produce(settings: Settings, frames: list[dict[str, Any]]) -> pd.DataFrame:
    """Route each match frame as the router does, produce it to the real matches topic, and return the records."""
    records = []
    client = pulsar_client(settings)
    producer = client.create_producer(settings.topic(settings.topics.matches), batching_enabled=True)
    try:
        for frame in frames:
            routed = convert(frame, int(time.time() * 1000))
            producer.send_async(routed.data, None, partition_key=frame["product_id"],
                                event_timestamp=routed.record["event_ms"])
            records.append(routed.record)
        producer.flush()
    finally:
        client.close()
    return pd.DataFrame(records)


def _capture_matches(tag: str, at_ms: int) -> list[dict[str, Any]]:
    """The shipped capture's matches (and last matches), renamed to products of our own and shifted by whole
    milliseconds so that their median trade falls at `at_ms` (ties and offsets within a millisecond kept; not the
    middle of their span: the last matches, older trades, would put every busy product's trades on one side)."""
    frames = [raw for frame in read_capture(SHIPPED_CAPTURE).frames
              if (raw := orjson.loads(frame.text)).get("type") in ("match", "last_match")]  # fmt: skip
    micros = [int(parse_time(f["time"]).timestamp() * 1_000_000) for f in frames]
    shift_us = (at_ms - sorted(micros)[len(micros) // 2] // 1000) * 1000
    for frame, us in zip(frames, micros, strict=True):
        base, quote = frame["product_id"].split("-")
        frame.update(product_id=f"{base}{tag}-{quote}", time=format_time_us(us + shift_us))
    return frames


def _simulator_matches(tag: str, start_ms: int, steps: int = 6_000, step_ms: int = 100) -> list[dict[str, Any]]:
    """The matches of a seeded simulator run on products of our own, one step every `step_ms` from `start_ms`."""
    market = SimulatedMarket([f"SIM{tag}{p}" for p in ("A-USD", "B-EUR")], seed=73, start_us=start_ms * 1000)
    return [frame for i in range(1, steps + 1) for frame in market.step((start_ms + i * step_ms) * 1000)
            if frame["type"] == "match"]  # fmt: skip


@pytest.fixture(scope="module")
def capture_and_simulator(stack_up: Settings) -> dict[str, pd.DataFrame]:
    """The capture's and a simulator run's matches in Pinot (one fill), around the start of an hour at least 15
    minutes ago (so that 1 h candles split them, and nothing lies in the future)."""
    apply_tables(stack_up)
    tag = uuid.uuid4().hex[:6].upper()
    now_ms = int(time.time() * 1000)
    hour_ms = (now_ms - 15 * 60_000) // HOUR_MS * HOUR_MS
    inputs = {"capture": _produce(stack_up, _capture_matches(tag, hour_ms)),
              "simulator": _produce(stack_up, _simulator_matches(tag, hour_ms - 5 * 60_000))}
    total = sum(len(frame) for frame in inputs.values())
    products = sorted({p for frame in inputs.values() for p in frame["product_id"]})
    in_list = ", ".join(f"'{p}'" for p in products)
    with PinotClient(stack_up) as pinot:
        wait_for(lambda: pinot.count(stack_up.tables.matches, f"WHERE product_id IN ({in_list})") >= total,
                 timeout=180, what=f"{total} trades of {len(products)} products in {stack_up.tables.matches}")
    return inputs


@pytest.mark.parametrize("source", ["capture", "simulator"])
@pytest.mark.parametrize("size", list(SIZES_MS))
def test_candles_of_the_capture_and_a_simulator_run_equal_pandas(stack_up: Settings, source: str, size: str,
                                                               capture_and_simulator: dict[str, pd.DataFrame]) -> None:
    """Each product's candles of each size, as the notebooks query them, equal pandas over the same trades."""
    trades = capture_and_simulator[source]
    expected = pandas_candles(trades, SIZES_MS[size])
    minutes = (int(time.time() * 1000) - int(trades["event_ms"].min())) // 60_000 + 2  # the window holds them all
    got = []
    with PinotClient(stack_up) as pinot:
        for product in trades["product_id"].unique():
            bars = pd.DataFrame(pinot.query(candles_sql(stack_up, product, minutes=minutes, size=size)),
                                columns=COLUMNS)
            got.append(bars.assign(product_id=product, bucket=bars["bucket"].astype("int64")))
    frame = pd.concat(got).set_index(["product_id", "bucket"]).sort_index().astype(float)
    print(f"{source} {size}: {len(trades)} trades of {trades['product_id'].nunique()} products, "
          f"{len(expected)} pandas candles, {len(frame)} Pinot candles")
    assert list(frame.index) == list(expected.index)
    pd.testing.assert_frame_equal(frame, settle_candle_ties(frame, expected), check_exact=False, rtol=1e-9, atol=0,
                                  check_names=False)

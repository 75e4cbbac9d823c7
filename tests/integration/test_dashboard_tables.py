"""Tables built for the dashboards, over the real topics, with records of the test's own (product names no feed
uses) produced as the functions write them, so the real tables consume them:

- `coinbase_ticker_latest`, an upsert table over the ticker topic, holds one row per product: its newest ticker by
  event time, also when an older ticker arrives after it; the ticker table beside it keeps every ticker;
- `coinbase_book_minute`, aggregated by Pinot as it consumes the book topic, holds one row per product and minute
  whose sums give the same averages as pandas over the book records.
"""

from __future__ import annotations

import random
import time

import orjson
import pandas as pd
import pytest

from rtca.feed.sinks import pulsar_client
from rtca.pinot.client import PinotClient
from rtca.pinot.tables import apply_tables
from rtca.settings import Settings
from waiting import wait_for

pytestmark = pytest.mark.stack

PER_PRODUCT = 200


def produce(settings: Settings, topic: str, records: list[dict[str, object]]) -> None:
    client = pulsar_client(settings)
    try:
        producer = client.create_producer(settings.topic(topic), batching_enabled=True)
        for record in records:
            producer.send_async(orjson.dumps(record), None, partition_key=str(record["product_id"]))
        producer.flush()
    finally:
        client.close()


def test_latest_ticker_per_product_is_the_newest_by_event_time(stack_up: Settings, unique: str) -> None:
    apply_tables(stack_up, ["ticker", "ticker_latest"])
    rng = random.Random(unique)
    products = [f"LT{i}{unique.upper()}-USD" for i in range(3)]
    now_ms = int(time.time() * 1000)
    sent: list[dict[str, object]] = []
    for product in products:
        price = rng.uniform(10, 1000)
        for i in range(PER_PRODUCT):
            price = round(price * (1 + rng.gauss(0, 0.001)), 4)
            sent.append({"type": "ticker", "product_id": product, "price": price, "best_bid": price - 0.01,
                         "best_ask": price + 0.01, "volume_24h": float(i), "sequence": i + 1,
                         "event_ms": now_ms - 600_000 + i * 1000, "received_ms": now_ms})  # fmt: skip
    rng.shuffle(sent)
    # the newest ticker of each product goes first, so an older one always arrives after it
    newest = {p: max((r for r in sent if r["product_id"] == p), key=lambda r: r["event_ms"]) for p in products}
    order = list(newest.values()) + [r for r in sent if r not in newest.values()]
    produce(stack_up, stack_up.topics.ticker, order)

    names = ", ".join(f"'{p}'" for p in products)
    latest, ticker = stack_up.tables.ticker_latest, stack_up.tables.ticker
    with PinotClient(stack_up) as pinot:
        every = f"SELECT COUNT(*) FROM {latest} WHERE product_id IN ({names}) OPTION(skipUpsert=true)"
        wait_for(lambda: pinot.query(every)[0][0] >= len(sent), timeout=180,
                 what=f"{len(sent)} tickers of {products} consumed by {latest}")
        rows = pinot.query(f"SELECT product_id, event_ms, price, volume_24h FROM {latest} "
                           f"WHERE product_id IN ({names}) ORDER BY product_id LIMIT 100")
        kept = pinot.count(ticker, f"WHERE product_id IN ({names})")
    print(f"{len(sent)} tickers of {len(products)} products; {latest} rows {len(rows)}; {ticker} rows {kept}")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (p, newest[p]["event_ms"], newest[p]["price"], newest[p]["volume_24h"]) for p in sorted(products)]
    assert kept == len(sent)


def test_book_per_minute_sums_give_the_averages_of_every_book_record(stack_up: Settings, unique: str) -> None:
    apply_tables(stack_up, ["book", "book_minute"])
    rng = random.Random(unique)
    products = [f"BM{i}{unique.upper()}-USD" for i in range(2)]
    start = (int(time.time() * 1000) - 20 * 60_000) // 60_000 * 60_000
    sent = [{"product_id": p, "event_ms": start + rng.randrange(0, 10 * 60_000), "spread_bps": rng.uniform(0.1, 30),
             "imbalance": rng.uniform(-1, 1), "mid": 100.0, "received_ms": start}
            for p in products for _ in range(300)]  # fmt: skip
    # a record with a null (not the book function's: anything may publish to the topic) in the middle: Pinot's SUM
    # failed on it half-way through the row, and the table took no row after it (`filterConfig` drops it)
    poison = {**sent[0], "imbalance": None}
    produce(stack_up, stack_up.topics.book, sent[:300] + [poison] + sent[300:])

    names = ", ".join(f"'{p}'" for p in products)
    rollup = stack_up.tables.book_minute
    with PinotClient(stack_up) as pinot:
        every = f"SELECT SUM(updates) FROM {rollup} WHERE product_id IN ({names})"
        wait_for(lambda: (pinot.query(every)[0][0] or 0) >= len(sent), timeout=180,
                 what=f"{len(sent)} book records of {products} consumed by {rollup}")
        rows = pinot.query(f"SELECT product_id, CAST(event_time AS LONG), updates, spread_bps_sum / updates, imbalance_sum / updates "
                           f"FROM {rollup} WHERE product_id IN ({names}) ORDER BY product_id, event_time LIMIT 1000")
    frame = pd.DataFrame(sent).assign(minute=lambda f: f["event_ms"] // 60_000 * 60_000)
    expected = frame.groupby(["product_id", "minute"]).agg(updates=("spread_bps", "size"),
                                                            spread=("spread_bps", "mean"),
                                                            imbalance=("imbalance", "mean"))  # fmt: skip
    got = pd.DataFrame(rows, columns=["product_id", "minute", "updates", "spread", "imbalance"])
    got = got.set_index(["product_id", "minute"])
    print(f"{len(sent)} book records of {len(products)} products -> {len(got)} rows in {rollup}")
    assert len(got) == len(expected) <= 2 * 10  # one row per product and minute
    pd.testing.assert_frame_equal(got.astype(float), expected.astype(float), rtol=1e-9, check_names=False)

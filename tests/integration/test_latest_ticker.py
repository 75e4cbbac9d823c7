"""`coinbase_ticker_latest`, an upsert table over the real ticker topic, holds one row per product: its newest ticker
by event time, also when an older ticker arrives after it; the ticker table beside it keeps every ticker.

The tickers are the test's own (product names no feed uses), produced to the real ticker topic as the router
writes them, so both real tables consume them.
"""

from __future__ import annotations

import random
import time

import orjson
import pytest

from rtca.feed.sinks import pulsar_client
from rtca.pinot.client import PinotClient
from rtca.pinot.tables import apply_tables
from rtca.settings import Settings
from waiting import wait_for

pytestmark = pytest.mark.stack

PER_PRODUCT = 200


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
    client = pulsar_client(stack_up)
    try:
        producer = client.create_producer(stack_up.topic(stack_up.topics.ticker), batching_enabled=True)
        for record in order:
            producer.send_async(orjson.dumps(record), None, partition_key=str(record["product_id"]))
        producer.flush()
    finally:
        client.close()

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

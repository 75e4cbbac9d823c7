"""Trade flow against a pandas groupby over the same matches."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest

from references import on_time, pandas_flow

from rtca.analytics.flow import TradeFlow
from rtca.feed.capture import SHIPPED_CAPTURE, read_capture
from rtca.functions.routing import convert

W = 60_000


def _run(records: list[dict], window_ms: int) -> tuple[TradeFlow, pd.DataFrame]:
    flow = TradeFlow(window_ms)
    rows = []
    for record in records:
        rows += flow.update(record)
    closed = len(rows)
    rows += flow.flush()
    assert closed == len(rows) - len(flow.products)  # one open window per product until flushed
    got = pd.DataFrame(rows).set_index(["product_id", "event_ms"]).sort_index()
    got.index.names = ["product_id", "win"]
    return flow, got


def _compare(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert not got.index.duplicated().any()  # each window exactly once
    assert list(got.index) == list(expected.index)
    for column in expected.columns:
        np.testing.assert_allclose(got[column].astype(float), expected[column].astype(float), rtol=1e-12,
                                   err_msg=column)


def test_synthetic_matches_equal_pandas() -> None:
    rng = np.random.default_rng(7)
    n = 5000
    df = pd.DataFrame({
        "product_id": rng.choice(["BTC-USD", "ETH-USD", "SOL-USD"], n),
        "event_ms": np.sort(rng.integers(0, 20 * W, n)) + 1_700_000_000_000,
        "side": rng.choice(["buy", "sell"], n),
        "price": rng.uniform(90, 110, n).round(2),
        "size": rng.exponential(1.0, n).round(6) + 1e-6,
    })
    records = [dict(r, event_ms=int(r["event_ms"])) for r in df.to_dict("records")]
    flow, got = _run(records, W)
    _compare(got, pandas_flow(df, W))
    assert got["window_ms"].eq(W).all()
    assert (got["buy_count"] + got["sell_count"]).sum() == n


def test_capture_matches_equal_pandas() -> None:
    records = []
    for frame in read_capture(SHIPPED_CAPTURE).frames:
        raw = orjson.loads(frame.text)
        if raw.get("type") in ("match", "last_match"):
            records.append(convert(raw, int(frame.at * 1000)).record)
    assert len(records) > 20
    # the reference keeps only what the production counts as on time (per product, window never goes back)
    df = pd.DataFrame(records)[["product_id", "event_ms", "side", "price", "size"]]
    window = 5_000
    flow, got = _run(records, window)
    assert flow.late == on_time(df, window)[1]
    _compare(got, pandas_flow(df, window))


def test_taker_side_window_close_and_late_match() -> None:
    flow = TradeFlow(1000)
    m = lambda t, side, price, size: {"product_id": "P", "event_ms": t, "side": side, "price": price, "size": size}  # noqa: E731
    assert flow.update(m(1000, "sell", 10.0, 2.0)) == []  # maker sold = taker BUY
    assert flow.update(m(1999, "buy", 12.0, 1.0)) == []  # maker bought = taker SELL
    [r] = flow.update(m(2000, "buy", 11.0, 1.0))  # first match past the end closes [1000, 2000)
    assert (r["event_ms"], r["window_ms"], r["buy_volume"], r["sell_volume"]) == (1000, 1000, 2.0, 1.0)
    assert r["imbalance"] == pytest.approx(1 / 3) and r["vwap"] == pytest.approx(32 / 3) and r["last_price"] == 12.0
    assert (r["open_price"], r["high_price"], r["low_price"]) == (10.0, 12.0, 10.0)
    assert flow.update(m(1500, "buy", 11.0, 1.0)) == []  # late: its window was emitted
    assert flow.products["P"].late == 1
    restored = TradeFlow.from_state(orjson.loads(orjson.dumps(flow.state())))
    assert restored.update(m(3000, "sell", 1.0, 1.0)) == flow.update(m(3000, "sell", 1.0, 1.0))

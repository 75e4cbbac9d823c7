"""Volatility against pandas: std (ddof=1) of log returns per closed window, exactly once, late prices dropped."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pandas as pd
import pytest

from references import on_time, pandas_vol

from rtca.analytics.volatility import SECONDS_PER_YEAR, Volatility

W = 60_000


def _stream(seed: int = 3, n: int = 4000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 30 * W, n)) + 1_700_000_000_000
    # ~3% of prices arrive late: their event time is pushed back by up to 3 windows
    late_shift = np.where(rng.random(n) < 0.03, rng.integers(1, 3 * W, n), 0)
    return pd.DataFrame({
        "product_id": rng.choice(["BTC-USD", "ETH-USD"], n),
        "event_ms": t - late_shift,
        "price": 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n))),
    })


def test_volatility_equals_pandas_exactly_once_and_late_dropped() -> None:
    df = _stream()
    vol = Volatility(W)
    rows: list[dict] = []
    for record in df.to_dict("records"):
        rows += vol.update(dict(record, event_ms=int(record["event_ms"])))
    rows += vol.flush()
    got = pd.DataFrame(rows).set_index(["product_id", "event_ms"]).sort_index()
    got.index.names = ["product_id", "win"]
    expected, late = pandas_vol(df, W), on_time(df, W)[1]
    assert late > 10 and vol.late == late  # late prices dropped and counted
    assert not got.index.duplicated().any()  # exactly one record per product and window
    assert list(got.index) == list(expected.index)
    assert (got["window_ms"] == W).all()
    for column in ("return_std", "realized_vol", "price", "log_return"):
        np.testing.assert_allclose(got[column].astype(float), expected[column].astype(float), rtol=1e-9,
                                   err_msg=column)
    assert (got["n_returns"] == expected["n_returns"]).all()


def test_window_closes_on_first_price_past_its_end_once() -> None:
    vol = Volatility(1000)
    t = lambda ms, p: {"product_id": "P", "event_ms": ms, "price": p}  # noqa: E731
    for ms, p in [(0, 100.0), (300, 101.0), (600, 99.0), (999, 100.0)]:
        assert vol.update(t(ms, p)) == []
    [r] = vol.update(t(1000, 100.0))
    returns = np.diff(np.log([100.0, 101.0, 99.0, 100.0]))
    assert r["return_std"] == pytest.approx(np.std(returns, ddof=1))
    assert r["realized_vol"] == pytest.approx(np.std(returns, ddof=1) * math.sqrt(3 * SECONDS_PER_YEAR / 1.0))
    assert vol.update(t(999, 120.0)) == [] and vol.late == 1  # late: [0, 1000) was emitted; dropped
    assert vol.update(t(1500, 100.0)) == []  # same open window: no second record
    assert vol.update(t(1700, 100.0)) == []
    [r2] = vol.update(t(5000, 100.0))
    assert r2["event_ms"] == 1000 and r2["realized_vol"] == 0.0  # two equal returns: std 0
    [r3] = vol.update(t(6000, 100.0))
    assert r3["event_ms"] == 5000 and r3["return_std"] is None and r3["realized_vol"] is None  # one price


def test_state_round_trip_and_bad_prices() -> None:
    vol = Volatility(1000)
    vol.update({"product_id": "P", "event_ms": 0, "price": 1.0})
    vol.update({"product_id": "P", "event_ms": 10, "price": 1.1})
    restored = Volatility.from_state(orjson.loads(orjson.dumps(vol.state())))
    nxt = {"product_id": "P", "event_ms": 2000, "price": 1.2}
    assert restored.update(nxt) == vol.update(nxt)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            vol.update({"product_id": "P", "event_ms": 3000, "price": bad})

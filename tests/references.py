"""Pandas references for the windowed analytics, independent of `rtca.analytics`, and the seeded random walks the
statistics tests feed (unit and stack tests share them).

Both follow the stated conventions: windows ``[start, start + window_ms)`` with ``start = event_ms // window_ms *
window_ms`` per product; a record whose window is before its product's latest window so far is late and dropped.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

SECONDS_PER_YEAR = 365 * 24 * 3600  # the documented annualisation (rtca.analytics.volatility)


def on_time(df: pd.DataFrame, window_ms: int) -> tuple[pd.DataFrame, int]:
    """(the rows that are on time, with their window start in ``win``; the number of late rows)."""
    win = df["event_ms"] // window_ms * window_ms
    late = win < win.groupby(df["product_id"]).cummax()
    return df[~late].assign(win=win[~late]), int(late.sum())


def pandas_flow(df: pd.DataFrame, window_ms: int) -> pd.DataFrame:
    """Trade flow per (product, window) of matches (``product_id``, ``event_ms``, ``side``, ``price``, ``size``):
    a match's side is the maker's, so ``side == "sell"`` is a taker buy; open and last price by event time, then
    arrival."""
    df, _ = on_time(df.assign(arrival=np.arange(len(df))), window_ms)
    taker_buy = df["side"] == "sell"
    notional = df["price"] * df["size"]
    df = df.assign(buy_volume=df["size"].where(taker_buy, 0.0), sell_volume=df["size"].where(~taker_buy, 0.0),
                   buy_notional=notional.where(taker_buy, 0.0), sell_notional=notional.where(~taker_buy, 0.0),
                   buy_count=taker_buy.astype(int), sell_count=(~taker_buy).astype(int))  # fmt: skip
    g = df.sort_values(["event_ms", "arrival"], kind="stable").groupby(["product_id", "win"])
    out = g[["buy_volume", "sell_volume", "buy_notional", "sell_notional", "buy_count", "sell_count"]].sum()
    out["last_price"] = g["price"].last()
    out["open_price"], out["high_price"], out["low_price"] = g["price"].first(), g["price"].max(), g["price"].min()
    volume = out["buy_volume"] + out["sell_volume"]
    out["imbalance"] = (out["buy_volume"] - out["sell_volume"]) / volume
    out["vwap"] = (out["buy_notional"] + out["sell_notional"]) / volume
    return out


def pandas_candles(df: pd.DataFrame, size_ms: int) -> pd.DataFrame:
    """OHLCV and VWAP per (product, bucket) of trades (``product_id``, ``event_ms``, ``trade_id``, ``price``,
    ``size``), buckets ``[start, start + size_ms)`` of UTC epoch time (Pinot's DATETRUNC); every trade counts (a
    table, not a stream: none is late); open and close by event time, then trade id. The trades of one taker order
    share a millisecond and Pinot takes any of them: ``open_ties`` / ``close_ties`` hold the prices of the bucket's
    first / last millisecond (`settle_candle_ties`)."""
    df = df.reset_index(drop=True)  # labels of their own: the ties are found by label
    df = df.assign(bucket=df["event_ms"] // size_ms * size_ms, notional=df["price"] * df["size"])
    g = df.sort_values(["event_ms", "trade_id"], kind="stable").groupby(["product_id", "bucket"])
    first_ms, last_ms = g["event_ms"].transform("min"), g["event_ms"].transform("max")
    ties = df.loc[first_ms.index]
    opens = ties[ties["event_ms"] == first_ms].groupby(["product_id", "bucket"])["price"].agg(frozenset)
    closes = ties[ties["event_ms"] == last_ms].groupby(["product_id", "bucket"])["price"].agg(frozenset)
    return pd.DataFrame({"open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
                         "close": g["price"].last(), "volume": g["size"].sum(),
                         "vwap": g["notional"].sum() / g["size"].sum(), "trades": g.size(),
                         "open_ties": opens, "close_ties": closes})


def settle_candle_ties(got: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """`expected` (`pandas_candles`, same index as `got`) with the open and close Pinot took where it took another
    trade of the same first or last millisecond; the tie columns dropped, the rest as float."""
    out = expected.copy()
    for column in ("open", "close"):
        took_a_tie = [price in ties for price, ties in zip(got[column], out[f"{column}_ties"])]
        out.loc[took_a_tie, column] = got.loc[took_a_tie, column]
    return out.drop(columns=["open_ties", "close_ties"]).astype(float)


def pandas_vol(df: pd.DataFrame, window_ms: int) -> pd.DataFrame:
    """Realized volatility per (product, window) of prices (``product_id``, ``event_ms``, ``price``) in arrival
    order: std (ddof=1) of the log returns between consecutive prices of the window, annualised by
    sqrt(n_returns * SECONDS_PER_YEAR / window_s)."""
    df, _ = on_time(df[["product_id", "event_ms", "price"]], window_ms)
    df = df.assign(r=np.log(df["price"]).groupby([df["product_id"], df["win"]]).diff())
    g = df.groupby(["product_id", "win"])
    out = pd.DataFrame({"return_std": g["r"].std(ddof=1), "n_returns": g["r"].count(), "n_prices": g["price"].size(),
                        "price": g["price"].last(), "log_return": np.log(g["price"].last() / g["price"].first())})  # fmt: skip
    out["realized_vol"] = out["return_std"] * np.sqrt(out["n_returns"] * SECONDS_PER_YEAR / (window_ms / 1000))
    return out


def random_walks(products: Mapping[str, float], n: int, *, seed: int) -> Iterator[tuple[int, str, float]]:
    """Seeded random walks of several products, interleaved: (sequence from 1, product, price). A quarter of the
    steps repeat the last price, as real tickers often do; a price never falls below half of the one before."""
    rng = random.Random(seed)
    prices = dict(products)
    for sequence in range(1, n + 1):
        product = rng.choice(sorted(prices))
        if rng.random() > 0.25:
            step = rng.gauss(0.0, prices[product] * 2e-3)
            prices[product] = round(max(prices[product] / 2, prices[product] + step), 8)
        yield sequence, product, prices[product]

"""`TickerStats` against pandas: the incremental kernel must give pandas' numbers on every row."""

from __future__ import annotations

import math
import random

import orjson
import pytest

from rtca.analytics.stats import STATE_LAYOUT, StatsRow, TickerStats, compute, mismatches, pandas_reference

def walk(seed: int, n: int, start: float, step: float, *, tick: int | None = None, stay: float = 0.0) -> list[float]:
    """A seeded random walk; `tick` rounds to that many decimals and `stay` repeats the last price (real tickers
    often trade at the same price), the cases where near-zero variances need pandas' exact arithmetic."""
    rng = random.Random(seed)
    price, out = start, []
    for _ in range(n):
        if rng.random() >= stay:
            price = max(start * 1e-3, price + rng.gauss(0.0, step))
            if tick is not None:
                price = round(price, tick)
        out.append(price)
    return out


WALKS = {
    "plain": walk(1, 1500, 100.0, 0.5),
    "btc-cents": walk(2, 1500, 40_000.0, 5.0, tick=2, stay=0.3),
    "satoshi": walk(3, 1500, 0.00001305, 1e-7, tick=8, stay=0.5),
    "sticky": walk(4, 800, 1.0, 0.01, tick=2, stay=0.8),
    "large": walk(5, 1500, 1e6, 0.001, tick=3, stay=0.2),
}


@pytest.mark.parametrize("name", sorted(WALKS))
def test_equals_pandas_on_random_walks(name: str) -> None:
    prices = WALKS[name]
    assert mismatches(compute(prices), pandas_reference(prices), prices) == []


@pytest.mark.parametrize("name", sorted(WALKS))
def test_is_bit_identical_to_pandas(name: str) -> None:
    """Stronger than the 1e-9 contract: the kernel replays pandas' floating-point operations exactly."""
    prices = WALKS[name]
    assert compute(prices) == pandas_reference(prices)


@pytest.mark.parametrize(("span", "window"), [(10, 5), (3, 5), (1, 5), (10, 1), (10, 2), (20, 30)])
def test_other_spans_and_windows(span: float, window: int) -> None:
    prices = WALKS["btc-cents"][:400]
    assert compute(prices, span, window) == pandas_reference(prices, span, window)


def test_values_crossing_zero_and_negative_zero() -> None:
    """Not prices, but the kernel is pandas' on any finite series: its sign bookkeeping (roll_mean's clamp of a
    wrong-signed mean, signbit of -0.0) included."""
    rng = random.Random(9)
    values = [round(rng.gauss(0.0, 0.3), 1) for _ in range(600)] + [0.0, -0.0, -0.0, 0.0, -1.0, -0.0]
    assert compute(values) == pandas_reference(values)
    assert compute(values, 3, 2) == pandas_reference(values, 3, 2)


def test_several_products_interleaved() -> None:
    """One kernel per product: interleaving the streams does not mix them."""
    rng = random.Random(7)
    streams = {p: walk(10 + k, 600, 10.0 ** k, 0.01 * 10.0**k, tick=4, stay=0.3) for k, p in enumerate("ABCD")}
    cursor = {p: 0 for p in streams}
    kernels = {p: TickerStats() for p in streams}
    rows: dict[str, list[StatsRow]] = {p: [] for p in streams}
    while any(cursor[p] < len(s) for p, s in streams.items()):
        product = rng.choice([p for p, s in streams.items() if cursor[p] < len(s)])
        rows[product].append(kernels[product].update(streams[product][cursor[product]]))
        cursor[product] += 1
    for product, prices in streams.items():
        assert rows[product] == pandas_reference(prices)


def test_warm_up_rows_are_none_where_pandas_gives_nan() -> None:
    rows = compute([10.0, 11.0, 12.0, 11.0, 10.0, 9.0])
    assert rows[0] == StatsRow(10.0, None, None, None, None, None)
    for row in rows[1:4]:
        assert row.ewma_var is not None and row.ewma_std is not None
        assert (row.rolling_mean, row.rolling_std, row.rolling_var) == (None, None, None)
    assert rows[4].rolling_mean == pytest.approx(10.8) and rows[4].rolling_var == pytest.approx(0.7)
    assert rows[5].rolling_std == pytest.approx(math.sqrt(1.3))


def test_constant_prices_give_zero_not_none() -> None:
    rows = compute([5.0] * 8)
    assert rows[-1] == StatsRow(5.0, 0.0, 0.0, 5.0, 0.0, 0.0)


@pytest.mark.parametrize("cut_every", [1, 3, 5, 37])
def test_resume_from_serialised_state_equals_uninterrupted(cut_every: int) -> None:
    """What a restarted function does: rebuild from the last record's JSON state and carry on, bit for bit."""
    prices = WALKS["btc-cents"][:300]
    kernel, rows = TickerStats(), []
    for i, price in enumerate(prices):
        if i % cut_every == 0:
            kernel = TickerStats.from_state(orjson.loads(orjson.dumps(kernel.state())))
        rows.append(kernel.update(price))
    assert rows == compute(prices)


def test_state_is_small_and_plain_json() -> None:
    kernel = TickerStats()
    for price in WALKS["plain"][:50]:
        kernel.update(price)
    state = kernel.state()
    assert orjson.loads(orjson.dumps(state)) == state
    assert len(state) == len(STATE_LAYOUT) + 5 and state[STATE_LAYOUT.index("count")] == 50
    assert len(orjson.dumps(state)) < 450


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_price_raises_and_leaves_state_unchanged(bad: float) -> None:
    kernel = TickerStats()
    kernel.update(1.0)
    before = kernel.state()
    with pytest.raises(ValueError):
        kernel.update(bad)
    assert kernel.state() == before


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.__setitem__(0, 99),  # another version
        lambda s: s.pop(),  # a price missing from the window
        lambda s: s.__delitem__(slice(4, None)),  # truncated
        lambda s: s.__setitem__(slice(None), [{"v": 1}]),  # not ours at all
    ],
)
def test_from_state_rejects_foreign_state(mutate) -> None:  # type: ignore[no-untyped-def]
    kernel = TickerStats()
    for price in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        kernel.update(price)
    state = kernel.state()
    mutate(state)
    with pytest.raises((ValueError, TypeError)):
        TickerStats.from_state(state)


def test_mismatches_reports_differences_and_none_vs_zero() -> None:
    ref = [StatsRow(1.0, None, None, None, None, None), StatsRow(2.0, 0.5, 0.25, None, None, None)]
    assert mismatches(ref, ref, [1.0, 2.0]) == []
    near = [ref[0], StatsRow(2.0 * (1 + 1e-12), 0.5, 0.25, None, None, None)]
    assert mismatches(near, ref, [1.0, 2.0]) == []
    off = [StatsRow(1.0, 0.0, None, None, None, None), StatsRow(2.1, 0.5, 0.25, None, None, None)]
    assert len(mismatches(off, ref, [1.0, 2.0])) == 2


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        TickerStats(span=0.5)
    with pytest.raises(ValueError):
        TickerStats(window=0)

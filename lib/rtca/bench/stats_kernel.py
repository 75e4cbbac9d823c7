"""Benchmark: the incremental ticker-statistics kernel against the seed's per-message pandas method.

    python -m rtca.bench.stats_kernel [--messages 5000] [--products 4] [--seed 1]

Both run on the same interleaved (product, price) messages. The seed's method, per message: append the price to
its product's deque(maxlen=20), build a pandas Series of the deque, take ewm(span=10, adjust=False) mean/std/var and
rolling(5) mean/std/var, keep the last values. Ours: `TickerStats.update` (constant work, no pandas). Printed:
messages/s of each (the median of three runs of each), the ratio (goal >= 30x), and the agreement checks: rolling
values equal the seed's, EWMA values differ by design (the seed restarted its EWMA on each 20-price window; ours runs
over the whole history and equals pandas on it). Also the whole per-message work of the function (decode, update, state, encode).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from rtca.analytics.stats import FIELDS, StatsRow, TickerStats, mismatches, pandas_reference
from rtca.functions.stats import ProductBook, stats_record

Message = tuple[str, float]
EWMA = slice(0, 3)


def messages(count: int, products: int, seed: int) -> list[Message]:
    """Interleaved seeded random walks at different price scales, with repeated prices as real tickers have."""
    rng = random.Random(seed)
    prices = {f"P{k}-USD": 10.0 ** (k % 6 - 1) * 3.7 for k in range(products)}
    names = sorted(prices)
    out = []
    for _ in range(count):
        product = rng.choice(names)
        if rng.random() > 0.3:
            price = prices[product]
            prices[product] = round(max(price / 2, price + rng.gauss(0.0, price * 2e-3)), 8)
        out.append((product, prices[product]))
    return out


def seed_method(stream: Sequence[Message]) -> list[StatsRow]:
    """The seed's statistics, as it meant them (its `list.reverse()` bug fixed, or the window is always empty)."""
    import pandas as pd

    windows: dict[str, deque[float]] = {}
    rows = []
    for product, price in stream:
        window = windows.setdefault(product, deque(maxlen=20))
        window.append(price)
        series = pd.Series(list(window))
        ewm, roll = series.ewm(span=10, adjust=False), series.rolling(5)
        values = [ewm.mean(), ewm.std(), ewm.var(), roll.mean(), roll.std(), roll.var()]
        rows.append(StatsRow(*(None if v.isna().iloc[-1] else float(v.iloc[-1]) for v in values)))
    return rows


def kernel_method(stream: Sequence[Message]) -> list[StatsRow]:
    books: dict[str, TickerStats] = {}
    rows = []
    for product, price in stream:
        stats = books.get(product)
        if stats is None:
            stats = books[product] = TickerStats()
        rows.append(stats.update(price))
    return rows


def function_work(records: Sequence[bytes]) -> int:
    """What the deployed function does per message besides the runtime: decode, update, build the record (with the
    state to resume from), encode."""
    books: dict[str, ProductBook] = {}
    size = 0
    for i, data in enumerate(records):
        ticker = orjson.loads(data)
        product = ticker["product_id"]
        book = books.get(product)
        if book is None:
            book = books[product] = ProductBook(TickerStats(), "bench", None)
        price = float(ticker["price"])
        row = book.stats.update(price)
        size += len(orjson.dumps(stats_record(ticker, book, price, row, [1, i, -1, -1])))
    return size


def median_rate(run: Callable[[], Any], count: int, *, repeat: int) -> float:
    """Messages per second of the median of `repeat` runs (both sides of a ratio are timed alike)."""
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return count / statistics.median(seconds)


def per_product(stream: Sequence[Message], rows: Sequence[StatsRow]) -> dict[str, tuple[list[float], list[StatsRow]]]:
    out: dict[str, tuple[list[float], list[StatsRow]]] = {}
    for (product, price), row in zip(stream, rows):
        prices, mine = out.setdefault(product, ([], []))
        prices.append(price)
        mine.append(row)
    return out


def max_rel_diff(a: Sequence[float | None], b: Sequence[float | None]) -> float:
    diffs = [abs(x - y) / max(abs(y), 1e-300) for x, y in zip(a, b) if x is not None and y is not None and y != 0]
    return max(diffs, default=0.0)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m rtca.bench.stats_kernel", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--products", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    stream = messages(args.messages, args.products, args.seed)
    n = len(stream)
    print(f"stats kernel vs the seed's method: {n} messages, {args.products} products interleaved (seed {args.seed})")

    seed_rows = seed_method(stream[:50])  # warm pandas up
    seed_rate = median_rate(lambda: seed_method(stream), n, repeat=3)
    seed_rows = seed_method(stream)
    kernel_rate = median_rate(lambda: kernel_method(stream), n, repeat=3)
    rows = kernel_method(stream)
    records = [orjson.dumps({"type": "ticker", "product_id": p, "price": x, "sequence": i, "event_ms": i})
               for i, (p, x) in enumerate(stream)]  # fmt: skip
    work_rate = median_rate(lambda: function_work(records), n, repeat=3)

    ratio = kernel_rate / seed_rate
    print(f"  seed method (pandas per message)   {seed_rate:>12,.0f} msg/s  ({1e6 / seed_rate:,.1f} us/msg)")
    print(f"  kernel (TickerStats.update)        {kernel_rate:>12,.0f} msg/s  ({1e6 / kernel_rate:,.1f} us/msg)")
    print(f"  ratio kernel / seed                {ratio:>12,.1f} x   (goal >= 30 x): {'OK' if ratio >= 30 else 'MISSED'}")
    print(f"  function work (json in, update, state, json out) {work_rate:,.0f} msg/s ({1e6 / work_rate:,.1f} us/msg)")

    # Rolling mean and var must agree to 1e-9. std = sqrt(var) in both, so where the variance is round-off (equal
    # prices: ~1e-16 of price**2, computed over different histories) the square root magnifies that noise to ~1e-8
    # of the price: std is compared through its square.
    def mean_var(r: StatsRow) -> StatsRow:
        std2 = None if r.rolling_std is None else r.rolling_std**2
        return StatsRow(None, std2, None, r.rolling_mean, None, r.rolling_var)

    prices_all = [price for _, price in stream]
    rolling_problems = mismatches([mean_var(r) for r in rows], [mean_var(r) for r in seed_rows], prices_all)
    std_gap = max((abs(a.rolling_std - b.rolling_std) / p for a, b, p in zip(rows, seed_rows, prices_all)
                   if a.rolling_std is not None and b.rolling_std is not None), default=0.0)  # fmt: skip
    print(f"  rolling mean/var/std**2 equal the seed's (1e-9): {'yes' if not rolling_problems else rolling_problems[:3]}"
          f"; largest std gap {std_gap:.1e} of the price (square root of round-off on equal prices)")  # fmt: skip
    pandas_problems = []
    ewma_diff = dict.fromkeys(FIELDS[EWMA], 0.0)
    for _product, (prices, mine) in per_product(stream, rows).items():
        pandas_problems += mismatches(mine, pandas_reference(prices), prices)
    seed_by_product = per_product(stream, seed_rows)
    for product, (_prices, mine) in per_product(stream, rows).items():
        theirs = seed_by_product[product][1]
        for k, name in enumerate(FIELDS[EWMA]):
            gap = max_rel_diff([r[k] for r in mine[20:]], [r[k] for r in theirs[20:]])
            ewma_diff[name] = max(ewma_diff[name], gap)
    print(f"  all six equal pandas over each product's whole history (1e-9): "
          f"{'yes' if not pandas_problems else pandas_problems[:3]}")  # fmt: skip
    gaps = ", ".join(f"{name} {gap:.1e}" for name, gap in ewma_diff.items())
    print(f"  EWMA vs the seed's (restarted on each 20-price window), after 20 prices, max relative difference: "
          f"{gaps} (differs by design)")  # fmt: skip
    return {"seed_rate": seed_rate, "kernel_rate": kernel_rate, "ratio": ratio, "function_work_rate": work_rate,
            "rolling_agrees": float(not rolling_problems), "pandas_agrees": float(not pandas_problems)}  # fmt: skip


if __name__ == "__main__":
    main()

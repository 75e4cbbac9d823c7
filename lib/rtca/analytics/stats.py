"""Incremental ticker statistics that equal pandas, one price at a time.

`TickerStats` gives, for each new price of one product, what pandas would give on the last row of the whole price
history so far:

- ``ewm(span, adjust=False)``: mean, var (``bias=False``) and std (= sqrt(var)), over the product's whole history;
- ``rolling(window)``: mean, var and std with pandas' defaults (``min_periods=window``, ``ddof=1``).

Why mirror pandas' own update formulas instead of a textbook two-pass variance: pandas' rolling aggregations are
*online* (Kahan-compensated sums and Welford add/remove across the series, with pandas 3's recompute of a window
after catastrophic cancellation), so their last bits depend on the whole history. Replaying exactly the same
floating-point operations (pandas 3.x ``_libs/window/aggregations.pyx``: ``ewm``, ``ewmcov``, ``roll_mean``,
``roll_var``) gives the same numbers bit for bit, including near-constant windows where a different formula would
differ from pandas by more than any sensible relative tolerance. The work per price is
constant, and the complete accumulator state (a few floats and the last ``window`` prices) round-trips through JSON
exactly, so a restarted Pulsar Function resumes as if it had never stopped (`TickerStats.state`/`from_state`).

Where pandas gives NaN (warm-up rows) the row holds ``None``.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

DEFAULT_SPAN = 10
DEFAULT_WINDOW = 5
STATE_VERSION = 2
STATE_LAYOUT: tuple[str, ...] = (
    "version", "span", "window", "count",
    "ewm_mean", "cov", "sum_wt", "sum_wt2",  # pandas ewm / ewmcov (adjust=False)
    "m_sum", "m_neg", "m_comp_add", "m_comp_rem",  # pandas roll_mean: Kahan sum, negatives, compensations
    "v_mean", "v_ssqdm", "v_comp_add", "v_comp_rem",  # pandas roll_var: Welford mean, sum of squares, compensations
    "same", "prev",  # run of equal prices (roll_mean's guard)
)  # fmt: skip
"""`TickerStats.state()` positions; the window's prices follow."""
_FLOAT_STATE = ("ewm_mean", "cov", "sum_wt", "sum_wt2", "m_sum", "m_comp_add", "m_comp_rem", "v_mean", "v_ssqdm",
                "v_comp_add", "v_comp_rem", "prev")  # fmt: skip

_copysign = math.copysign
_sqrt = math.sqrt
_isfinite = math.isfinite
#: pandas' threshold for "this update left at most 3 significant digits": recompute the window then.
_INV_COND_TOL = sys.float_info.epsilon * 1e3


class StatsRow(NamedTuple):
    """One output row; the field names are the ticker-stats record's (None where pandas gives NaN)."""

    ewma_mean: float | None
    ewma_std: float | None
    ewma_var: float | None
    rolling_mean: float | None
    rolling_std: float | None
    rolling_var: float | None


FIELDS: tuple[str, ...] = StatsRow._fields


def _std(var: float | None) -> float | None:
    """pandas' ``zsqrt``: sqrt, with negative round-off clipped to 0."""
    if var is None:
        return None
    return _sqrt(var) if var > 0.0 else 0.0


class TickerStats:
    """EWMA and rolling statistics of one product's price stream, updated in O(1) per price."""

    __slots__ = (
        "span", "window", "count", "_alpha", "_old_wt_factor",
        # ewm mean (pandas `ewm`) and ewm variance (pandas `ewmcov` with x = y)
        "_ewm_mean", "_cov", "_sum_wt", "_sum_wt2",
        # rolling mean (pandas `roll_mean`) and rolling variance (pandas `roll_var`)
        "_prices", "_m_sum", "_m_neg", "_m_comp_add", "_m_comp_rem",
        "_v_mean", "_v_ssqdm", "_v_comp_add", "_v_comp_rem", "_same", "_prev",
    )  # fmt: skip

    def __init__(self, span: float = DEFAULT_SPAN, window: int = DEFAULT_WINDOW) -> None:
        if span < 1:
            raise ValueError(f"span must be >= 1, not {span}")
        if window < 1:
            raise ValueError(f"window must be >= 1, not {window}")
        self.span = span
        self.window = window
        com = (span - 1) / 2.0  # pandas get_center_of_mass
        self._alpha = 1.0 / (1.0 + com)
        self._old_wt_factor = 1.0 - self._alpha
        self.count = 0
        self._ewm_mean = self._cov = 0.0
        self._sum_wt = self._sum_wt2 = 1.0
        self._prices: deque[float] = deque(maxlen=window)
        self._m_sum = self._m_comp_add = self._m_comp_rem = 0.0
        self._m_neg = 0
        self._v_mean = self._v_ssqdm = self._v_comp_add = self._v_comp_rem = 0.0
        self._same = 0
        self._prev = 0.0

    def __repr__(self) -> str:
        return f"TickerStats(span={self.span}, window={self.window}, count={self.count})"

    # --- the hot path: one flat method, because attribute and call overhead dominate at this size ----------------
    def update(self, price: float) -> StatsRow:
        """Add the next price; the statistics of the history up to and including it. Raises ValueError on NaN/inf."""
        x = float(price)
        if not _isfinite(x):
            raise ValueError(f"price must be finite, not {price!r}")
        n = self.count = self.count + 1

        # ewm(span, adjust=False): pandas `ewm` (mean) and `ewmcov(x, x)` (var). With adjust=False pandas resets
        # old_wt to 1 after each observation, so old_wt = f and new_wt = alpha below; both functions update the
        # mean with the same operations, so one copy serves both.
        ewm_var: float | None
        if n == 1:
            self._ewm_mean = ewm_mean = x
            self._cov = 0.0
            self._sum_wt = self._sum_wt2 = 1.0
            ewm_var = None  # pandas: NaN while sum_wt**2 == sum_wt2
        else:
            f = self._old_wt_factor
            a = self._alpha
            old = self._ewm_mean
            ewm_mean = old
            if ewm_mean != x:  # pandas skips the update on equality ("avoid numerical errors on constant series")
                ewm_mean = ((f * old) + (a * x)) / (f + a)
            self._ewm_mean = ewm_mean
            d_old = old - ewm_mean
            d_new = x - ewm_mean
            self._cov = cov = ((f * (self._cov + (d_old * d_old))) + (a * (d_new * d_new))) / (f + a)
            old_wt = f + a
            self._sum_wt = sum_wt = (self._sum_wt * f + a) / old_wt
            self._sum_wt2 = sum_wt2 = (self._sum_wt2 * (f * f) + a * a) / (old_wt * old_wt)
            numerator = sum_wt * sum_wt
            denominator = numerator - sum_wt2
            ewm_var = (numerator / denominator) * cov if denominator > 0 else None

        # rolling(window): pandas `roll_mean` (a Kahan sum with separate add/remove compensations, a count of
        # negatives and a guard for runs of equal prices) and `roll_var` (below) over the last `window` prices
        prices = self._prices
        w = self.window
        negative = _copysign(1.0, x) < 0  # signbit
        if n == 1 or w == 1:  # pandas (re)starts both accumulators when a window does not overlap the previous one
            prices.append(x)
            self._m_sum = 0.0 + x  # Kahan add to an empty sum; its compensation stays 0
            self._m_comp_add = self._m_comp_rem = 0.0
            self._m_neg = int(negative)
            self._same, self._prev = 1, x
            self._recompute_var()
        else:
            unstable = False
            m_sum = self._m_sum
            if n > w:
                old = prices[0]  # the deque drops it on append below
                y = -old - self._m_comp_rem
                t = m_sum + y
                self._m_comp_rem = t - m_sum - y
                m_sum = t
                if _copysign(1.0, old) < 0:
                    self._m_neg -= 1
                unstable = self._remove_var(old, w - 1)
            prices.append(x)
            y = x - self._m_comp_add
            t = m_sum + y
            self._m_comp_add = t - m_sum - y
            self._m_sum = t
            if negative:
                self._m_neg += 1
            if x == self._prev:
                self._same += 1
            else:
                self._same = 1
            self._prev = x
            unstable = self._add_var(x, n if n < w else w) or unstable
            if unstable:
                self._recompute_var()
        if n < w:  # min_periods = window
            return StatsRow(ewm_mean, _std(ewm_var), ewm_var, None, None, None)
        # calc_mean
        if self._same >= w:
            roll_mean = self._prev
        else:
            roll_mean = self._m_sum / w
            if (self._m_neg == 0 and roll_mean < 0) or (self._m_neg == w and roll_mean > 0):
                roll_mean = 0.0
        # calc_var (ddof=1): NaN unless the window holds more than one price
        roll_var = self._v_ssqdm / (w - 1.0) if w > 1 else None
        return StatsRow(ewm_mean, _std(ewm_var), ewm_var, roll_mean, _std(roll_var), roll_var)

    # pandas 3 roll_var: Welford with Kahan compensation; a window whose sum of squares collapses (catastrophic
    # cancellation) is recomputed from its values
    def _add_var(self, val: float, nobs: int) -> bool:
        """Add `val`; `nobs` counts the window with it. True when the update lost too many digits."""
        prev_m2 = ssqdm = self._v_ssqdm
        mean_x = self._v_mean
        comp = self._v_comp_add
        prev_mean = mean_x - comp
        y = val - comp
        t = y - mean_x
        self._v_comp_add = t + mean_x - y
        mean_x = mean_x + t / nobs
        self._v_mean = mean_x
        self._v_ssqdm = ssqdm = ssqdm + (val - prev_mean) * (val - mean_x)
        return prev_m2 * _INV_COND_TOL > ssqdm

    def _remove_var(self, val: float, nobs: int) -> bool:
        """Remove `val`; `nobs` counts the window without it."""
        if not nobs:
            self._v_mean = self._v_ssqdm = 0.0
            return False
        prev_m2 = ssqdm = self._v_ssqdm
        mean_x = self._v_mean
        comp = self._v_comp_rem
        prev_mean = mean_x - comp
        y = val - comp
        t = y - mean_x
        self._v_comp_rem = t + mean_x - y
        mean_x = mean_x - t / nobs
        self._v_mean = mean_x
        self._v_ssqdm = ssqdm = ssqdm - (val - prev_mean) * (val - mean_x)
        return prev_m2 * _INV_COND_TOL > ssqdm

    def _recompute_var(self) -> None:
        self._v_mean = self._v_ssqdm = self._v_comp_add = self._v_comp_rem = 0.0
        for k, val in enumerate(self._prices, 1):
            self._add_var(val, k)

    # --- resume --------------------------------------------------------------------------------------------------
    def state(self) -> list[float]:
        """Everything needed to continue exactly, as one flat JSON array laid out as `STATE_LAYOUT` followed by the
        window's prices (floats round-trip exactly through JSON). Flat because it rides in every output record."""
        return [
            STATE_VERSION, self.span, self.window, self.count,
            self._ewm_mean, self._cov, self._sum_wt, self._sum_wt2,
            self._m_sum, self._m_neg, self._m_comp_add, self._m_comp_rem,
            self._v_mean, self._v_ssqdm, self._v_comp_add, self._v_comp_rem,
            self._same, self._prev, *self._prices,
        ]  # fmt: skip

    @classmethod
    def from_state(cls, state: Sequence[Any]) -> TickerStats:
        """Rebuild from `state()`; raises ValueError (or TypeError) when it is not one we wrote."""
        if not isinstance(state, (list, tuple)) or len(state) < len(STATE_LAYOUT) or state[0] != STATE_VERSION:
            raise ValueError("not a ticker-stats state of this version")
        fields = dict(zip(STATE_LAYOUT, state))
        stats = cls(span=fields["span"], window=int(fields["window"]))
        stats.count = int(fields["count"])
        for name in _FLOAT_STATE:
            setattr(stats, f"_{name}", float(fields[name]))
        stats._m_neg, stats._same = int(fields["m_neg"]), int(fields["same"])
        prices = [float(p) for p in state[len(STATE_LAYOUT):]]
        if stats.count < 0 or len(prices) != min(stats.count, stats.window):
            raise ValueError("inconsistent ticker-stats state: price window does not match the count")
        stats._prices.extend(prices)
        return stats


def compute(prices: Iterable[float], span: float = DEFAULT_SPAN, window: int = DEFAULT_WINDOW) -> list[StatsRow]:
    """The rows of one product's price sequence (what the function emits, without the runtime)."""
    stats = TickerStats(span, window)
    return [stats.update(p) for p in prices]


def pandas_reference(prices: Sequence[float], span: float = DEFAULT_SPAN, window: int = DEFAULT_WINDOW) -> list[StatsRow]:
    """The same rows computed by pandas over the whole sequence: the definition the kernel is tested against.

    pandas is imported here, not at module import, so the function runtime's hot path never loads it.
    """
    import pandas as pd

    series = pd.Series(list(prices), dtype="float64")
    ewm = series.ewm(span=span, adjust=False)
    roll = series.rolling(window)
    columns = [ewm.mean(), ewm.std(), ewm.var(), roll.mean(), roll.std(), roll.var()]
    return [StatsRow(*(None if math.isnan(v) else float(v) for v in row)) for row in zip(*(c.to_list() for c in columns))]


def mismatches(
    rows: Sequence[StatsRow], reference: Sequence[StatsRow], prices: Sequence[float], *, rel: float = 1e-9
) -> list[str]:
    """Where `rows` differ from `reference` beyond the contract: relative error `rel`, or `rel` of the price's
    magnitude (its square for variances) where the reference is about 0; None must meet None. Empty = equal."""
    problems = [f"{len(rows)} rows, reference has {len(reference)}"] if len(rows) != len(reference) else []
    for i, (row, ref, price) in enumerate(zip(rows, reference, prices)):
        for name, x, y in zip(FIELDS, row, ref):
            if x is None or y is None:
                if x is not y:
                    problems.append(f"row {i} {name}: {x!r}, reference {y!r}")
                continue
            floor = rel * (price * price if name.endswith("_var") else abs(price))
            if abs(x - y) > max(rel * abs(y), floor):
                problems.append(f"row {i} {name}: {x!r}, reference {y!r}")
    return problems

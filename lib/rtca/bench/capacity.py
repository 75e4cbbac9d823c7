"""Capacity benchmark: the highest simulator rate the whole pipeline sustains, against the identity function's rate.

Whole pipeline, on topics, functions and tables of its own: simulator (own process, many products, ticker +
matches + level2 + heartbeat) -> ingest -> raw topic -> router -> typed topics -> statistics -> Pinot (ticker and
statistics tables, the shipped table configs). A rate is sustained when, over a hold (5 minutes; `--quick`: 30 s)
after a warm-up:

- ingest takes at least 95% of the asked rate (otherwise frames queue before the pipeline even starts);
- p99 freshness of the statistics table (exchange time -> visible in Pinot, as in the freshness benchmark) <= 1 s;
- no growing backlog: the router's and the statistics function's subscriptions do not grow over the second half of
  the hold (least-squares slope under 2% of the rate, or the backlog stays under one second of messages);
- every ticker published reaches the statistics table (after a short drain).

Rates tried: fractions of the reference, ascending, up to the first that fails, then one bisection (not in quick
mode); if even the first fails, half of it, and half again. The reference is the end-to-end rate, on raw simulator
frames and measured in the same run, of an identity function deployed as the router and the statistics are
(`rtca.functions.identity.PublishingIdentity`, as in the functions benchmark). Goal: the highest sustained rate
>= 70% of it.

Each hold also says where the cores went (`rtca.bench.pipeline.cpu_seconds_by_part`): every service of a local stack,
each function instance, this process (ingest and the pollers) and the simulator, as cores over the hold (warm-up and
drain included). On two cores that is what bounds the rate: the reference is one function alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rtca.bench.freshness import deploy_pipeline, measure, wait_tables_answer
from rtca.bench.pipeline import (
    BacklogSampler,
    BenchScope,
    Say,
    cores_between,
    cpu_seconds_by_part,
    product_names,
    quiet_client,
    saturate,
    simulator_payloads,
)
from rtca.bench.report import BenchResult, Figure, Goal
from rtca.settings import Settings

GOAL = Goal(">=", 0.7)
MAX_P99_MS = 1000.0
MIN_INGEST_SHARE = 0.95
MAX_GROWTH_SHARE = 0.02
SHOWN_CORES = 0.01
"""A hold's line names the parts that used at least this many cores (the JSON has every one): the project's own
functions, idle beside the benchmark, would crowd it."""


def slope(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) samples (value per second); 0 for fewer than two distinct times."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in samples)
    if var_t == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / var_t


def backlog_growing(samples: Sequence[tuple[float, float]], rate: float, *, after: float = 0.0) -> bool:
    """Whether a backlog grows: over the samples at or after `after` s, its slope exceeds 2% of `rate` and its
    last value is above one second of messages (a small steady backlog that goes up and down is fine)."""
    window = [(t, v) for t, v in samples if t >= after]
    if len(window) < 3:
        return False
    return slope(window) > MAX_GROWTH_SHARE * rate and window[-1][1] > rate * 1.0


@dataclass
class Hold:
    """One rate held: what was asked, what was measured, and whether it counts as sustained."""

    rate: float
    ingest_rate: float
    p99_ms: float | None
    p50_ms: float | None
    missing: int
    growing: dict[str, bool]
    backlog_last: dict[str, int]

    @property
    def reasons(self) -> list[str]:
        why = []
        if self.ingest_rate < MIN_INGEST_SHARE * self.rate:
            why.append(f"ingest took {self.ingest_rate:,.0f} msg/s")
        if self.p99_ms is None:
            why.append("no statistics rows seen")
        elif self.p99_ms > MAX_P99_MS:
            why.append(f"p99 {self.p99_ms:,.0f} ms")
        why += [f"{label} backlog growing" for label, grows in self.growing.items() if grows]
        if self.missing:
            why.append(f"{self.missing} rows missing")
        return why

    @property
    def sustained(self) -> bool:
        return not self.reasons

    @property
    def held(self) -> float:
        """The rate the pipeline was given: ingest may fall up to 5% short of the rate asked and still sustain."""
        return min(self.rate, self.ingest_rate)

    def to_json(self) -> dict[str, Any]:
        return {"rate": self.rate, "ingest_rate": self.ingest_rate, "p99_ms": self.p99_ms, "p50_ms": self.p50_ms,
                "missing": self.missing, "growing": self.growing, "backlog_last": self.backlog_last,
                "sustained": self.sustained, "reasons": self.reasons}  # fmt: skip


def best_sustained(holds: Sequence[Hold]) -> Hold | None:
    """The sustained hold that carried the most messages (by what ingest held, not what was asked)."""
    return max((h for h in holds if h.sustained), key=lambda h: h.held, default=None)


class RateSearch:
    """Ascending candidate rates until the first that fails, then `bisections` midpoints between the highest
    sustained rate and the lowest failed one. When even the lowest candidate fails, halve it (`descents` times) to
    find a rate the machine does sustain, rather than report nothing."""

    def __init__(self, candidates: Sequence[float], *, bisections: int = 1, descents: int = 2) -> None:
        self.candidates = sorted(candidates)
        self.bisections = bisections
        self.descents = descents
        self.best: float | None = None
        self.failed: float | None = None
        self._index = 0

    def next(self) -> float | None:
        if self.failed is None:
            if self._index < len(self.candidates):
                return self.candidates[self._index]
            return None
        if self.best is None:
            return round(self.failed / 2) if self.descents > 0 and self.failed >= 2 else None
        if self.bisections <= 0:
            return None
        return round((self.best + self.failed) / 2)

    def record(self, rate: float, sustained: bool) -> None:
        if self.failed is None:
            self._index += 1
        elif self.best is None:
            self.descents -= 1
        else:
            self.bisections -= 1
        if sustained:
            self.best = rate if self.best is None else max(self.best, rate)
        else:
            self.failed = rate if self.failed is None else min(self.failed, rate)


class GivenRates:
    """The rates asked for, each held once in order, whatever the outcome (`rtca bench capacity --rates`)."""

    def __init__(self, rates: Sequence[float]) -> None:
        self._left = list(rates)

    def next(self) -> float | None:
        return self._left[0] if self._left else None

    def record(self, rate: float, sustained: bool) -> None:
        self._left.pop(0)


def identity_rate(scope: BenchScope, products: Sequence[str], messages: int, rounds: int, say: Say) -> float:
    """The identity function's end-to-end rate on raw simulator frames (median of rounds, after a warm-up)."""
    from rtca.functions.deploy import publishing_identity_spec

    name = f"bench-{scope.tag}-identity"
    source, sink = scope.topic("identity-in"), scope.topic("identity-out")
    scope.deploy([publishing_identity_spec(name, source, sink)])
    payloads = simulator_payloads(messages, products)
    rates = []
    with quiet_client(scope.base) as client:
        saturate(client, source, [sink], payloads[:500])
        for round_no in range(1, rounds + 1):
            rates.append(saturate(client, source, [sink], payloads))
            say(f"  identity round {round_no}: {rates[-1]:,.0f} msg/s ({messages:,} raw frames)")
    return statistics.median(rates)


def committed(scope: BenchScope, tables: dict[str, str]) -> dict[str, int]:
    """Committed segments per table label (Pinot stops consuming a table while it commits one)."""
    from rtca.pinot.client import PinotClient

    with PinotClient(scope.base) as pinot:
        return {label: pinot.committed_segments(table) for label, table in tables.items()}


def hold_rate(scope: BenchScope, tables: dict[str, str], rate: float, products: Sequence[str], *, warmup: float,
              hold: float, seed: int) -> tuple[Hold, dict[str, Any]]:  # fmt: skip
    sampler = BacklogSampler(scope.base, {"router": scope.topic("raw"), "stats": scope.topic("ticker")},
                             interval=2.0).start()  # fmt: skip
    commits_before = committed(scope, tables)
    cpu_before, started = cpu_seconds_by_part(scope.settings), time.monotonic()
    try:
        measured = measure(scope, tables, rate=rate, products=products, warmup=warmup, seconds=hold,
                           poll_interval=0.1, drain=15.0, seed=seed)  # fmt: skip
    finally:
        samples = sampler.stop()
    cores = cores_between(cpu_before, cpu_seconds_by_part(scope.settings), time.monotonic() - started)
    commits = {label: n - commits_before.get(label, 0) for label, n in committed(scope, tables).items()}
    stats = measured.visibility["ticker_stats"]
    summary = stats.summary()
    growing = {label: backlog_growing(series, rate, after=warmup + hold / 2) for label, series in samples.items()}
    last = {label: int(series[-1][1]) if series else 0 for label, series in samples.items()}
    result = Hold(rate, measured.held_rate, None if summary is None else summary.p99,
                  None if summary is None else summary.p50, stats.missing(), growing, last)
    ticker = measured.visibility["ticker"].summary()
    detail = {"ingest": str(measured.report).splitlines()[0], "backlog_samples": samples,
              "ticker_p99_ms": None if ticker is None else ticker.p99, "segments_committed": commits,
              "stats_rows_per_s": len(stats.latencies) / hold if hold else None, "cpu_cores": cores}
    return result, detail


def run(settings: Settings, *, quick: bool = False, keep: bool = False, say: Say = print, products: int = 50,
        hold: float | None = None, fractions: Sequence[float] | None = None,
        rates: Sequence[float] | None = None) -> BenchResult:  # fmt: skip
    """`rates` (msg/s): hold exactly these, in order, instead of searching fractions of the reference."""
    result = BenchResult("capacity", started="", quick=quick)
    hold = hold or (30.0 if quick else 300.0)
    warmup = 10.0 if quick else 30.0
    fractions = list(fractions or ((0.25, 0.5, 0.7) if quick else (0.25, 0.5, 0.7, 0.85, 1.0)))
    names = product_names(products)
    result.parameters = {"products": products, "hold_s": hold, "warmup_s": warmup, "fractions": fractions,
                         "rates": list(rates or []), "max_p99_ms": MAX_P99_MS,
                         "min_ingest_share": MIN_INGEST_SHARE}  # fmt: skip
    holds: list[Hold] = []
    with BenchScope(settings, keep=keep, say=say) as scope:
        result.details["scope"] = scope.tag
        say("  deploying the identity, router and statistics functions and the Pinot tables ...")
        reference = identity_rate(scope, names, 5000 if quick else 20_000, 2 if quick else 3, say)
        deploy_pipeline(scope)
        from rtca.pinot.tables import render_table

        tables = {}
        for key in ("ticker", "ticker_stats"):
            spec = render_table(scope.settings, key)
            scope.put_table(spec.schema, spec.table)
            tables[key] = spec.name
        wait_tables_answer(scope, list(tables.values()))
        search = (GivenRates(rates) if rates else
                  RateSearch([round(f * reference) for f in fractions], bisections=0 if quick else 1))
        seed = 1
        while (rate := search.next()) is not None:
            say(f"  holding {rate:,.0f} msg/s ({rate / reference:.0%} of identity) for {hold:.0f} s ...")
            started = time.monotonic()
            outcome, detail = hold_rate(scope, tables, rate, names, warmup=warmup, hold=hold, seed=seed)
            seed += 1
            holds.append(outcome)
            result.details.setdefault("holds", []).append({**outcome.to_json(), **detail,
                                                           "seconds": time.monotonic() - started})
            verdict = "sustained" if outcome.sustained else "NOT sustained: " + ", ".join(outcome.reasons)
            p99 = "-" if outcome.p99_ms is None else f"{outcome.p99_ms:,.0f} ms"
            say(f"    ingest {outcome.ingest_rate:,.0f} msg/s, stats p99 {p99}, backlog {outcome.backlog_last}, "
                f"segments committed {detail['segments_committed']}: {verdict}")
            say("    cores used: " + ", ".join(f"{part} {c:.2f}" for part, c in detail["cpu_cores"].items()
                                           if c >= SHOWN_CORES))  # fmt: skip
            search.record(rate, outcome.sustained)
    best = best_sustained(holds)
    result.add(Figure("capacity", f"highest sustained rate, as ingest held it ({hold:.0f} s holds)",
                      best.held if best else 0.0, "msg/s", reference="identity function end to end",
                      reference_value=reference, goal=GOAL, ratio_unit="%",
                      note="" if best else "no rate tried was sustained",
                      detail={"tried": [h.rate for h in holds], "asked": best.rate if best else None}))  # fmt: skip
    if holds:
        top = best or holds[0]
        if top.p99_ms is not None:
            result.add(Figure("capacity", f"stats p99 freshness at {top.held:,.0f} msg/s", top.p99_ms, "ms",
                              reference="limit", reference_value=MAX_P99_MS))  # fmt: skip
    return result

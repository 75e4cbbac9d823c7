"""The order book, trade flow, volatility and alerts functions deployed on the real stack, each on topics of its own.

Each is deployed by the same `deploy()` as `rtca functions deploy`, from settings whose topic and function names
carry a unique suffix (deleted at the end), fed typed records as the router makes them, and its output topic read
back with the Pulsar client (Pinot is not involved). References are independent of the production code: a plain
dict of price -> size per side (Decimal, from the exchange's strings) for the book (over the capture and a seeded
simulator run), pandas for flow and volatility, numpy's mean and sample std for the volatility z-score alert.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pulsar
import pytest
from references import pandas_flow, pandas_vol
from test_functions_deployed import client, isolated, paced, produce, read, undeploy  # noqa: F401 - client: a fixture
from waiting import wait_for

from rtca.analytics.alerts import Rule, parse_rules
from rtca.feed.capture import SHIPPED_CAPTURE, read_capture
from rtca.feed.simulator import SimulatedMarket
from rtca.functions.deploy import (
    ALERTS,
    BOOK,
    TRADE_FLOW,
    VOLATILITY,
    FunctionSpec,
    deploy,
    function_specs,
    function_status,
    restart_function,
)
from rtca.functions.routing import convert
from rtca.settings import Settings

pytestmark = pytest.mark.stack

FLOW_WINDOW_MS = 5_000
VOL_WINDOW_MS = 2_000
BOOK_FIELDS = ("best_bid", "best_bid_size", "best_ask", "best_ask_size", "mid", "spread", "spread_bps", "bid_depth",
               "ask_depth", "imbalance", "bid_depth_10bps", "ask_depth_10bps")  # fmt: skip
Deployed = dict[str, tuple[Settings, FunctionSpec]]
"""The `deployed` fixture: per function key, its isolated settings and its spec."""


# --- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def deployed(stack: Settings) -> Iterator[dict[str, tuple[Settings, FunctionSpec]]]:
    """The four functions, each with topics of its own, deployed together; shorter windows than in production so
    that a test stream of seconds closes many."""
    tag = uuid.uuid4().hex[:8]
    wanted = {"book": (BOOK, {}), "flow": (TRADE_FLOW, {"window_ms": FLOW_WINDOW_MS}),
              "vol": (VOLATILITY, {"window_ms": VOL_WINDOW_MS}), "alerts": (ALERTS, {})}  # fmt: skip
    out = {}
    for key, (name, config) in wanted.items():
        settings = isolated(stack, f"{tag}-{key}")
        spec = next(s for s in function_specs(settings, name_prefix=f"it-{tag}-") if s.name.endswith(name))
        out[key] = (settings, replace(spec, user_config={**spec.user_config, **config}))
    deploy(stack, [spec for _, spec in out.values()])
    yield out
    undeploy(stack, out.values())


def typed_messages(records: Iterable[dict[str, Any]]) -> Iterator[tuple[bytes, dict[str, str], str | None]]:
    """Typed records as the router publishes them: JSON, keyed by product."""
    return ((orjson.dumps(r), {}, r.get("product_id")) for r in records)


def produce_restarting(stack: Settings, client: pulsar.Client, spec: FunctionSpec, topic: str,
                       messages: list[tuple[bytes, dict[str, str], str | None]], *, per_second: float,
                       restart_after: float) -> bool:  # fmt: skip
    """Produce `messages` at a steady pace, restarting the function through the admin API `restart_after` seconds
    in; True when the restart came while the input was still being produced."""
    producing = threading.Thread(target=produce, args=(client, topic, paced(messages, per_second=per_second)))
    producing.start()
    time.sleep(restart_after)
    mid_stream = producing.is_alive()
    restart_function(stack, spec.name)
    producing.join()
    return mid_stream


def assert_running_after_restart(stack: Settings, spec: FunctionSpec, produced: int) -> None:
    (status,) = function_status(stack, [spec.name], known_only=False)
    assert status.running == 1 and status.failed == 0, status
    assert status.received < produced, "counts since the instance started: it did restart"


# --- order book ----------------------------------------------------------------------------------------------------
class PlainBook:
    """The reference: a dict of price -> size per side, from the exchange's strings (Decimal)."""

    def __init__(self) -> None:
        self.sides: dict[str, dict[Decimal, Decimal]] = {"buy": {}, "sell": {}}

    def apply(self, frame: dict[str, Any]) -> None:
        """A snapshot replaces both sides; an l2update sets each level's new size (0 removes it)."""
        if frame["type"] == "snapshot":
            self.sides = {side: {Decimal(p): Decimal(s) for p, s in frame[key] if Decimal(s) != 0}
                          for side, key in (("buy", "bids"), ("sell", "asks"))}  # fmt: skip
            return
        for side, price, size in frame["changes"]:
            if Decimal(size) == 0:
                self.sides[side].pop(Decimal(price), None)
            else:
                self.sides[side][Decimal(price)] = Decimal(size)

    def summary(self) -> dict[str, float | None] | None:
        bids, asks = self.sides["buy"], self.sides["sell"]
        if not bids or not asks or max(bids) >= min(asks):
            return None
        bid, ask = max(bids), min(asks)
        mid = (bid + ask) / 2

        def depth(bps: int) -> tuple[Decimal, Decimal]:
            return (sum((s for p, s in bids.items() if p >= mid * (1 - Decimal(bps) / 10_000)), Decimal(0)),
                    sum((s for p, s in asks.items() if p <= mid * (1 + Decimal(bps) / 10_000)), Decimal(0)))  # fmt: skip

        (bid_depth, ask_depth), (near_bid, near_ask) = depth(50), depth(10)
        total = bid_depth + ask_depth  # 0 when both best prices lie over 50 bps from mid: no imbalance
        return {k: float(v) if v is not None else None for k, v in {
            "best_bid": bid, "best_bid_size": bids[bid], "best_ask": ask, "best_ask_size": asks[ask], "mid": mid,
            "spread": ask - bid, "spread_bps": (ask - bid) / mid * 10_000, "bid_depth": bid_depth,
            "ask_depth": ask_depth, "imbalance": (bid_depth - ask_depth) / total if total else None,
            "bid_depth_10bps": near_bid, "ask_depth_10bps": near_ask,
        }.items()}  # fmt: skip


def capture_level2() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(frame with the exchange's strings, typed record) of every snapshot and l2update of the capture, then the
    updates of `with_final_updates`: a summary of each book after the whole capture."""
    pairs = []
    for frame in read_capture(SHIPPED_CAPTURE).frames:
        raw = orjson.loads(frame.text)
        if raw.get("type") in ("snapshot", "l2update"):
            pairs.append((raw, convert(orjson.loads(frame.text), int(frame.at * 1000)).record))
    return with_final_updates(pairs)


def with_final_updates(pairs: list[tuple[dict[str, Any], dict[str, Any]]]
                       ) -> list[tuple[dict[str, Any], dict[str, Any]]]:  # fmt: skip
    """`pairs`, then per product one more update, in a later second, that sets its best bid to the size it has: the
    function then summarises each book as it is after the whole stream."""
    pairs = list(pairs)
    books: dict[str, PlainBook] = {}
    for raw, _ in pairs:
        books.setdefault(raw["product_id"], PlainBook()).apply(raw)
    end = max(typed["event_ms"] for _, typed in pairs) + 2_000
    for product, book in sorted(books.items()):
        price = max(book.sides["buy"])
        size = book.sides["buy"][price]
        raw = {"type": "l2update", "product_id": product, "changes": [["buy", str(price), str(size)]]}
        pairs.append((raw, {**raw, "changes": [["buy", float(price), float(size)]],
                            "event_ms": end, "received_ms": end}))  # fmt: skip
    return pairs


def expected_summaries(pairs: list[tuple[dict[str, Any], dict[str, Any]]]
                       ) -> dict[tuple[str, int], dict[str, float | None]]:  # fmt: skip
    """The reference cadence: per product, the first message of each later second with a valid book."""
    books: dict[str, PlainBook] = {}
    last_second: dict[str, int] = {}
    out = {}
    for raw, typed in pairs:
        product = raw["product_id"]
        book = books.setdefault(product, PlainBook())
        book.apply(raw)
        second = typed["event_ms"] // 1000
        if second > last_second.get(product, -1) and (summary := book.summary()) is not None:
            last_second[product] = second
            out[(product, typed["event_ms"])] = summary
    return out


def assert_summaries_equal(records: list[dict[str, Any]], expected: dict[tuple[str, int], dict[str, float | None]]
                           ) -> None:  # fmt: skip
    """One summary per expected (product, event_ms), none other, each field equal to the plain reference's."""
    keys = Counter((r["product_id"], r["event_ms"]) for r in records)
    assert [k for k, n in keys.items() if n > 1] == [], "duplicate summaries"
    assert set(keys) == set(expected), (sorted(set(expected) - set(keys))[:5], sorted(set(keys) - set(expected))[:5])
    for record in records:
        reference = expected[(record["product_id"], record["event_ms"])]
        assert record["valid"] is True
        for field in BOOK_FIELDS:
            value = reference[field]
            assert record[field] == (value if value is None else pytest.approx(value, rel=1e-9, abs=1e-12)), (
                record["product_id"], record["event_ms"], field)


def test_deployed_book_over_the_capture_equals_a_plain_dict_book_across_a_restart(deployed, client, stack) -> None:  # type: ignore[no-untyped-def]
    """The capture's level2 stream, produced at a steady pace while the function is restarted: the new instance
    re-reads its input from the last snapshots, and every summary equals the plain reference, once."""
    settings, spec = deployed["book"]
    pairs = capture_level2()
    expected = expected_summaries(pairs)
    messages = list(typed_messages(typed for _, typed in pairs))
    mid_stream = produce_restarting(stack, client, spec, settings.topic(settings.topics.level2), messages,
                                    per_second=2500, restart_after=1.5)  # fmt: skip
    records = [orjson.loads(d) for d in read(client, spec.output, len(expected), timeout=150)]  # type: ignore[arg-type]
    keys = Counter((r["product_id"], r["event_ms"]) for r in records)
    print(f"book: {len(messages)} level2 messages, {len(records)} summaries ({len(expected)} expected), "
          f"{sum(n - 1 for n in keys.values())} duplicates")
    assert mid_stream, "the input was all produced before the restart"
    assert_summaries_equal(records, expected)
    finals = [r for r in records if r["event_ms"] == pairs[-1][1]["event_ms"]]
    assert len(finals) == len(read_capture(SHIPPED_CAPTURE).products), "a summary of each book after the capture"
    problems = [orjson.loads(d) for d in read(client, settings.topic(settings.topics.alerts), 0, timeout=1, settle=1)]
    assert problems == [], "the capture's books never cross"
    assert_running_after_restart(stack, spec, len(messages))


def test_deployed_book_over_a_simulator_run_equals_a_plain_dict_book(deployed: Deployed, client: pulsar.Client
                                                                     ) -> None:  # fmt: skip
    """A seeded simulator run's level2 stream (each product's snapshot, then the updates of book changes and of
    trades, some removing a level), as the router converts it: every summary, and each book after the run, equals
    the plain reference, and no book is ever reported crossed."""
    settings, spec = deployed["book"]
    pairs = with_final_updates(simulated_frames(("snapshot", "l2update"), "B", seed=14, steps=6_000))
    expected = expected_summaries(pairs)
    assert spec.output is not None
    produce(client, settings.topic(settings.topics.level2), typed_messages(typed for _, typed in pairs))
    mine = [orjson.loads(d) for d in read(client, spec.output, len(expected),  # the capture test's are there too
                                          where=lambda d: str(orjson.loads(d).get("product_id")).startswith("BX"))]
    removals = sum(1 for raw, _ in pairs if raw["type"] == "l2update" and Decimal(raw["changes"][0][2]) == 0)
    print(f"book (simulator): {len(pairs)} level2 messages ({removals} removing a level), {len(mine)} summaries "
          f"({len(expected)} expected)")
    assert removals > 0, "the run removes levels"
    assert_summaries_equal(mine, expected)
    finals = [r for r in mine if r["event_ms"] == pairs[-1][1]["event_ms"]]
    assert len(finals) == 3, "a summary of each book after the run"
    problems = [orjson.loads(d) for d in read(client, settings.topic(settings.topics.alerts), 0, timeout=1, settle=1)]
    assert [p for p in problems if p["product_id"].startswith("BX")] == [], "the simulator's books never cross"


# --- trade flow ----------------------------------------------------------------------------------------------------
def simulated_frames(kinds: tuple[str, ...], prefix: str, seed: int, steps: int, step_us: int = 5_000
                     ) -> list[tuple[dict[str, Any], dict[str, Any]]]:  # fmt: skip
    """(frame with the simulator's strings, typed record as the router converts it) of the frames of `kinds` of a
    seeded simulator run over three products named `prefix` + "X" + a live product; with ``snapshot`` in `kinds`,
    each product's level2 snapshot comes first, as a subscriber gets it, received when the run starts."""
    start_us = 1_700_000_000_000_000
    market = SimulatedMarket([f"{prefix}X{p}" for p in ("BTC-USD", "ETH-USD", "SOL-EUR")], seed=seed,
                             start_us=start_us)  # fmt: skip

    def routed(frame: dict[str, Any], received_ms: int) -> tuple[dict[str, Any], dict[str, Any]]:
        text = orjson.dumps(frame)
        return orjson.loads(text), convert(orjson.loads(text), received_ms).record

    out = [routed(market.snapshot(p), start_us // 1000) for p in market.products] if "snapshot" in kinds else []
    for i in range(steps):
        now_us = start_us + i * step_us
        out += [routed(frame, now_us // 1000 + 3) for frame in market.step(now_us) if frame["type"] in kinds]
    return out


def simulated(kind: str, prefix: str, seed: int, steps: int, step_us: int = 5_000) -> list[dict[str, Any]]:
    """Typed records of one kind (``match``, ``ticker``) from a seeded simulator run, as the router converts them."""
    return [typed for _, typed in simulated_frames((kind,), prefix, seed, steps, step_us)]


def capture_records(*kinds: str) -> list[dict[str, Any]]:
    return [convert(raw, int(frame.at * 1000)).record for frame in read_capture(SHIPPED_CAPTURE).frames
            if (raw := orjson.loads(frame.text)).get("type") in kinds]  # fmt: skip


def closing(records: list[dict[str, Any]], window_ms: int, **fields: Any) -> list[dict[str, Any]]:
    """Per product one record far past its last window: it closes that window (and opens one never emitted)."""
    last: dict[str, int] = {}
    for r in records:
        last[r["product_id"]] = max(last.get(r["product_id"], 0), r["event_ms"])
    return [{"product_id": p, "event_ms": t + 10 * window_ms, "received_ms": t, **fields} for p, t in last.items()]


def as_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Output records indexed by (product, window start), one row each (asserted)."""
    got = pd.DataFrame(records).rename(columns={"event_ms": "win"})
    duplicated = got.duplicated(["product_id", "win"])
    assert not duplicated.any(), got[duplicated][["product_id", "win"]].head()
    return got.set_index(["product_id", "win"]).sort_index()


def assert_frame_equals(got: pd.DataFrame, expected: pd.DataFrame, columns: Iterable[str]) -> None:
    assert list(got.index) == list(expected.index), (
        sorted(set(expected.index) - set(got.index))[:5], sorted(set(got.index) - set(expected.index))[:5])
    for column in columns:
        np.testing.assert_allclose(got[column].astype(float), expected[column].astype(float), rtol=1e-9,
                                   equal_nan=True, err_msg=column)  # fmt: skip


def test_deployed_trade_flow_equals_pandas_on_the_capture_and_a_simulator_run(deployed, client) -> None:  # type: ignore[no-untyped-def]
    settings, spec = deployed["flow"]
    matches = capture_records("match", "last_match") + simulated("match", "F", seed=11, steps=8_000)
    stream = matches + closing(matches, FLOW_WINDOW_MS, side="buy", price=1.0, size=1.0)
    expected = pandas_flow(pd.DataFrame(matches), FLOW_WINDOW_MS)
    produce(client, settings.topic(settings.topics.matches), typed_messages(stream))
    records = [orjson.loads(d) for d in read(client, spec.output, len(expected))]  # type: ignore[arg-type]
    got = as_frame(records)
    print(f"trade flow: {len(stream)} matches ({len(matches) - int(expected[['buy_count', 'sell_count']].sum().sum())}"
          f" late), {len(records)} window records, {len(expected)} expected, products {got.index.levels[0].size}")
    assert_frame_equals(got, expected, expected.columns)
    assert (got["window_ms"] == FLOW_WINDOW_MS).all()


# --- volatility ------------------------------------------------------------------------------------------------------
VOL_COLUMNS = ("return_std", "realized_vol", "price", "log_return", "n_returns", "n_prices")


def test_deployed_volatility_equals_pandas_on_the_capture_and_a_simulator_run(deployed, client) -> None:  # type: ignore[no-untyped-def]
    settings, spec = deployed["vol"]
    tickers = capture_records("ticker") + simulated("ticker", "V", seed=12, steps=8_000)
    expected = pandas_vol(pd.DataFrame(tickers), VOL_WINDOW_MS)
    produce(client, settings.topic(settings.topics.ticker),
            typed_messages(tickers + closing(tickers, VOL_WINDOW_MS, price=1.0)))  # fmt: skip
    records = [orjson.loads(d) for d in read(client, spec.output, len(expected))]  # type: ignore[arg-type]
    got = as_frame(records)
    print(f"volatility: {len(tickers)} tickers, {len(records)} window records, {len(expected)} expected, "
          f"{int(expected['return_std'].notna().sum())} with a std")
    assert_frame_equals(got, expected, VOL_COLUMNS)


def test_volatility_restarted_mid_stream_emits_each_window_exactly_once(deployed, client, stack) -> None:  # type: ignore[no-untyped-def]
    """Tickers produced at a steady pace while the function is restarted through the admin API: one record per
    product and window, none missing, each equal to pandas over the whole stream."""
    settings, spec = deployed["vol"]
    tickers = simulated("ticker", "R", seed=13, steps=12_000)
    expected = pandas_vol(pd.DataFrame(tickers), VOL_WINDOW_MS)
    stream = list(typed_messages(tickers + closing(tickers, VOL_WINDOW_MS, price=1.0)))
    before = len(read(client, spec.output, 0, timeout=1, settle=1))  # type: ignore[arg-type]  # the other test's
    mid_stream = produce_restarting(stack, client, spec, settings.topic(settings.topics.ticker), stream,
                                    per_second=250, restart_after=2.0)  # fmt: skip
    records = [orjson.loads(d) for d in read(client, spec.output, before + len(expected), timeout=150)][before:]  # type: ignore[arg-type]
    mine = [r for r in records if r["product_id"].startswith("RX")]
    keys = Counter((r["product_id"], r["event_ms"]) for r in mine)
    print(f"volatility restart: {len(stream)} tickers, {len(mine)} window records, {len(expected)} expected, "
          f"{sum(n - 1 for n in keys.values())} duplicates, {len(set(expected.index) - set(keys))} missing")
    assert mid_stream, "the input was all produced before the restart"
    assert_frame_equals(as_frame(mine), expected, VOL_COLUMNS)
    assert_running_after_restart(stack, spec, len(stream))


# --- alerts ------------------------------------------------------------------------------------------------------------
def test_deployed_alerts_keep_their_hysteresis_across_a_restart(deployed, client, stack) -> None:  # type: ignore[no-untyped-def]
    """infra/alerts.yaml's wide_spread (over 50 bps, clear 40), feed_stalled (over 10 s, clear 2 s) and
    missed_trades: conditions that persist across the restart fire no second alert; cleared ones fire again."""
    settings, spec = deployed["alerts"]
    book, health = settings.topic(settings.topics.book), settings.topic(settings.topics.feed_health)

    def spreads(values: list[tuple[int, float]]) -> list[dict[str, Any]]:
        return [{"product_id": "AL-1", "event_ms": t, "received_ms": t, "valid": True, "spread_bps": v}
                for t, v in values]  # fmt: skip

    def ticks(values: list[tuple[int, int]]) -> list[dict[str, Any]]:
        return [{"kind": "tick", "ts_ms": t, "source": "it-feed", "silence_ms": v, "last_message_ms": 0}
                for t, v in values]  # fmt: skip

    def gap(t: int, first: int, last: int) -> dict[str, Any]:
        return {"kind": "gap", "ts_ms": t, "source": "it-feed", "product_id": "AL-1", "first_missing": first,
                "last_missing": last, "missed": last - first + 1}

    produce(client, book, typed_messages(spreads([(1, 10.0), (2, 60.0), (3, 70.0), (4, 45.0)])))
    produce(client, health, typed_messages([*ticks([(1, 1_000), (2, 12_000), (3, 15_000)]), gap(4, 10, 12)]))
    first = read(client, spec.output, 3)  # type: ignore[arg-type]
    assert len(first) == 3, [orjson.loads(d)["rule"] for d in first]
    restart_function(stack, spec.name)

    def restarted() -> bool:  # received counts since the instance started: 8 before
        (status,) = function_status(stack, [spec.name], known_only=False)
        return status.running == 1 and status.received < 8

    wait_for(restarted, timeout=120, what="the alerts function to restart")
    produce(client, book, typed_messages(spreads([(5, 65.0), (6, 30.0), (7, 61.0)])))  # persists; clears; fires
    produce(client, health, typed_messages([*ticks([(5, 11_000), (6, 1_500), (7, 10_500)]),  # the same
                                            gap(8, 10, 12), gap(9, 20, 20)]))  # a repeated gap; a new one
    alerts = [orjson.loads(d) for d in read(client, spec.output, 6, timeout=120, settle=3)]  # type: ignore[arg-type]
    fired = sorted((a["rule"], a["product_id"], a["event_ms"]) for a in alerts)
    print(f"alerts: 14 inputs, {len(alerts)} alerts (6 expected): {fired}")
    assert fired == [("feed_stalled", "it-feed", 2), ("feed_stalled", "it-feed", 7), ("missed_trades", "AL-1", 4),
                     ("missed_trades", "AL-1", 9), ("wide_spread", "AL-1", 2), ("wide_spread", "AL-1", 7)]
    assert all(a["state"] and a["version"] >= 1 for a in alerts)
    assert_running_after_restart(stack, spec, 14)


def only_rule(spec: FunctionSpec, kind: str) -> Rule:
    """The deployed function's one rule of `kind` (the rules of infra/alerts.yaml, as deploy passed them)."""
    rules = [rule for rule in parse_rules(spec.user_config["rules"]) if rule.kind == kind]
    assert len(rules) == 1, f"this test expects one {kind} rule, not {[r.name for r in rules]}"
    return rules[0]


def test_deployed_price_move_and_vol_zscore_fire_just_over_their_thresholds(deployed: Deployed,
                                                                            client: pulsar.Client, unique: str
                                                                            ) -> None:  # fmt: skip
    """infra/alerts.yaml's price_move and vol_zscore rules, as deployed: a move just over the threshold within the
    window fires (up and down), one just under or with its first price just out of the window does not; a
    volatility z-score just over the threshold fires, one just under or before min_history values does not, and
    the z-score is over the last `history` values only. A fresh product per case: no hysteresis between cases."""
    settings, spec = deployed["alerts"]
    move, zscore = only_rule(spec, "price_move"), only_rule(spec, "vol_zscore")
    tag, t0 = unique.upper(), 1_700_000_000_000
    window_ms, over, under = int(move.window_s * 1000), move.threshold * 1.02, move.threshold * 0.98

    def product(case: str) -> str:
        return f"{case}{tag}-USD"

    # case -> (the second price's offset from the first, its move in percent), the first price 100 at t0
    moves = {"PMUNDER": (window_ms - 1, under), "PMLATE": (window_ms + 1, over),
             "PMUP": (window_ms - 1, over), "PMDOWN": (window_ms - 1, -over)}  # fmt: skip
    tickers = [{"product_id": product(case), "event_ms": t, "received_ms": t, "price": price}
               for case, (offset, percent) in moves.items()
               for t, price in ((t0, 100.0), (t0 + offset, 100.0 * (1 + percent / 100)))]  # fmt: skip

    # a plain reference: mean and sample std (ddof=1) of the values the rule compares against
    calm = [0.5 + 0.02 * (-1) ** i for i in range(zscore.history)]  # z within about +-1.05 of its own history

    def then(history: list[float], z: float) -> float:
        """The volatility whose z-score over `history` (its last `zscore.history` values) is `z`."""
        last = np.array(history[-zscore.history:])
        return float(last.mean() + z * last.std(ddof=1))

    few = calm[: zscore.min_history - 1]
    enough = calm[: zscore.min_history]
    spiked = [10.0] * 3 + calm  # the spikes leave the history before the last value comes
    z_over, z_under = zscore.threshold * 1.02, zscore.threshold * 0.98
    series = {"VZUNDER": calm + [then(calm, z_under)], "VZFEW": few + [then(enough, 100.0)],
              "VZOVER": spiked + [then(calm, z_over)], "VZMIN": enough + [then(enough, z_over)]}  # fmt: skip
    vols = [{"product_id": product(case), "event_ms": t0 + i * 60_000, "received_ms": t0 + i * 60_000,
             "realized_vol": value} for case, values in series.items() for i, value in enumerate(values)]  # fmt: skip

    expected = sorted([(move.name, product("PMUP"), t0 + window_ms - 1, over),
                       (move.name, product("PMDOWN"), t0 + window_ms - 1, over),
                       (zscore.name, product("VZOVER"), t0 + (len(spiked)) * 60_000, z_over),
                       (zscore.name, product("VZMIN"), t0 + len(enough) * 60_000, z_over)])  # fmt: skip
    assert spec.output is not None
    # the cases that must not fire go first on each topic: the function takes each topic in order
    produce(client, settings.topic(settings.topics.ticker), typed_messages(tickers))
    produce(client, settings.topic(settings.topics.volatility), typed_messages(vols))
    alerts = [orjson.loads(d) for d in read(client, spec.output, len(expected), timeout=60, settle=3,  # not the
                                            where=lambda d: tag in str(orjson.loads(d).get("product_id")))]  # others'
    fired = sorted((a["rule"], a["product_id"], a["event_ms"], a["value"]) for a in alerts)
    print(f"price move / vol z-score: {len(tickers)} tickers, {len(vols)} volatility records, {len(alerts)} alerts "
          f"({len(expected)} expected): {fired}")
    assert [f[:3] for f in fired] == [e[:3] for e in expected]
    for (*_, value), (*_, reference) in zip(fired, expected):
        assert value == pytest.approx(reference, rel=1e-9)
    for alert in alerts:
        rule = move if alert["rule"] == move.name else zscore
        assert (alert["threshold"], alert["severity"]) == (rule.threshold, rule.severity)

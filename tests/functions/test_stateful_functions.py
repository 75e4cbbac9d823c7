"""Trade flow, volatility, alerts and order book functions with a fake context: each restarted mid-stream (records
lost, acknowledgements lost) gives the output of an uninterrupted run, with no record twice and none missing."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest

from rtca.analytics.alerts import AlertEngine, parse_rules
from rtca.analytics.book import BookTracker
from rtca.analytics.flow import TradeFlow
from rtca.analytics.volatility import Volatility
from rtca.feed.capture import SHIPPED_CAPTURE, read_capture
from rtca.functions.alerts import AlertsFunction
from rtca.functions.book import OrderBookFunction
from rtca.functions.flow import TradeFlowFunction
from rtca.functions.routing import convert
from rtca.functions.volatility import VolatilityFunction

OUT = "persistent://t/n/out"
STATE = "persistent://t/n/state"
ALERTS = "persistent://t/n/alerts"
DEAD = "persistent://t/n/dead"
TICKER, BOOK, VOL, HEALTH = (f"persistent://t/n/{name}" for name in ("ticker", "book", "vol", "health"))
SOURCES = {TICKER: "ticker", BOOK: "book", VOL: "volatility", HEALTH: "feed_health"}
Stream = list[tuple[str, bytes]]  # (input topic, payload)


def ids_of(stream: Stream, message_id_class: type) -> list[Any]:
    """Message ids as each input topic (a ledger of its own) hands them out."""
    ledgers = {topic: 10 + i for i, topic in enumerate(dict.fromkeys(t for t, _ in stream))}
    entries: Counter[str] = Counter()
    out = []
    for topic, _ in stream:
        entries[topic] += 1
        out.append(message_id_class(ledgers[topic], entries[topic]))
    return out


def run_with_restart(make: Callable[[], Any], context: Callable[[dict[str, list[bytes]]], Any], stream: Stream,
                     ids: Sequence[Any], cut: int, *, lost: int = 0, lost_acks: int = 0) -> tuple[Any, Any, set[Any]]:  # fmt: skip
    """Instance 1 takes `stream[:cut]`, the records of its last `lost` inputs are never stored and its last
    `lost_acks` acknowledgements never reach the broker; instance 2 starts on what the topics hold and gets every
    unacknowledged input again, in order, as Pulsar redelivers. Returns (context 2, instance 2, what the broker
    had acknowledged at the restart)."""
    broker: dict[str, list[bytes]] = {}
    ctx1, first = context(broker), make()
    for i, ((topic, data), mid) in enumerate(zip(stream[:cut], ids[:cut])):
        ctx1.fail_publish = i >= cut - lost
        ctx1.run(first, data, mid, topic=topic)
    acked = set(ctx1.acked[: len(ctx1.acked) - lost_acks])
    ctx2, second = context(broker), make()
    for (topic, data), mid in zip(stream, ids):
        if mid not in acked:
            ctx2.run(second, data, mid, topic=topic)
    return ctx2, second, acked


def records(ctx: Any, topic: str = OUT) -> list[dict[str, Any]]:
    return [orjson.loads(data) for data in ctx.topics.get(topic, [])]


def same_windows(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Exactly one record per (product, window), equal to the uninterrupted run's."""
    keys = Counter((r["product_id"], r["event_ms"]) for r in got)
    assert [k for k, n in keys.items() if n > 1] == [], "duplicate windows"
    assert set(keys) == {(r["product_id"], r["event_ms"]) for r in expected}, "missing or extra windows"
    mine = {(r["product_id"], r["event_ms"]): r for r in got}
    for r in expected:
        assert {k: mine[(r["product_id"], r["event_ms"])][k] for k in r} == r


CUTS = [(1, 0, 0), (57, 0, 0), (300, 0, 3), (300, 2, 0), (301, 4, 9), (611, 1, 1), (900, 0, 0)]


# --- volatility and trade flow ---------------------------------------------------------------------------------------
def tickers(seed: int, n: int = 900) -> Stream:
    rng = random.Random(seed)
    prices = {"A-USD": 100.0, "B-USD": 2.5, "C-BTC": 0.0013}
    t = 1_700_000_000_000
    stream = []
    for sequence in range(n):
        product = rng.choice(sorted(prices))
        prices[product] *= 1 + rng.gauss(0, 1e-3)
        t += rng.randrange(0, 40)
        late = 1500 if rng.random() < 0.03 else 0  # a price from an emitted window: dropped and counted
        stream.append((TICKER, orjson.dumps({"type": "ticker", "product_id": product, "price": prices[product],
                                             "sequence": sequence, "event_ms": t - late, "received_ms": t + 2})))
    return stream


def matches(seed: int, n: int = 900) -> Stream:
    rng = random.Random(seed)
    t = 1_700_000_000_000
    stream = []
    for trade_id in range(n):
        t += rng.randrange(0, 40)
        stream.append((TICKER, orjson.dumps({
            "type": "match", "product_id": rng.choice(["A-USD", "B-USD"]), "side": rng.choice(["buy", "sell"]),
            "price": round(rng.uniform(90, 110), 2), "size": round(rng.expovariate(1.0), 6) + 1e-6,
            "trade_id": trade_id, "event_ms": t - (1500 if rng.random() < 0.03 else 0), "received_ms": t,
        })))  # fmt: skip
    return stream


def uninterrupted(engine: Any, stream: Stream) -> list[dict[str, Any]]:
    out = []
    for _, data in stream:
        out += engine.update(orjson.loads(data))
    return out


WINDOWED = {
    "volatility": (VolatilityFunction, lambda: Volatility(1000), tickers),
    "trade flow": (TradeFlowFunction, lambda: TradeFlow(1000), matches),
}


@pytest.mark.parametrize("kind", list(WINDOWED))
@pytest.mark.parametrize(("cut", "lost", "lost_acks"), CUTS)
def test_windows_after_a_restart_are_those_of_an_uninterrupted_run(fake_context, message_id_class, kind, cut, lost,
                                                                    lost_acks) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    function_class, engine, make_stream = WINDOWED[kind]
    stream = make_stream(5)
    ids = ids_of(stream, message_id_class)

    def context(broker: dict[str, list[bytes]]) -> Any:
        return fake_context({"dead_letter": DEAD, "window_ms": 1000}, output_topic=OUT, input_topic=TICKER,
                            topics=broker)  # fmt: skip

    ctx, function, acked = run_with_restart(function_class, context, stream, ids, cut, lost=lost,
                                            lost_acks=lost_acks)  # fmt: skip
    expected = uninterrupted(engine(), stream)
    got = records(ctx)
    same_windows(got, expected)
    assert all("state" in r and r["version"] >= 1 and set(r["sources"]) == {TICKER} for r in got)
    again = cut - len(acked)
    assert again > lost_acks, "the inputs of the windows open at the restart were unacknowledged: redelivered"
    assert any("resumed" in line for line in ctx.logger.lines)
    # every input is acknowledged by now, but for those of the windows still open
    waiting = sum(len(p.pending) for p in function.progress.values())
    assert waiting > 0 and len(acked | set(ctx.acked)) + waiting == len(stream)


def test_window_records_wait_for_their_checkpoint_before_acknowledging(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    ctx = fake_context({"dead_letter": DEAD, "window_ms": 1000}, output_topic=OUT, input_topic=TICKER)
    function = VolatilityFunction()
    first = [next(message_ids) for _ in range(3)]
    for mid, (t, price) in zip(first, [(0, 1.0), (10, 1.1), (20, 1.0)]):
        ctx.run(function, orjson.dumps({"product_id": "P", "event_ms": t, "price": price}), mid)
    assert ctx.acked == [] and ctx.published == []  # the window [0, 1000) holds their effect, unpublished
    closing = next(message_ids)
    ctx.run(function, orjson.dumps({"product_id": "P", "event_ms": 1000, "price": 1.2}), closing)
    [record] = records(ctx)
    assert ctx.acked == [*first, closing]
    assert record["state"]["window"]["start_ms"] == 1000 and record["sources"] == {TICKER: [7, 4, -1, -1]}
    ctx.run(function, b'{"product_id": "P", "event_ms": 1001, "price": -1}', next(message_ids))
    assert ctx.published[-1].topic == DEAD and len(ctx.acked) == 5


def test_records_of_other_window_lengths_are_not_resumed(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    broker: dict[str, list[bytes]] = {}
    ctx = fake_context({"dead_letter": DEAD, "window_ms": 1000}, output_topic=OUT, topics=broker)
    function = TradeFlowFunction()
    for t in (0, 500, 1000):
        ctx.run(function, orjson.dumps({"product_id": "P", "event_ms": t, "side": "buy", "price": 1, "size": 1}),
                next(message_ids))  # fmt: skip
    other = fake_context({"dead_letter": DEAD, "window_ms": 5000}, output_topic=OUT, topics=broker)
    second = TradeFlowFunction()
    other.run(second, orjson.dumps({"product_id": "P", "event_ms": 1200, "side": "buy", "price": 1, "size": 1}),
              next(message_ids))  # fmt: skip
    window = second.engine.products["P"].window  # afresh: one match (a taker sell), in [0, 5000)
    assert second.progress["P"].version == 0 and (window.start_ms, window.sell_count) == (0, 1)


# --- alerts ------------------------------------------------------------------------------------------------------------
RULES = [
    {"name": "move", "kind": "price_move", "window_s": 2, "threshold": 0.5, "clear": 0.2},
    {"name": "vol", "kind": "vol_zscore", "history": 6, "min_history": 3, "threshold": 1.5, "clear": 0.5},
    {"name": "spread", "kind": "spread_bps", "threshold": 20.0, "clear": 10.0},
    {"name": "stall", "kind": "feed_stalled", "threshold": 3.0, "clear": 1.0},
    {"name": "gaps", "kind": "missed_trades", "threshold": 0},
]


def alert_inputs(seed: int, n: int = 900) -> Stream:
    """Interleaved tickers (swinging prices), book spreads, volatility records, feed-health ticks and gaps."""
    rng = random.Random(seed)
    price, t, trade = {"A": 100.0, "B": 10.0}, 1_700_000_000_000, 0
    stream: Stream = []
    for _ in range(n):
        t += rng.randrange(20, 120)
        product = rng.choice("AB")
        roll = rng.random()
        if roll < 0.55:
            price[product] *= 1 + rng.gauss(0, 2.5e-3)
            # a field of another record's shape (the router passes unknown fields through): still a ticker
            stream.append((TICKER, orjson.dumps({"type": "ticker", "product_id": product, "price": price[product],
                                                 "event_ms": t, "received_ms": t, "spread_bps": 99.0})))  # fmt: skip
        elif roll < 0.75:
            stream.append((BOOK, orjson.dumps({"product_id": product, "event_ms": t, "received_ms": t, "valid": True,
                                               "spread_bps": abs(rng.gauss(10, 8))})))  # fmt: skip
        elif roll < 0.85:
            stream.append((VOL, orjson.dumps({"product_id": product, "event_ms": t, "window_ms": 1000,
                                              "realized_vol": rng.lognormvariate(0, 0.6), "price": 1.0})))  # fmt: skip
        elif roll < 0.97:
            stream.append((HEALTH, orjson.dumps({"kind": "tick", "ts_ms": t, "source": "replay",
                                                 "silence_ms": int(abs(rng.gauss(1500, 1500)))})))  # fmt: skip
        else:
            first = trade + rng.randrange(1, 5)
            trade = first + rng.randrange(0, 3)
            stream.append((HEALTH, orjson.dumps({"kind": "gap", "ts_ms": t, "source": "replay", "product_id": product,
                                                 "first_missing": first, "last_missing": trade,
                                                 "missed": trade - first + 1})))  # fmt: skip
    return stream


def alert_context(fake_context: Callable[..., Any], broker: dict[str, list[bytes]], every: int = 7) -> Any:
    return fake_context({"dead_letter": DEAD, "rules": RULES, "state_topic": STATE, "checkpoint_every": every,
                         "inputs": SOURCES}, output_topic=ALERTS, input_topic=TICKER, topics=broker)  # fmt: skip


def test_alerts_function_equals_the_engine_and_acknowledges_what_changes_nothing_at_once(fake_context,
                                                                                        message_id_class) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    stream = alert_inputs(3)
    ids = ids_of(stream, message_id_class)
    ctx, function = alert_context(fake_context, {}), AlertsFunction()
    for (topic, data), mid in zip(stream, ids):
        ctx.run(function, data, mid, topic=topic)
    engine = AlertEngine(parse_rules(RULES))
    expected = [a for topic, data in stream for a in engine.evaluate(orjson.loads(data), SOURCES[topic])]
    got = records(ctx, ALERTS)
    assert [{k: a[k] for k in expected[0]} for a in got] == expected
    assert {a["rule"] for a in got} == {"move", "vol", "spread", "stall", "gaps"}
    assert all(a["state"] and a["version"] >= 1 for a in got)
    states = records(ctx, STATE)
    assert states and all(set(s) == {"product_id", "state", "sources", "version"} for s in states)
    waiting = sum(len(p.pending) for p in function.progress.values())
    assert 0 < waiting < 3 * 7 and len(ctx.acked) + waiting == len(stream)
    print(f"alerts: {len(got)} alerts, {len(states)} state records, {len(stream)} inputs")


@pytest.mark.parametrize(("cut", "lost", "lost_acks"), CUTS)
def test_alerts_after_a_restart_are_those_of_an_uninterrupted_run(fake_context, message_id_class, cut, lost,
                                                                  lost_acks) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    """Hysteresis survives: an alert whose condition persists across the restart does not fire again, one that
    re-armed before it fires; nothing fires twice."""
    stream = alert_inputs(4)
    ids = ids_of(stream, message_id_class)
    ctx, _, _ = run_with_restart(AlertsFunction, lambda broker: alert_context(fake_context, broker), stream, ids, cut,
                                 lost=lost, lost_acks=lost_acks)  # fmt: skip
    engine = AlertEngine(parse_rules(RULES))
    expected = [a for topic, data in stream for a in engine.evaluate(orjson.loads(data), SOURCES[topic])]
    got = records(ctx, ALERTS)
    assert Counter(a["alert_id"] for a in got).most_common(1)[0][1] == 1, "an alert fired twice"
    assert [{k: a[k] for k in expected[0]} for a in sorted(got, key=lambda a: a["event_ms"])] == expected


def test_engine_state_round_trips_per_key() -> None:
    engine = AlertEngine(parse_rules(RULES))
    for topic, data in alert_inputs(9, 400):
        engine.evaluate(orjson.loads(data), SOURCES[topic])
    copy = AlertEngine(parse_rules(RULES))
    for key in ("A", "B", "replay"):
        copy.resume(key, orjson.loads(orjson.dumps(engine.state_of(key))))
    assert (copy.armed, copy._prices, copy._gaps) == (engine.armed, engine._prices, engine._gaps)
    assert {k: list(v) for k, v in copy._vols.items()} == {k: list(v) for k, v in engine._vols.items()}
    for topic, data in alert_inputs(10, 300):
        assert copy.evaluate(orjson.loads(data), SOURCES[topic]) == engine.evaluate(orjson.loads(data), SOURCES[topic])



@pytest.mark.parametrize("corrupt", [
    {"armed": {"move": True}, "prices": {"move": [[1, "x"]]}},
    {"armed": {"spread": True}, "vols": {"vol": None}},
    {"armed": {"move": True}, "gaps": {"gaps": [3]}},
])  # fmt: skip
def test_a_corrupt_engine_state_changes_nothing(corrupt: dict[str, Any]) -> None:
    """The key's state was dropped before the new one was parsed: a corrupt checkpoint (read back at start, passed
    over) left it half replaced, armed again but with no prices, volatility history or last gap."""
    engine = AlertEngine(parse_rules(RULES))
    for topic, data in alert_inputs(9, 400):
        engine.evaluate(orjson.loads(data), SOURCES[topic])
    before = orjson.dumps(engine.state_of("A"))
    with pytest.raises((TypeError, ValueError)):
        engine.resume("A", corrupt)
    assert orjson.dumps(engine.state_of("A")) == before

# --- order book ----------------------------------------------------------------------------------------------------------
def level2() -> Stream:
    out = []
    for frame in read_capture(SHIPPED_CAPTURE).frames:
        raw = orjson.loads(frame.text)
        if raw.get("type") in ("snapshot", "l2update"):
            out.append((BOOK, orjson.dumps(convert(raw, int(frame.at * 1000)).record)))
    return out


def book_context(fake_context: Callable[..., Any], broker: dict[str, list[bytes]]) -> Any:
    return fake_context({"dead_letter": DEAD, "alerts": ALERTS, "cadence_ms": 1000}, output_topic=OUT,
                        input_topic=BOOK, topics=broker)  # fmt: skip


@pytest.mark.parametrize(("cut", "lost", "lost_acks", "published"),
                         [(40, 0, 0, 40), (2000, 3, 0, 2000), (5000, 0, 7, 7000), (9000, 30, 30, 9729)])
def test_book_after_a_restart_resumes_from_its_input(fake_context, message_id_class, cut, lost, lost_acks,
                                                      published) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    """Instance 2 re-reads the level2 topic (as stored at its start: `published` messages) from the snapshots of
    the last summaries: its summaries, with those of instance 1, are those of an uninterrupted run."""
    stream = level2()
    ids = ids_of(stream, message_id_class)

    def context(broker: dict[str, list[bytes]]) -> Any:
        broker[BOOK] = [data for _, data in stream[:published]]
        ctx = book_context(fake_context, broker)
        ctx.message_ids[BOOK] = ids[:published]
        return ctx

    ctx, function, _ = run_with_restart(OrderBookFunction, context, stream, ids, cut, lost=lost, lost_acks=lost_acks)
    tracker = BookTracker(1000)
    expected = [r for _, data in stream for r in tracker.update(orjson.loads(data))]
    got = records(ctx)
    assert all(r["valid"] for r in got) and all(r["valid"] for r in expected)
    keys = Counter((r["product_id"], r["event_ms"]) for r in got)
    assert max(keys.values()) == 1, "a summary twice"
    assert sorted(keys) == sorted((r["product_id"], r["event_ms"]) for r in expected)
    mine = {(r["product_id"], r["event_ms"]): r for r in got}
    for r in expected:
        assert {k: mine[(r["product_id"], r["event_ms"])][k] for k in r} == r
    assert any("rebuilt" in line for line in ctx.logger.lines) or cut < 50
    assert records(ctx, ALERTS) == []


def test_book_over_max_replay_waits_for_a_snapshot(fake_context, message_id_class) -> None:  # type: ignore[no-untyped-def]
    stream = level2()[:3000]
    ids = ids_of(stream, message_id_class)
    broker: dict[str, list[bytes]] = {BOOK: [d for _, d in stream]}
    ctx = book_context(fake_context, broker)
    ctx.message_ids[BOOK] = ids
    first = OrderBookFunction()
    for (topic, data), mid in zip(stream[:2000], ids[:2000]):
        ctx.run(first, data, mid, topic=topic)
    published = len(records(ctx))
    ctx2 = book_context(fake_context, broker)
    ctx2.user_config["max_replay"] = 100
    ctx2.message_ids[BOOK] = ids
    second = OrderBookFunction()
    for (topic, data), mid in zip(stream[2000:], ids[2000:]):
        ctx2.run(second, data, mid, topic=topic)
    assert len(records(ctx2)) == published  # nothing new: no book until a snapshot
    problems = records(ctx2, ALERTS)
    assert problems and {p["rule"] for p in problems} == {"book_no_snapshot"}
    assert any("waits for a snapshot" in line for line in ctx2.logger.lines)


def test_book_problems_are_keyed_apart_from_the_alerts_functions_records(fake_context, message_ids) -> None:  # type: ignore[no-untyped-def]
    ctx, function = book_context(fake_context, {}), OrderBookFunction()
    ctx.run(function, orjson.dumps({"type": "l2update", "product_id": "P", "event_ms": 5, "changes": []}),
            next(message_ids))  # fmt: skip
    [problem] = ctx.published
    assert problem.topic == ALERTS and problem.conf["partition_key"] == "P/book"


def test_a_record_that_breaks_a_kernel_unforeseen_is_a_dead_letter_and_the_stream_goes_on(
        fake_context, message_ids, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    ctx = fake_context({"dead_letter": DEAD, "window_ms": 1000}, output_topic=OUT, input_topic=TICKER)
    function = VolatilityFunction()
    update = Volatility.update

    def update_unless_poisoned(self: Volatility, ticker: Any) -> list[dict[str, Any]]:
        if ticker.get("poisoned"):
            raise ZeroDivisionError("a case the kernel does not foresee")
        return update(self, ticker)

    monkeypatch.setattr(Volatility, "update", update_unless_poisoned)
    tick = {"product_id": "P", "price": 10.0, "received_ms": 1}
    for t, extra in ((0, {}), (100, {"poisoned": True}), (1_500, {})):
        ctx.run(function, orjson.dumps({**tick, "event_ms": t, **extra}), next(message_ids))
    [dead] = records(ctx, DEAD)
    assert dead["reason"] == "internal_error" and "ZeroDivisionError" in dead["detail"]
    assert [r["event_ms"] for r in records(ctx)] == [0]  # the window closed by the next ticker: the stream went on
    assert len(ctx.acked) == 3  # the poisoned input with its dead letter, the others with the window record


T0 = 1_700_000_000_000


@pytest.mark.parametrize(("topic", "bad"), [
    (TICKER, {"type": "ticker", "product_id": 5, "price": 110.0, "event_ms": T0 + 1, "received_ms": T0 + 1}),
    (BOOK, {"product_id": 5, "event_ms": T0 + 1, "received_ms": T0 + 1, "valid": True, "spread_bps": 99.0}),
    (BOOK, {"product_id": "", "event_ms": T0 + 1, "received_ms": T0 + 1, "valid": True, "spread_bps": 99.0}),
    (BOOK, {"product_id": "A", "event_ms": T0 + 1, "received_ms": 2**63, "valid": True, "spread_bps": 99.0}),
    (HEALTH, {"kind": "gap", "ts_ms": T0 + 1, "source": "replay", "product_id": ["A"], "first_missing": 1,
              "last_missing": 9, "missed": 9}),
    (HEALTH, {"kind": "gap", "ts_ms": "soon", "source": "replay", "product_id": "A", "first_missing": 1,
              "last_missing": 9, "missed": 9}),
])  # fmt: skip
def test_the_alerts_function_dead_letters_a_record_whose_alert_it_could_not_publish(  # type: ignore[no-untyped-def]
        fake_context, message_ids, topic, bad) -> None:  # fmt: skip
    """A product id that is not a string failed the publish after the engine had taken the record in (the Pulsar
    client refuses it as a key): `process` raised, and the redelivered input was lost without a dead letter. A time
    that is not a LONG made an alert Pinot drops. Both are refused before any state changes, as in every function."""
    ctx, function = alert_context(fake_context, {}), AlertsFunction()
    ticker = {"type": "ticker", "product_id": "A", "price": 100.0, "event_ms": T0, "received_ms": T0}
    ctx.run(function, orjson.dumps(ticker), next(message_ids), topic=TICKER)
    ctx.run(function, orjson.dumps(bad), next(message_ids), topic=topic)
    [dead] = records(ctx, DEAD)
    assert dead["reason"] == "invalid_field" and dead["source_topic"] == topic
    assert records(ctx, ALERTS) == [] and set(function.progress) == {"A"}
    ctx.run(function, orjson.dumps({**ticker, "price": 110.0, "event_ms": T0 + 2}), next(message_ids), topic=TICKER)
    [move] = records(ctx, ALERTS)
    assert move["rule"] == "move" and move["product_id"] == "A"  # the product's state went on as before


@pytest.mark.parametrize("bad", [
    {"type": "snapshot", "product_id": "", "event_ms": 1000, "bids": [[99.0, 1.0]], "asks": [[101.0, 1.0]]},
    {"type": "snapshot", "product_id": "R", "event_ms": 1000, "bids": [[0.0, 1.0]], "asks": [[5e-324, 1.0]]},
])  # fmt: skip
def test_book_replay_skips_what_the_first_run_dead_lettered(fake_context, message_id_class, bad) -> None:  # type: ignore[no-untyped-def]
    """A level2 record that `process` refused (an empty product; a price of 0, whose mid would divide by zero)
    is skipped by the restart's replay too: no summary the first run had not, and no error stopping every input."""
    snap = {"type": "snapshot", "product_id": "P", "event_ms": 0, "bids": [[99.0, 1.0]], "asks": [[101.0, 1.0]]}
    update = {"type": "l2update", "product_id": "P", "event_ms": 3000, "changes": [["buy", 99.5, 2.0]]}
    stream = [orjson.dumps(snap), orjson.dumps(bad)]
    ids = [message_id_class(1, 1), message_id_class(1, 2), message_id_class(1, 3)]
    broker: dict[str, list[bytes]] = {BOOK: list(stream)}
    first = book_context(fake_context, broker)
    first.message_ids[BOOK] = ids[:2]
    function = OrderBookFunction()
    for data, mid in zip(stream, ids):
        first.run(function, data, mid)
    assert [r["product_id"] for r in records(first, OUT)] == ["P"] and len(records(first, DEAD)) == 1
    second = book_context(fake_context, broker)
    second.message_ids[BOOK] = ids[:2]
    second.run(OrderBookFunction(), orjson.dumps(update), ids[2])
    assert [(r["product_id"], r["event_ms"]) for r in records(second, OUT)] == [("P", 0), ("P", 3000)]


# --- redelivery to the running instance (a broker restart or topic unload redelivers what is unacknowledged) -------
def test_a_redelivered_input_of_an_open_window_stays_unacknowledged_until_its_checkpoint(fake_context,
                                                                                        message_id_class) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    """Acknowledged on redelivery, the open window's prices were lost when the instance later died before the
    window closed: no stored checkpoint held them."""
    prices = [orjson.dumps({"product_id": "P", "event_ms": t, "price": x}) for t, x in ((0, 1.0), (10, 1.1),
                                                                                          (20, 1.2), (1000, 1.3))]
    ids = [message_id_class(1, i + 1) for i in range(4)]
    broker: dict[str, list[bytes]] = {}
    config = {"dead_letter": DEAD, "window_ms": 1000}
    first, function = fake_context(config, output_topic=OUT, input_topic=TICKER, topics=broker), VolatilityFunction()
    for data, mid in [*zip(prices[:3], ids[:3]), *zip(prices[:3], ids[:3])]:  # the reconnect: all three again
        first.run(function, data, mid)
    assert first.acked == [] and records(first, OUT) == []
    second = fake_context(config, output_topic=OUT, input_topic=TICKER, topics=broker)  # it died: a new instance
    restarted = VolatilityFunction()
    for data, mid in zip(prices, ids):  # everything unacknowledged comes again
        second.run(restarted, data, mid)
    [window] = records(second, OUT)
    assert (window["event_ms"], window["n_prices"]) == (0, 3) and len(second.acked) == 4  # the record holds all


def test_a_redelivered_book_input_is_not_applied_again(fake_context, message_id_class) -> None:  # type: ignore[no-untyped-def]
    """A snapshot applied again would undo the updates after it: the later summary showed the old book."""
    messages = [
        {"type": "snapshot", "product_id": "P", "event_ms": 0, "bids": [[99.0, 1.0], [98.0, 1.0]],
         "asks": [[101.0, 1.0]]},
        {"type": "l2update", "product_id": "P", "event_ms": 1000, "changes": [["buy", 100.0, 5.0]]},
        {"type": "l2update", "product_id": "P", "event_ms": 1500, "changes": [["buy", 100.0, 0.0], ["buy", 99.0, 0.0]]},
        {"type": "l2update", "product_id": "P", "event_ms": 2000, "changes": [["sell", 102.0, 1.0]]},
    ]  # fmt: skip
    ids = [message_id_class(1, i + 1) for i in range(4)]
    ctx = fake_context({"dead_letter": DEAD, "alerts": ALERTS, "cadence_ms": 1000, "ack_every": 64,
                        "ack_after_ms": 1e9}, output_topic=OUT, input_topic=BOOK, topics={})  # fmt: skip
    function = OrderBookFunction()
    for index in (0, 1, 2, 0, 1, 2, 3):  # the first three again after a reconnect, then the next
        ctx.run(function, orjson.dumps(messages[index]), ids[index])
    tracker = BookTracker(1000)
    expected = [r for m in messages for r in tracker.update(m)]
    got = records(ctx, OUT)
    assert [(r["event_ms"], r["best_bid"]) for r in got] == [(r["event_ms"], r["best_bid"]) for r in expected]
    assert got[-1]["best_bid"] == 98.0


# --- what a restarted function reads back ------------------------------------------------------------------------------
SHORT_ID = {"product_id": "P", "window_ms": 1000, "state": {"late": 0, "window": None}, "sources": {TICKER: [7]},
            "version": 5}  # fmt: skip
SUMMARY_SOURCE = {"topic": BOOK, "message_id": [7, 2, -1, -1]}


def _stats_record(**state: float) -> dict[str, Any]:
    """A statistics record; `state` replaces fields of its state (`STATE_LAYOUT` names)."""
    from rtca.analytics.stats import STATE_LAYOUT, TickerStats

    stats = TickerStats(10, 5)
    stats.update(1.0)
    values = stats.state()
    for name, value in state.items():
        values[STATE_LAYOUT.index(name)] = value
    return {"product_id": "P", "state": values, "source": {"topic": TICKER, "message_id": [7, 1, -1, -1]}}


def _window(**window: float) -> dict[str, Any]:
    """A window function's checkpoint with an open window of these fields."""
    return {**SHORT_ID, "window_ms": 60_000, "sources": {TICKER: [7, 1, -1, -1]},
            "state": {"late": 0, "window": window}}  # fmt: skip


def _summary(snapshot_id: list[Any], topic: str = BOOK) -> dict[str, Any]:
    return {"product_id": "P", "valid": True, "event_ms": 0, "snapshot_id": snapshot_id,
            "source": {"topic": topic, "message_id": [7, 2, -1, -1]}}  # fmt: skip


@pytest.mark.parametrize("make, topic, corrupt", [
    (TradeFlowFunction, OUT, SHORT_ID),
    (VolatilityFunction, OUT, SHORT_ID),
    (TradeFlowFunction, OUT, {**SHORT_ID, "sources": {TICKER: [7, 1, -1]},
                              "state": {"late": 0, "window": {"start_ms": 0, "buy_notional": None}}}),
    (AlertsFunction, STATE, {**SHORT_ID, "state": {}}),
    (TradeFlowFunction, OUT, {**_window(start_ms=0), "sources": {TICKER: [7, 2**63, -1]}}),  # beyond an int64
    # what no input the function took could leave: every later record of the product late (unacknowledged, for
    # good), or failing (the log of a price of 0, a move divided by 0)
    (VolatilityFunction, OUT, _window(start_ms=1e300, first_price=1.0, last_price=1.0)),
    (VolatilityFunction, OUT, _window(start_ms=10**15, first_price=1.0, last_price=1.0)),
    (VolatilityFunction, OUT, _window(start_ms=0, first_price=1.0, last_price=0.0)),
    (TradeFlowFunction, OUT, _window(start_ms=0, last_event_ms=10**15)),
    (AlertsFunction, STATE, {**SHORT_ID, "sources": {TICKER: [7, 1, -1, -1]},
                             "state": {"prices": {"price_move_1pct_60s": [[0, 0.0]]}}}),
    (AlertsFunction, STATE, {**SHORT_ID, "sources": {TICKER: [7, 1, -1, -1]},
                             "state": {"prices": {"price_move_1pct_60s": [[10**15, 1.0]]}}}),
    (OrderBookFunction, OUT, _summary([7, 1])),
    (OrderBookFunction, OUT, {**_summary([7, 1, -1, -1]), "product_id": None}),
    (OrderBookFunction, OUT, _summary([1e21, 1, -1, -1])),  # the client's MessageId refused it: the start failed
    (OrderBookFunction, OUT, _summary([7, 1, -1, 2**40])),
    (OrderBookFunction, OUT, _summary([7, 1, -1, -1], topic="no topic name")),  # the client refuses to read it
    (OrderBookFunction, OUT, _summary([7, 1, -1, -1], topic=TICKER)),  # not an input: nothing of ours to re-read
    ("stats", OUT, {**_stats_record(), "source": {"topic": TICKER, "message_id": [7]}}),
    ("stats", OUT, _stats_record(window=2**64 - 1)),  # no deque that long: OverflowError failed the start
    ("stats", OUT, _stats_record(window=1e308, count=1e308)),
])  # fmt: skip
def test_a_corrupt_record_read_back_at_start_is_passed_over(fake_context, message_id_class, make, topic,  # type: ignore[no-untyped-def]
                                                           corrupt) -> None:  # fmt: skip
    """A record of another format (or corrupt) on a function's output or state topic defines no state; it failed
    the start before, which the function retries for ever: every input stalled, for every product."""
    function = _started(fake_context, message_id_class, make, topic, corrupt)
    assert "P" not in function.progress
    assert "P" not in getattr(function.engine, "books", {}) and "P" not in getattr(function.engine, "products", {})


@pytest.mark.parametrize("make, topic, record, taken", [
    (TradeFlowFunction, OUT, _window(start_ms=0), "progress"),
    (VolatilityFunction, OUT, _window(start_ms=0, first_price=1.0, last_price=1.0), "progress"),
    # a window the functions opened 5 min after a receipt 4 min ahead of their clock (both within the checks)
    (VolatilityFunction, OUT, _window(start_ms=(time.time_ns() // 1_000_000 + 9 * 60_000) // 60_000 * 60_000,
                                      first_price=1.0, last_price=1.0), "progress"),  # fmt: skip
    (AlertsFunction, STATE, {**SHORT_ID, "sources": {TICKER: [7, 1, -1, -1]},
                             "state": {"prices": {"price_move_1pct_60s": [[0, 1.0]]}}}, "progress"),
    (OrderBookFunction, OUT, _summary([7, 1, -1, -1]), "products"),
    (OrderBookFunction, OUT, _summary([7, 1, -1, -1], topic=f"{BOOK}-partition-0"), "products"),
    ("stats", OUT, _stats_record(), "books"),
])  # fmt: skip
def test_a_record_read_back_at_start_defines_its_state(fake_context, message_id_class, make, topic, record,  # type: ignore[no-untyped-def]
                                                      taken) -> None:  # fmt: skip
    """The control of the test above: the same records, well formed, are taken (a check that passed every record
    over would pass it)."""
    function = _started(fake_context, message_id_class, make, topic, record)
    assert "P" in (function.progress if taken == "progress" else getattr(function.engine, taken))


def _started(fake_context, message_id_class, make, topic: str, record: dict[str, Any]) -> Any:  # type: ignore[no-untyped-def]
    """A function started on `record` as the only one of its output or state `topic`; its inputs (the book's level2
    topic, the ticker) hold a snapshot of P at the id its summaries name (7:1)."""
    if make == "stats":
        from rtca.functions.stats import TickerStatsFunction

        make = TickerStatsFunction
    snapshot = [orjson.dumps({"type": "snapshot", "product_id": "P", "bids": [[1.0, 1.0]], "asks": [[2.0, 1.0]],
                              "event_ms": 0})]  # fmt: skip
    partition = f"{BOOK}-partition-0"
    ctx = fake_context({"dead_letter": DEAD, "alerts": ALERTS, "state_topic": STATE, "inputs": SOURCES},
                       output_topic=OUT, input_topic=BOOK,
                       topics={topic: [orjson.dumps(record)], BOOK: snapshot, TICKER: snapshot, partition: snapshot},
                       message_ids={t: [message_id_class(7, 1)] for t in (BOOK, TICKER, partition)})  # fmt: skip
    function = make()
    function._start(ctx)
    assert function._ready
    return function


@pytest.mark.parametrize("function_class", [VolatilityFunction, TradeFlowFunction, AlertsFunction, OrderBookFunction])
def test_an_input_dead_lettered_before_a_crash_is_not_dead_lettered_again(  # type: ignore[no-untyped-def]
        fake_context, message_ids, function_class) -> None:  # fmt: skip
    """Its acknowledgement lost in the crash, Pulsar redelivers it: its dead letter is already stored."""
    config = {"dead_letter": DEAD, "window_ms": 1000, "rules": RULES, "state_topic": STATE, "alerts": ALERTS}
    broker: dict[str, list[bytes]] = {}
    bad = [next(message_ids) for _ in range(2)]
    before = fake_context(config, output_topic=OUT, input_topic=TICKER, topics=broker)
    first = function_class()
    for mid in bad:
        before.run(first, b"{not json", mid)
    assert len(records(before, DEAD)) == 2
    (name,) = {output.producer.name for output in first._dead_letters._outputs.values()}
    stored = before.producers[DEAD][-1][1]  # what the broker tells a new producer of that name: its last batch's first
    after = fake_context(config, output_topic=OUT, input_topic=TICKER, topics=broker, producers=before.producers,
                         stored_sequence_ids={name: int(stored.get("rtca-seq", -1))})  # fmt: skip
    second = function_class()
    for mid in [*bad, next(message_ids)]:  # the two again (acknowledgements lost), then a new bad one
        after.run(second, b"{not json", mid)
    second._dead_letters.sweep(older_than_ns=0)
    assert len(records(after, DEAD)) == 3  # the two of the first instance, the new one once
    assert sorted(m.entry for m in after.acked) == [m.entry for m in [*bad]] + [bad[-1].entry + 1]

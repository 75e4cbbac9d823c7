"""Benchmark: end-to-end rate of the deployed router and ticker statistics against an identity function.

    python -m rtca.bench.functions_e2e [--messages 10000] [--rounds 5] [--keep] [--out DIR]

Needs the stack (`rtca up`). Deploys, on topics of their own, the router, the statistics function and two identity
functions, all through `rtca.functions.deploy`. Each run produces N messages as fast as the client can and times
from the first send to the last output received; an identity gets the same input as the function it is compared
with (raw capture frames for the router, typed tickers for the statistics). Each round runs the identities and the
function back to back, in alternating order (ABBA), so all see the same load on a shared machine; the figure is the
median over rounds of each round's ratio function / reference, with the absolute rates (median and best) beside
it and the load average around each round. Goal: each function >= 90% of the reference's rate (our processing is
not the bottleneck of the Functions runtime).

The reference is the identity deployed the way the router and the statistics are
(`rtca.functions.identity.PublishingIdentity`: ``MANUAL`` guarantee, our `Publisher`, no processing), so the ratio
is the cost of their processing alone. The runtime's own identity (`Identity`: it returns its input, the runtime
publishes and acknowledges it, ``ATLEAST_ONCE``) is slower here than ours (it confirms every record with a callback
of its own) and is reported beside it as context: measured against it, a function would look faster than it is.

On a busy machine wall-clock rates swing by tens of percent from one run to the next, so it also prints the CPU
time the function's instance process spent per message (local stack only, read with psutil): a load-robust view
of what one message costs the instance, ours against the identity's.

The result (every round's rates, CPU and load) is written to ``<run dir>/bench/functions_e2e-<UTC time>.json``.

Client hygiene (an earlier version died with SIGSEGV inside the Pulsar client): the client logs through the C++
console logger, never a Python `logging.Logger` (the client's threads would call into Python while the
interpreter shuts down); each target gets one consumer and one producer for the whole benchmark, closed before
the client; and a consumer is never `unsubscribe()`d: in the bundled C++ client (4.2),
``MultiTopicsConsumerImpl::unsubscribeAsync`` iterates its per-topic consumers while the completion of the last
one, when the broker has already answered by the time its listener is attached, runs on the same thread and
clears that map (use after free). `client.subscribe(list)` always makes such a consumer. Subscriptions go away
with the benchmark's topics, deleted at the end.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import pulsar

from rtca.bench.pipeline import delete_topics_with_prefix, send_each
from rtca.feed.capture import SHIPPED_CAPTURE, read_capture
from rtca.feed.sinks import pulsar_client
from rtca.functions import routing
from rtca.functions.deploy import (
    ROUTER,
    TICKER_STATS,
    FunctionSpec,
    delete_functions,
    deploy,
    function_specs,
    identity_spec,
    publishing_identity_spec,
)
from rtca.settings import Settings, Topics, load_settings

Batch = list[tuple[bytes, dict[str, str], str | None]]
GOAL = 0.9
#: (function, input kind) pairs measured, each against the identities on the same input.
PAIRS = (("router", "raw"), ("stats", "ticker"))
#: The reference (the identity deployed as our functions are) and the runtime's own identity (context).
REFERENCE, RUNTIME = "publishing", "identity"
BASELINES = (REFERENCE, RUNTIME)


@dataclass(frozen=True)
class Target:
    """A deployed function under test: where its input goes and which topics carry its output."""

    label: str
    spec: FunctionSpec
    input_topic: str
    output_topics: tuple[str, ...]


def raw_frames(count: int) -> Batch:
    """The shipped capture's received frames, looped to `count`, as ingest publishes them."""
    frames = read_capture(SHIPPED_CAPTURE).frames
    batch: Batch = []
    for frame in itertools.islice(itertools.cycle(frames), count):
        obj = orjson.loads(frame.text)
        props = {"received_ms": str(int(frame.at * 1000))}
        if isinstance(obj.get("product_id"), str):
            props["product"] = obj["product_id"]
        batch.append((frame.text.encode(), props, obj.get("type")))
    return batch


def typed_tickers(count: int, seed: int = 1) -> Batch:
    """Typed ticker records (the router's output) of 8 interleaved random walks."""
    rng = random.Random(seed)
    prices = {f"P{k}-USD": 3.7 * 10.0 ** (k % 6 - 1) for k in range(8)}
    batch: Batch = []
    for sequence in range(1, count + 1):
        product = rng.choice(sorted(prices))
        prices[product] = round(max(prices[product] / 2, prices[product] * (1 + rng.gauss(0, 2e-3))), 8)
        record = {"type": "ticker", "product_id": product, "price": prices[product], "sequence": sequence,
                  "time": "2021-04-17T16:43:30.244075Z", "event_ms": 1618677810244, "received_ms": 1618677810250}
        batch.append((orjson.dumps(record), {}, product))
    return batch


# --- the instance processes' CPU time --------------------------------------------------------------------------------
class InstanceCpu:
    """CPU seconds used so far by the instance process(es) of a function on this machine (None: not local)."""

    def __init__(self) -> None:
        self._procs: dict[str, list[psutil.Process]] = {}

    @staticmethod
    def _find(name: str) -> list[psutil.Process]:
        from rtca.stack.process import function_instance

        return [proc for proc in psutil.process_iter() if function_instance(proc) == name]

    def __call__(self, name: str) -> float | None:
        for attempt in range(2):
            procs = self._procs.get(name) if attempt == 0 else None
            if procs is None:
                procs = self._procs[name] = self._find(name)
            if not procs:
                return None
            try:
                return sum(t.user + t.system for t in (p.cpu_times() for p in procs))
            except psutil.Error:  # restarted since: look it up again
                self._procs.pop(name, None)
        return None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- one target's client side ---------------------------------------------------------------------------------------
@dataclass
class Endpoint:
    """The benchmark's long-lived producer into a target and consumer of its outputs (one each per target)."""

    target: Target
    producer: pulsar.Producer
    consumer: pulsar.Consumer
    #: Outputs found before a run (left from an earlier one: a redelivered input answered twice, a timed-out run).
    stale: int = 0

    @classmethod
    def open(cls, client: pulsar.Client, target: Target, tag: str) -> Endpoint:
        topics = list(target.output_topics)
        consumer = client.subscribe(topics if len(topics) > 1 else topics[0], f"bench-{tag}-{target.spec.name}",
                                    initial_position=pulsar.InitialPosition.Latest,
                                    receiver_queue_size=5000)  # fmt: skip
        try:
            producer = client.create_producer(target.input_topic, batching_enabled=True,
                                              batching_max_publish_delay_ms=5, block_if_queue_full=True,
                                              max_pending_messages=10000)  # fmt: skip
        except BaseException:
            consumer.close()
            raise
        return cls(target, producer, consumer)

    def close(self) -> None:
        """Close both (never `unsubscribe()`: see the module's docstring); errors are not the benchmark's."""
        for resource in (self.producer, self.consumer):
            try:
                resource.close()
            except Exception:  # noqa: BLE001 - already closed, broker gone: nothing left to release
                pass

    def drain(self, quiet_ms: int = 200) -> int:
        """Receive and acknowledge whatever is left from before (a redelivery, a timed-out run)."""
        stale = 0
        while True:
            try:
                self.consumer.acknowledge(self.consumer.receive(quiet_ms))
            except pulsar.Timeout:
                return stale
            stale += 1

    def run(self, batch: Batch, timeout: float = 300.0) -> float:
        """Seconds from the first send to the last output received; the outputs are acknowledged after."""
        self.stale += self.drain()
        producer, receive = self.producer, self.consumer.receive
        last: dict[str, pulsar.Message] = {}
        started = time.perf_counter()
        send_each(producer, batch)
        producer.flush()
        received, deadline = 0, time.monotonic() + timeout
        while received < len(batch):
            try:
                msg = receive(1000)
            except pulsar.Timeout:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.target.label}: {received}/{len(batch)} outputs after {timeout:.0f} s")
                continue
            last[msg.topic_name()] = msg
            received += 1
        seconds = time.perf_counter() - started
        for msg in last.values():  # per topic: a multi-topic consumer acknowledges cumulatively topic by topic
            self.consumer.acknowledge_cumulative(msg)
        return seconds


# --- deployment -------------------------------------------------------------------------------------------------------
def isolated(settings: Settings, tag: str) -> Settings:
    topics = Topics(**{key: f"bench-{tag}-{name}" for key, name in settings.topics.model_dump().items()})
    return settings.model_copy(update={"topics": topics})


def targets(settings: Settings, tag: str) -> dict[str, Target]:
    """The functions under test and the baselines, each on topics of its own: the router's and the statistics'
    sets are apart (`bench-<tag>-r-...`, `bench-<tag>-s-...`), so the router's tickers never reach the statistics
    function, nor the statistics' input the router's consumer."""
    s, ss = isolated(settings, f"{tag}-r"), isolated(settings, f"{tag}-s")
    t = s.topics
    router = next(x for x in function_specs(s, name_prefix=f"bench-{tag}-") if x.name.endswith(ROUTER))
    stats = next(x for x in function_specs(ss, name_prefix=f"bench-{tag}-") if x.name.endswith(TICKER_STATS))
    routed = tuple(s.topic(getattr(t, c)) for c in (*routing.CHANNELS, routing.DEAD_LETTER))
    ident_in, ident_out = s.topic(f"bench-{tag}-identity-in"), s.topic(f"bench-{tag}-identity-out")
    identity = identity_spec(f"bench-{tag}-identity", ident_in, ident_out)
    pub_in, pub_out = s.topic(f"bench-{tag}-publishing-in"), s.topic(f"bench-{tag}-publishing-out")
    publishing = publishing_identity_spec(f"bench-{tag}-publishing-identity", pub_in, pub_out)
    return {
        "router": Target("router", router, s.topic(t.raw), routed),
        "stats": Target("ticker stats", stats, ss.topic(ss.topics.ticker), (ss.topic(ss.topics.ticker_stats),)),
        RUNTIME: Target("runtime's identity", identity, ident_in, (ident_out,)),
        REFERENCE: Target("identity", publishing, pub_in, (pub_out,)),
    }


# --- measurement ------------------------------------------------------------------------------------------------------
@dataclass
class Measured:
    """Every run of one (function, input kind): rates and instance CPU per message, per round."""

    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_us) if self.cpu_us else None


def measure(endpoint: Endpoint, batch: Batch, cpu: InstanceCpu, into: Measured) -> float:
    name = endpoint.target.spec.name
    before = cpu(name)
    rate = len(batch) / endpoint.run(batch)
    after = cpu(name)
    into.rates.append(rate)
    if before is not None and after is not None:
        into.cpu_us.append((after - before) / len(batch) * 1e6)
    return rate


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m rtca.bench.functions_e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the benchmark's functions and topics in place")
    parser.add_argument("--out", type=Path, default=None, help="directory of the JSON result (<run dir>/bench)")
    args = parser.parse_args(argv)
    settings = load_settings()
    say: Callable[[str], None] = print
    tag = uuid.uuid4().hex[:6]
    bench = targets(settings, tag)
    inputs = {"raw": raw_frames(args.messages), "ticker": typed_tickers(args.messages)}
    measured = {(who, kind): Measured() for name, kind in PAIRS for who in (*BASELINES, name)}
    rounds: list[dict[str, Any]] = []
    cpu = InstanceCpu()
    started_at, load_before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), load_average()
    say(f"functions end to end: {args.messages:,} messages a run, {args.rounds} rounds; load average "
        f"{'/'.join(f'{x:.2f}' for x in load_before)} (1/5/15 min, {os.cpu_count()} CPUs)")  # fmt: skip
    client = pulsar_client(settings)
    endpoints: dict[str, Endpoint] = {}
    try:
        deploy(settings, [t.spec for t in bench.values()], say=say)
        for name, target in bench.items():
            endpoints[name] = Endpoint.open(client, target, tag)
        for name, kind in PAIRS:  # warm-up: instances loaded and their producers made, connections up
            for who in (*BASELINES, name):
                endpoints[who].run(inputs[kind][:500])
        for round_no in range(1, args.rounds + 1):
            load_start, rates = load_average(), {}
            for name, kind in PAIRS:
                order = (*BASELINES, name) if round_no % 2 else (name, *reversed(BASELINES))  # ABBA
                for who in order:
                    rates[(who, kind)] = measure(endpoints[who], inputs[kind], cpu, measured[(who, kind)])
            ratios = {f"{name}_to_{who}": rates[(name, kind)] / rates[(who, kind)]
                      for name, kind in PAIRS for who in BASELINES}  # fmt: skip
            rounds.append({"round": round_no, "load_start": load_start, "load_end": load_average(),
                           "rates": {f"{who}_{kind}": rate for (who, kind), rate in rates.items()},
                           "ratios": ratios})  # fmt: skip
            say(f"  round {round_no} (load {load_start[0]:.2f}): " + "; ".join(
                f"{name} {rates[(name, kind)]:,.0f} / identity {rates[(REFERENCE, kind)]:,.0f} msg/s = "
                f"{ratios[f'{name}_to_{REFERENCE}']:.0%}" for name, kind in PAIRS))  # fmt: skip
    finally:
        for endpoint in endpoints.values():
            endpoint.close()
        client.close()  # after its producers and consumers; nothing of Python stays registered in the client
        if not args.keep:
            delete_functions(settings, [t.spec.name for t in bench.values()], known_only=False)
            delete_topics_with_prefix(settings, f"bench-{tag}-")
    load_after = load_average()
    figures = summarise(measured, rounds)
    report(figures, measured, args.messages, args.rounds, say)
    stale = {name: e.stale for name, e in endpoints.items() if e.stale}
    if stale:
        say(f"  stale outputs drained before runs (duplicates or late outputs): {stale}")
    say(f"  load average: before {'/'.join(f'{x:.2f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.2f}' for x in load_after)} (1/5/15 min; {os.cpu_count()} CPUs)")  # fmt: skip
    result = {
        "schema": "rtca-bench/1", "bench": "functions_e2e", "started": started_at,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tag": tag,
        "parameters": {"messages": args.messages, "rounds": args.rounds, "goal": GOAL, "reference": REFERENCE,
                       "baselines": list(BASELINES)},
        "machine": {"nproc": os.cpu_count(), "load_before": load_before, "load_after": load_after},
        "figures": figures, "rounds": rounds, "stale_outputs": stale,
        "runs": {f"{who}_{kind}": {"rates": m.rates, "cpu_us": m.cpu_us} for (who, kind), m in measured.items()},
    }  # fmt: skip
    out_dir = args.out or settings.run_dir / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"functions_e2e-{started_at.replace(':', '').replace('-', '')}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    say(f"  written {path}")
    return figures


def summarise(measured: dict[tuple[str, str], Measured], rounds: list[dict[str, Any]]) -> dict[str, float]:
    """The figures: per function, the median (min, max) of its round ratios to the reference, the median of those
    to the runtime's identity, median and best rates, and instance CPU per message."""
    figures: dict[str, float] = {}
    for name, kind in PAIRS:
        for who in BASELINES:
            per_round = [r["ratios"][f"{name}_to_{who}"] for r in rounds]
            prefix = f"{name}_ratio" if who == REFERENCE else f"{name}_{who}_ratio"
            figures[prefix] = statistics.median(per_round)
            figures[f"{prefix}_min"], figures[f"{prefix}_max"] = min(per_round), max(per_round)
        for who in (*BASELINES, name):
            runs = measured[(who, kind)]
            key = name if who == name else f"{who}_{kind}"
            figures[f"{key}_{kind}_median" if who == name else f"{key}_median"] = runs.median
            figures[f"{key}_{kind}" if who == name else key] = runs.best
            if runs.cpu_median is not None:
                figures[f"{key}_cpu_us"] = runs.cpu_median
        cpu_ratio = _ratio(figures.get(f"{REFERENCE}_{kind}_cpu_us"), figures.get(f"{name}_cpu_us"))
        if cpu_ratio is not None:
            figures[f"{name}_cpu_ratio"] = cpu_ratio
    return figures


def report(figures: dict[str, float], measured: dict[tuple[str, str], Measured], messages: int, rounds: int,
           say: Callable[[str], None]) -> None:  # fmt: skip
    say(f"end to end, {messages:,} messages a run, {rounds} rounds; ratio = median over the rounds of function / "
        f"identity (min-max); identity = ours (MANUAL, our Publisher, no processing); rates: median (best):")
    for name, kind in PAIRS:
        ours, ref, ratio = measured[(name, kind)], measured[(REFERENCE, kind)], figures[f"{name}_ratio"]
        say(f"  {name:<6} {ratio:5.0%} of identity ({figures[f'{name}_ratio_min']:.0%}-"
            f"{figures[f'{name}_ratio_max']:.0%}), goal >= {GOAL:.0%}: {'OK' if ratio >= GOAL else 'MISSED'};  "
            f"{ours.median:,.0f} ({ours.best:,.0f}) vs identity on {kind} {ref.median:,.0f} ({ref.best:,.0f}) msg/s;"
            f"  {figures[f'{name}_{RUNTIME}_ratio']:.0%} of the runtime's identity "
            f"({figures[f'{RUNTIME}_{kind}_median']:,.0f} msg/s)")  # fmt: skip
    if any(f"{name}_cpu_us" in figures for name, _ in PAIRS):
        say("  instance CPU per message (median; load-robust):")
        for name, kind in PAIRS:
            if f"{name}_cpu_us" not in figures or f"{REFERENCE}_{kind}_cpu_us" not in figures:
                continue
            ours_us, ref_us = figures[f"{name}_cpu_us"], figures[f"{REFERENCE}_{kind}_cpu_us"]
            line = (f"    {name:<6} {ours_us:6.1f} us vs identity {ref_us:6.1f} us: our processing "
                    f"{ours_us - ref_us:+.1f} us")
            if f"{RUNTIME}_{kind}_cpu_us" in figures:
                line += f"; the runtime's identity {figures[f'{RUNTIME}_{kind}_cpu_us']:6.1f} us"
            say(line)


if __name__ == "__main__":
    main()

"""Benchmark: end-to-end rate of the deployed router and ticker statistics against an identity function.

    python -m rtca.bench.functions_e2e [--messages 20000] [--rounds 2]

Needs the stack (`rtca up`). Deploys, on topics of their own, the router, the statistics function and an identity
function (same runtime, same input serde; it returns its input), all through `rtca.functions.deploy`. Each run
produces N messages as fast as the client can and times from the first send to the last output received; the
identity function gets the same input as the function it is compared with (raw capture frames for the router,
typed tickers for the statistics). Each round runs identity and function back to back, so both see the same load
on a shared machine; the figure is the median over rounds of each round's ratio (best rates printed too).
Goal: each function >= 90% of the identity's rate (our code is not the bottleneck of the Functions runtime).

On a busy machine wall-clock rates swing by tens of percent from one run to the next, so it also prints the CPU
time the function's instance process spent per message (local stack only, read with psutil): a load-robust view
of what one message costs the instance, ours against the identity's.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import random
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
import psutil
import pulsar

from rtca.feed.capture import SHIPPED_CAPTURE, read_capture
from rtca.functions import routing
from rtca.functions.deploy import (
    ROUTER,
    TICKER_STATS,
    FunctionSpec,
    delete_functions,
    deploy,
    function_specs,
    identity_spec,
)
from rtca.settings import Settings, Topics, load_settings

Batch = list[tuple[bytes, dict[str, str], str | None]]


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


def instance_cpu(name: str) -> float | None:
    """CPU seconds used so far by the instance process(es) of function `name` on this machine, if any."""
    total, found = 0.0, False
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "--logging_file" in cmdline and cmdline[cmdline.index("--logging_file") + 1 :][:1] == [name]:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
            found = True
    return total if found else None


def run_once(client: pulsar.Client, target: Target, batch: Batch, timeout: float = 300.0) -> float:
    """Messages per second from the first send to the last output received."""
    consumer = client.subscribe(list(target.output_topics), f"bench-{uuid.uuid4().hex[:8]}",
                                initial_position=pulsar.InitialPosition.Latest,
                                receiver_queue_size=5000)  # fmt: skip
    producer = client.create_producer(target.input_topic, batching_enabled=True, batching_max_publish_delay_ms=5,
                                      block_if_queue_full=True, max_pending_messages=10000)  # fmt: skip
    try:
        started = time.perf_counter()
        for data, props, key in batch:
            if key:
                producer.send_async(data, None, properties=props, partition_key=key)
            else:
                producer.send_async(data, None, properties=props)
        producer.flush()
        received, deadline = 0, time.monotonic() + timeout
        while received < len(batch):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target.label}: {received}/{len(batch)} outputs after {timeout:.0f} s")
            try:
                consumer.receive(1000)
            except pulsar.Timeout:
                continue
            received += 1
        return len(batch) / (time.perf_counter() - started)
    finally:
        producer.close()
        consumer.unsubscribe()


def isolated(settings: Settings, tag: str) -> Settings:
    topics = Topics(**{key: f"bench-{tag}-{name}" for key, name in settings.topics.model_dump().items()})
    return settings.model_copy(update={"topics": topics})


def targets(settings: Settings, tag: str) -> dict[str, Target]:
    s = isolated(settings, tag)
    t = s.topics
    specs = {spec.name: spec for spec in function_specs(s, name_prefix=f"bench-{tag}-")}
    router, stats = specs[f"bench-{tag}-{ROUTER}"], specs[f"bench-{tag}-{TICKER_STATS}"]
    routed = tuple(s.topic(getattr(t, c)) for c in (*routing.CHANNELS, routing.DEAD_LETTER))
    ident_in, ident_out = s.topic(f"bench-{tag}-identity-in"), s.topic(f"bench-{tag}-identity-out")
    identity = identity_spec(f"bench-{tag}-identity", ident_in, ident_out)
    return {
        "router": Target("router", router, s.topic(t.raw), routed),
        "stats": Target("ticker stats", stats, s.topic(t.ticker), (s.topic(t.ticker_stats),)),
        "identity": Target("identity", identity, ident_in, (ident_out,)),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m rtca.bench.functions_e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the benchmark's functions deployed")
    args = parser.parse_args(argv)
    settings = load_settings()
    tag = uuid.uuid4().hex[:6]
    bench = targets(settings, tag)
    quiet = logging.getLogger("pulsar-client")
    quiet.setLevel(logging.WARNING)
    client = pulsar.Client(settings.pulsar.service_url, logger=quiet)
    inputs = {"raw": raw_frames(args.messages), "ticker": typed_tickers(args.messages)}
    plan: list[tuple[str, str, Target]] = [("identity", "raw", bench["identity"]), ("router", "raw", bench["router"]),
                                           ("identity", "ticker", bench["identity"]),
                                           ("stats", "ticker", bench["stats"])]  # fmt: skip
    best: dict[tuple[str, str], float] = {}
    ratios: dict[str, list[float]] = {"router": [], "stats": []}
    cpu: dict[tuple[str, str], list[float]] = {}
    say: Callable[[str], None] = print
    try:
        deploy(settings, [t.spec for t in bench.values()], say=say)
        for name, kind, target in plan:  # warm-up: instances loaded, producers and subscriptions made
            run_once(client, target, inputs[kind][:200])
        for round_no in range(1, args.rounds + 1):
            rates = {}
            for name, kind, target in plan:
                before = instance_cpu(target.spec.name)
                rate = rates[(name, kind)] = run_once(client, target, inputs[kind])
                after = instance_cpu(target.spec.name)
                if before is not None and after is not None:
                    cpu.setdefault((name, kind), []).append((after - before) / len(inputs[kind]) * 1e6)
                best[(name, kind)] = max(best.get((name, kind), 0.0), rate)
            ratios["router"].append(rates[("router", "raw")] / rates[("identity", "raw")])
            ratios["stats"].append(rates[("stats", "ticker")] / rates[("identity", "ticker")])
            say(f"  round {round_no}: " + ", ".join(f"{name} on {kind} {rate:,.0f}" for (name, kind), rate in
                                                  rates.items()) + " msg/s")  # fmt: skip
    finally:
        client.close()
        if not args.keep:
            delete_functions(settings, [t.spec.name for t in bench.values()], known_only=False)
    router_ratio, stats_ratio = statistics.median(ratios["router"]), statistics.median(ratios["stats"])
    print(f"end to end, {args.messages} messages a run, {args.rounds} rounds (best rate; ratio = median of the rounds'):")
    print(f"  identity on raw frames     {best[('identity', 'raw')]:>9,.0f} msg/s")
    print(f"  router                     {best[('router', 'raw')]:>9,.0f} msg/s  = {router_ratio:.0%} of identity "
          f"(goal >= 90%): {'OK' if router_ratio >= 0.9 else 'MISSED'}")  # fmt: skip
    print(f"  identity on typed tickers  {best[('identity', 'ticker')]:>9,.0f} msg/s")
    print(f"  ticker stats               {best[('stats', 'ticker')]:>9,.0f} msg/s  = {stats_ratio:.0%} of identity "
          f"(goal >= 90%): {'OK' if stats_ratio >= 0.9 else 'MISSED'}")  # fmt: skip
    if cpu:
        us = {key: statistics.median(values) for key, values in cpu.items()}
        print("  instance CPU per message (median):")
        for (name, kind), value in us.items():
            share = f" = identity's / {value / us[('identity', kind)]:.2f}" if name != "identity" else ""
            print(f"    {name:<9} on {kind:<6} {value:7.1f} us{share}")
    return {"router_ratio": router_ratio, "stats_ratio": stats_ratio,
            **{f"{name}_{kind}": rate for (name, kind), rate in best.items()}}  # fmt: skip


if __name__ == "__main__":
    main()

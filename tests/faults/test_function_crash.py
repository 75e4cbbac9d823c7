"""A function instance killed mid-stream (SIGKILL of its Python process, as a crash would): the worker starts a new
one, which goes on where the dead one was acknowledged. Nothing the dead instance had published but not yet
acknowledged is stored twice (the router's records are deduplicated by the broker; the statistics function skips
what its output already holds), nothing is skipped, and the statistics equal pandas over the whole stream.

The router and the statistics function run here as instances of the test's own (same specs as `rtca functions
deploy`, with the test's topic and function names), so only this test's records are counted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import pulsar
import pytest
from faults_support import (
    function_instance,
    produce_raw,
    read_all,
    stats_mismatches,
    ticker_frames,
    wait_for,
)

from rtca.functions.deploy import ROUTER, TICKER_STATS, delete_functions, deploy, function_specs, function_status
from rtca.settings import Settings, Topics

pytestmark = [pytest.mark.stack, pytest.mark.slow]

PRODUCTS = {"BTC-USD": 43_000.0, "ETH-USD": 2_300.0, "SKL-BTC": 0.00001305, "DOGE-USD": 0.081}


@pytest.fixture(scope="module")
def functions(stack: Settings) -> Iterator[tuple[Settings, str, str]]:
    """The router and the statistics function on topics of their own: (settings with those topics, names)."""
    tag = uuid.uuid4().hex[:8]
    topics = Topics(**{key: f"crash-{tag}-{name}" for key, name in stack.topics.model_dump().items()})
    settings = stack.model_copy(update={"topics": topics})
    specs = [s for s in function_specs(settings, name_prefix=f"crash-{tag}-")
             if s.name.endswith((ROUTER, TICKER_STATS))]  # fmt: skip
    deploy(stack, specs, say=lambda _: None)
    router, stats = (next(s.name for s in specs if s.name.endswith(suffix)) for suffix in (ROUTER, TICKER_STATS))
    yield settings, router, stats
    delete_functions(stack, [router, stats], known_only=False)


def kill(function_name: str) -> int:
    proc = function_instance(function_name)
    assert proc is not None, f"no running instance of {function_name}"
    proc.kill()
    proc.wait(10)
    return proc.pid


def test_killed_router_and_statistics_instances_resume_without_loss_or_duplicates(
        stack: Settings, functions: tuple[Settings, str, str]) -> None:  # fmt: skip
    settings, router, stats = functions
    stream = ticker_frames({f"C{p}": price for p, price in PRODUCTS.items()}, 8000, seed=4)
    client = pulsar.Client(stack.pulsar.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    try:
        raw, ticker = settings.topic(settings.topics.raw), settings.topic(settings.topics.ticker)
        out, dead = settings.topic(settings.topics.ticker_stats), settings.topic(settings.topics.dead_letter)
        producing = threading.Thread(target=produce_raw, args=(client, raw, [f for *_, f in stream]),
                                     kwargs={"per_second": 1000})  # fmt: skip
        producing.start()
        time.sleep(2.0)
        killed = {router: kill(router)}
        time.sleep(2.0)
        killed[stats] = kill(stats)
        mid_stream = producing.is_alive()
        producing.join()
        for name, pid in killed.items():
            wait_for(lambda name=name, pid=pid: (p := function_instance(name)) is not None and p.pid != pid,
                     timeout=120, what=f"a new instance of {name}")
        wait_for(lambda: len(read_all(client, out, idle=0.5)) >= len(stream), timeout=180, interval=2.0,
                 what=f"{len(stream)} statistics records")
        time.sleep(3.0)  # a duplicate would arrive within this
        typed = [orjson.loads(m.data()) for m in read_all(client, ticker)]
        records = [orjson.loads(m.data()) for m in read_all(client, out)]
        letters = read_all(client, dead, idle=1.0)
    finally:
        client.close()
    statuses = function_status(stack, [router, stats], known_only=False)
    sequences = [t["sequence"] for t in typed]
    print(f"\nsent {len(stream)} raw tickers at 1000/s; killed the instances of {router} and {stats} mid-stream")
    print(f"ticker topic (router output): {len(typed)} records, {len(set(sequences))} distinct; statistics topic: "
          f"{len(records)} records, {len({r['sequence'] for r in records})} distinct; dead letters {len(letters)}")
    for status in statuses:
        print(f"since the new instance started: {status.name} received {status.received}, processed "
              f"{status.processed}, failed {status.failed}, running {status.running}")
    assert mid_stream, "the input was all produced before the kills"
    assert sorted(sequences) == list(range(1, len(stream) + 1)), "router output: a ticker missing or twice"
    assert len(letters) == 0
    problems = stats_mismatches(records, stream)
    assert problems == [], problems[:5]
    assert all(s.running == 1 for s in statuses), statuses

"""Stack-side helpers the pipeline benchmarks share: an isolated scope, the simulator process, tapped ingest, backlog.

- `BenchScope`: the workbench's settings with topics and tables of the benchmark's own (`bench-<tag>-...`,
  `bench_<tag>_...`), and a clean-up of everything created in it (functions, Pinot tables, Superset datasets,
  topics) when it closes, so benchmarks run beside the real pipeline on a shared stack without touching it.
- `SimulatorProcess`: the project's simulator (`rtca.feed.simulator.serve_simulator`) in a process of its own, so
  generating frames does not compete with ingest for the benchmark process's interpreter.
- `tapped_ingest`: the project's ingest (`rtca.feed.ingest.ingest`) into the scope's raw topic, with every raw
  record shown to a callback as it is published (the benchmarks count what they expect downstream).
- `saturate`: the end-to-end rate of a deployed function: produce a batch as fast as possible, time until the
  last output arrives (the identity function's rate is the Functions runtime's own limit).
- `backlog`: messages not yet delivered to a topic's subscriptions (Pulsar's admin API).

    python -m rtca.bench.pipeline serve-simulator --rate 1000 --products B00-USD,B01-USD --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import psutil
import pulsar

from rtca.errors import RtcaError
from rtca.feed.connection import FeedConnection, Frame
from rtca.feed.ingest import IngestReport, ingest, raw_record
from rtca.feed.protocol import dumps as frame_dumps
from rtca.feed.protocol import subscribe_frame
from rtca.feed.simulator import SimulatedMarket
from rtca.feed.sinks import Done, Record, Sink, pulsar_client, pulsar_sinks
from rtca.settings import Settings, Tables, Topics
from rtca.stack.pulsar import delete_topics
from rtca.stack.remote import http_options, pulsar_topic_path

log = logging.getLogger(__name__)

Say = Callable[[str], None]
Payload = tuple[bytes, dict[str, str], str | None]
"""A raw-topic message as ingest publishes it: value, properties, partition key."""

#: The channels the simulator benchmarks subscribe to (what the issue calls "ticker + matches + level2").
SIM_CHANNELS = ("ticker", "matches", "level2", "heartbeat")


def product_names(count: int) -> list[str]:
    """`count` simulator products, e.g. B00-USD, B01-USD (distinct from any real product)."""
    return [f"B{k:02d}-USD" for k in range(count)]


class BenchError(RtcaError):
    pass


# --- an isolated scope on the shared stack ---------------------------------------------------------------------------
class BenchScope:
    """Topics `bench-<tag>-<name>` and tables `bench_<tag>_<name>`; deletes what it created on `close()`."""

    def __init__(self, settings: Settings, *, keep: bool = False, say: Say = print) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.base = settings
        self.keep = keep
        self.say = say
        topics = Topics(**{k: f"bench-{self.tag}-{v}" for k, v in settings.topics.model_dump().items()})
        tables = Tables(**{k: f"bench_{self.tag}_{v}" for k, v in settings.tables.model_dump().items()})
        self.settings = settings.model_copy(update={"topics": topics, "tables": tables})
        self.functions: list[str] = []
        self.tables: list[str] = []
        self.datasets: list[int] = []
        self._closed = False

    @property
    def topic_prefix(self) -> str:
        return f"bench-{self.tag}-"

    def topic(self, name: str) -> str:
        """Full name of a topic of this scope (a `Topics` key, or any short name)."""
        short = getattr(self.settings.topics, name, None) or f"{self.topic_prefix}{name}"
        return self.settings.topic(short)

    def table_name(self, name: str) -> str:
        return getattr(self.settings.tables, name, None) or f"bench_{self.tag}_{name}"

    # --- creating ----------------------------------------------------------------------------------------------------
    def deploy(self, specs: Sequence[Any]) -> None:
        from rtca.functions.deploy import deploy

        self.functions += [spec.name for spec in specs]
        deploy(self.base, list(specs), say=lambda text: log.info(text))

    def put_table(self, schema: dict[str, Any], table: dict[str, Any]) -> None:
        from rtca.pinot.client import PinotClient

        self.tables.append(str(table["tableName"]))
        with PinotClient(self.base) as pinot:
            pinot.put_schema(schema)
            pinot.put_table(table)

    # --- clean-up ----------------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.keep:
            self.say(f"  kept the benchmark's scope: tag {self.tag} (topics {self.topic_prefix}*, tables "
                     f"bench_{self.tag}_*)")  # fmt: skip
            return
        for what, step in (("functions", self._delete_functions), ("Superset datasets", self._delete_datasets),
                           ("Pinot tables", self._delete_tables), ("topics", self._delete_topics)):
            try:
                step()
            except Exception as exc:  # clean-up must go on; say what is left behind
                self.say(f"  warning: could not delete the benchmark's {what} ({self.tag}): {exc}")

    def _delete_functions(self) -> None:
        from rtca.functions.deploy import delete_functions

        if self.functions:
            delete_functions(self.base, self.functions, known_only=False)

    def _delete_datasets(self) -> None:
        if not self.datasets:
            return
        from rtca.superset.client import SupersetClient

        with SupersetClient.from_settings(self.base) as client:
            for dataset_id in self.datasets:
                client._http.delete(f"/api/v1/dataset/{dataset_id}")

    def _delete_tables(self) -> None:
        from rtca.pinot.client import PinotClient

        with PinotClient(self.base) as pinot:
            for name in dict.fromkeys(self.tables):
                pinot.delete_table(name)

    def _delete_topics(self) -> None:
        delete_topics_with_prefix(self.base, self.topic_prefix)

    def __enter__(self) -> BenchScope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- Pulsar admin ----------------------------------------------------------------------------------------------------
def _admin(settings: Settings) -> httpx.Client:
    return httpx.Client(base_url=settings.pulsar.admin_url, timeout=30, **http_options(settings, "pulsar"))


def delete_topics_with_prefix(settings: Settings, prefix: str, timeout: float = 60.0) -> None:
    """Delete every topic of the namespace whose short name starts with `prefix` (retried, see `delete_topics`)."""
    left = delete_topics(settings, lambda topic: topic.rsplit("/", 1)[-1].startswith(prefix), timeout=timeout)
    if left:
        raise BenchError(f"topics left: {', '.join(left)}")


def topic_stats(settings: Settings, topic: str) -> dict[str, Any]:
    with _admin(settings) as admin:
        response = admin.get(pulsar_topic_path(topic) + "/stats")
        return dict(response.json()) if response.is_success else {}


def backlog(settings: Settings, topic: str, subscription_prefix: str = "") -> int:
    """Messages of `topic` not yet delivered to its (matching) subscriptions, summed."""
    subscriptions = topic_stats(settings, topic).get("subscriptions") or {}
    return sum(int(s.get("msgBacklog") or 0) for name, s in subscriptions.items()
               if name.startswith(subscription_prefix))  # fmt: skip


@dataclass
class BacklogSampler:
    """Samples (seconds since start, backlog) of some topics every `interval` seconds in a thread."""

    settings: Settings
    topics: dict[str, str]
    """label -> full topic name."""
    interval: float = 2.0
    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> BacklogSampler:
        started = time.monotonic()

        def run() -> None:
            while not self._stop.is_set():
                for label, topic in self.topics.items():
                    try:
                        value = backlog(self.settings, topic)
                    except httpx.HTTPError:
                        continue
                    self.samples.setdefault(label, []).append((time.monotonic() - started, value))
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, name="bench-backlog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, list[tuple[float, int]]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self.samples


# --- where the cores go ----------------------------------------------------------------------------------------------
SELF_PART = "bench process (ingest, pollers)"
CHILDREN_PART = "simulator (ended child processes)"


def cpu_seconds_by_part(settings: Settings) -> dict[str, float]:
    """CPU seconds used so far by each part of a pipeline run on this machine: each local stack service's process
    tree, with function instances apart by function name; this process, where ingest and the pollers run; and its
    child processes that have ended and been waited for (the simulator, once its run is over). Two readings around a
    run tell which parts took the cores (`cores_between`); a service not on this machine is left out."""
    from rtca.stack.local import AUXILIARY_NAMES, SERVICE_NAMES
    from rtca.stack.process import Supervisor, function_instance

    supervisor = Supervisor(settings)
    parts: dict[str, float] = {}
    for name in (*SERVICE_NAMES, *AUXILIARY_NAMES):
        for member in supervisor.process_tree(name):
            function = function_instance(member)
            try:
                times = member.cpu_times()
            except psutil.Error:
                continue
            part = name if function is None else f"function {function}"
            used = times.user + times.system + times.children_user + times.children_system  # + its reaped children
            parts[part] = parts.get(part, 0.0) + used
    own = os.times()
    parts[SELF_PART] = own.user + own.system
    parts[CHILDREN_PART] = own.children_user + own.children_system
    return parts


def cores_between(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores each part used between two `cpu_seconds_by_part` readings `seconds` apart, busiest first: a part that
    came in between, or used less than before (restarted: new processes), counts from zero; one that went is left
    out."""
    if seconds <= 0:
        return {}
    cores = {part: (used - before.get(part, 0.0) if used >= before.get(part, 0.0) else used) / seconds
             for part, used in after.items()}  # fmt: skip
    return {part: round(c, 3) for part, c in sorted(cores.items(), key=lambda kv: -kv[1]) if c >= 0.0005}


# --- the simulator in a process of its own ---------------------------------------------------------------------------
class SimulatorProcess:
    """`with SimulatorProcess(rate, products) as sim: sim.url` (rate None = as fast as the reader takes frames)."""

    def __init__(self, *, rate: float | None, products: Sequence[str], seed: int = 1) -> None:
        self.rate, self.products, self.seed = rate, list(products), seed
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SimulatorProcess:
        argv = [sys.executable, "-m", "rtca.bench.pipeline", "serve-simulator", "--rate",
                "max" if self.rate is None else str(self.rate), "--seed", str(self.seed),
                "--products", ",".join(self.products)]  # fmt: skip
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("ws://"):
            self.__exit__()
            raise BenchError(f"the simulator process did not start (said {line!r})")
        self.url = line
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


# --- ingest with a tap ---------------------------------------------------------------------------------------------
class TapSink:
    """A sink that shows each record to `on_record` before handing it to the real sink."""

    def __init__(self, inner: Sink, on_record: Callable[[Record], None]) -> None:
        self.inner, self.on_record = inner, on_record

    def send(self, record: Record, done: Done) -> None:
        self.on_record(record)
        self.inner.send(record, done)

    async def flush(self) -> None:
        await self.inner.flush()


async def tapped_ingest(settings: Settings, url: str, *, products: Sequence[str], raw_topic: str, health_topic: str,
                        on_record: Callable[[Record], None], channels: Sequence[str] = SIM_CHANNELS,
                        duration: float | None = None, max_messages: int | None = None,
                        stop: asyncio.Event | None = None) -> IngestReport:  # fmt: skip
    """The project's ingest from a websocket source into `raw_topic`, each raw record shown to `on_record`."""
    async with pulsar_sinks(settings, raw_topic, health_topic) as (raw, health):
        connection = FeedConnection(url, subscribe_frame(products, channels), silence_timeout=30)
        return await ingest(connection, TapSink(raw, on_record), health, source="simulator", duration=duration,
                            max_messages=max_messages, stop=stop)  # fmt: skip


def run_tapped_ingest(settings: Settings, url: str, **kwargs: Any) -> IngestReport:
    return asyncio.run(tapped_ingest(settings, url, **kwargs))


# --- payloads and saturation -----------------------------------------------------------------------------------------
def simulator_payloads(count: int, products: Sequence[str], *, seed: int = 1) -> list[Payload]:
    """`count` raw-topic messages of a simulated market, exactly as ingest would publish them (times = now)."""
    market = SimulatedMarket(products, seed=seed, start_us=int(time.time() * 1e6))
    out: list[Payload] = []
    while len(out) < count:
        now = time.time()
        for frame in market.step(int(now * 1e6)):
            record, _ = raw_record(Frame(frame_dumps(frame).encode(), now, 1))
            out.append((record.value, record.properties, record.key))
    return out[:count]


@contextmanager
def quiet_client(settings: Settings) -> Iterator[pulsar.Client]:
    """The project's Pulsar client (warnings and up only), closed on exit."""
    client = pulsar_client(settings)
    try:
        yield client
    finally:
        client.close()


def send_each(producer: pulsar.Producer, payloads: Iterable[Payload],
              callback: Callable[[pulsar.Result, Any], None] | None = None) -> int:  # fmt: skip
    """`send_async` every (data, properties, key) payload, the key only where there is one; returns how many."""
    sent = 0
    for data, props, key in payloads:
        if key:
            producer.send_async(data, callback, properties=props, partition_key=key)
        else:
            producer.send_async(data, callback, properties=props)
        sent += 1
    return sent


def produce_all(client: pulsar.Client, topic: str, payloads: Iterable[Payload], *, acks: bool = True,
                timeout: float = 600.0) -> float:  # fmt: skip
    """Send every payload as fast as the client takes them (batching as ingest does); seconds until all are stored.

    `acks=True` counts each acknowledgement in a callback, as ingest does (the Python callback per message is a
    large part of the cost); `acks=False` sends without callbacks and waits for the producer's flush (bulk loads).
    `payloads` may be a generator (bulk loads need not hold every message in memory).
    """
    producer = client.create_producer(topic, batching_enabled=True, batching_max_publish_delay_ms=5,
                                      max_pending_messages=20_000, block_if_queue_full=True)  # fmt: skip
    acked = 0
    failed: list[str] = []
    settled = threading.Condition()

    def callback(result: pulsar.Result, _message_id: object) -> None:
        nonlocal acked
        with settled:
            acked += 1
            if result != pulsar.Result.Ok:
                failed.append(str(result))
            settled.notify_all()

    try:
        started = time.perf_counter()
        sent = send_each(producer, payloads, callback if acks else None)
        producer.flush()
        if acks:
            with settled:
                if not settled.wait_for(lambda: acked >= sent, timeout):
                    raise BenchError(f"{acked}/{sent} messages acknowledged after {timeout:.0f} s")
        seconds = time.perf_counter() - started
    finally:
        producer.close()
    if failed:
        raise BenchError(f"{len(failed)} sends failed, e.g. {failed[0]}")
    return seconds


def saturate(client: pulsar.Client, input_topic: str, output_topics: Sequence[str], payloads: Sequence[Payload], *,
             timeout: float = 600.0) -> float:  # fmt: skip
    """Messages per second from the first send into a deployed function to its last output received."""
    consumer = client.subscribe(list(output_topics), f"bench-{uuid.uuid4().hex[:8]}",
                                initial_position=pulsar.InitialPosition.Latest, receiver_queue_size=5000)  # fmt: skip
    try:
        started = time.perf_counter()
        sender = threading.Thread(target=produce_all, args=(client, input_topic, payloads), daemon=True)
        sender.start()
        received, deadline = 0, time.monotonic() + timeout
        while received < len(payloads):
            if time.monotonic() > deadline:
                raise BenchError(f"{received}/{len(payloads)} outputs after {timeout:.0f} s")
            try:
                consumer.receive(1000)
            except pulsar.Timeout:
                continue
            received += 1
        seconds = time.perf_counter() - started
        sender.join(timeout=60)
        return len(payloads) / seconds
    finally:
        # close, never unsubscribe: pulsar-client 3.13's multi-topic unsubscribe can use freed memory
        # (rtca.bench.functions_e2e's docstring); the benchmark deletes its topics with their subscriptions.
        consumer.close()


def encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


# --- entry point: the simulator process ------------------------------------------------------------------------------
def _serve(argv: Sequence[str]) -> None:
    from rtca.feed.simulator import serve_simulator

    parser = argparse.ArgumentParser(prog="python -m rtca.bench.pipeline serve-simulator")
    parser.add_argument("--rate", default="1000")
    parser.add_argument("--products", default=",".join(product_names(20)))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    def announce(url: str) -> None:
        print(url, flush=True)

    serve_simulator(products=[p for p in args.products.split(",") if p], seed=args.seed,
                    rate=None if args.rate == "max" else float(args.rate), announce=announce)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve-simulator"]:
        _serve(sys.argv[2:])
    else:
        sys.exit("usage: python -m rtca.bench.pipeline serve-simulator [--rate R] [--products A,B] [--seed N]")

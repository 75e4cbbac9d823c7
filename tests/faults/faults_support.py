"""What the fault tests share: a feed server in a thread that records what it sent, the ingest as a supervised
process of the test's own, Pinot and Pulsar read-back helpers, and the stack's own restarts of its services.

Every test counts only its own products (unique names) or its own topics, so the replay or the other tests running
in the same stack cannot disturb the counts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import psutil
import pulsar

from rtca import stack as rtca_stack
from rtca.errors import DeployError
from rtca.feed.server import Faults, FeedServer, Outgoing
from rtca.feed.simulator import SimulatorSource
from rtca.pinot.client import PinotClient
from rtca.settings import Settings
from rtca.stack.process import Launch, Service, Supervisor
from references import random_walks
from waiting import wait_for

__all__ = ["wait_for"]  # re-exported: the fault tests import their helpers from here


def eventually(predicate: Callable[[], bool], *, timeout: float, interval: float = 1.0) -> bool:
    """Whether `predicate` came true within `timeout` seconds (checked every `interval` s): `wait_for` that lets
    the test print its counts before it asserts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()



# --- the source: a simulator served from a thread of the test, recording what it sent ---------------------------
@dataclass
class Sent:
    """What the server sent: frames per type, and the keys of tickers (product, sequence) and matches (product,
    trade id)."""

    by_type: Counter[str] = field(default_factory=Counter)
    tickers: list[tuple[str, int]] = field(default_factory=list)
    matches: list[tuple[str, int]] = field(default_factory=list)
    #: The tickers as (product, price, sequence, frame), the shape `stats_mismatches` compares with.
    ticker_stream: list[tuple[str, float, int, bytes]] = field(default_factory=list)

    def record(self, frame: Outgoing) -> None:
        self.by_type[frame.type or "other"] += 1
        if frame.type == "ticker":
            body = orjson.loads(frame.text)
            self.tickers.append((body["product_id"], int(body["sequence"])))
            self.ticker_stream.append((body["product_id"], float(body["price"]), int(body["sequence"]), b""))
        elif frame.type in ("match", "last_match"):
            body = orjson.loads(frame.text)
            self.matches.append((body["product_id"], int(body["trade_id"])))


class RecordingSimulator(SimulatorSource):
    """The seeded simulator; records every frame it hands to the server and ends its stream once `stop()`."""

    def __init__(self, products: Sequence[str], *, rate: float | None, seed: int, limit: int | None = None) -> None:
        super().__init__(products, rate=rate, seed=seed, limit=limit)
        self.sent = Sent()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    async def next(self) -> Outgoing | None:
        if self._stop.is_set():
            return None
        frame = await super().next()
        if frame is not None:
            self.sent.record(frame)
        return frame

    def state(self, channel: str, product: str | None) -> list[Outgoing]:
        frames = super().state(channel, product)
        for frame in frames:
            self.sent.record(frame)
        return frames


class ServerThread:
    """A `FeedServer` running on its own event loop in a daemon thread (ingest runs in another process)."""

    def __init__(self, source: Any, *, faults: Faults | None = None) -> None:
        self.source = source
        self.faults = faults
        self.server: FeedServer | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-feed-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            async with FeedServer(self.source, faults=self.faults) as server:
                self.server = server
                self._ready.set()
                await server.finished.wait()
                await asyncio.sleep(1.0)  # let the END_OF_STREAM close reach the client

        self._loop.run_until_complete(main())

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the feed server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive() and self.server is not None:
            self._loop.call_soon_threadsafe(self.server.finished.set)
        self._thread.join(30)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def finished(self) -> bool:
        return self.server is not None and self.server.finished.is_set()


# --- the ingest, supervised like `rtca ingest start`, under a name of the test's own --------------------------------
@contextmanager
def supervised_ingest(settings: Settings, name: str, url: str, products: Collection[str], *,
                      env: Mapping[str, str] | None = None, channels: Sequence[str] = ()) -> Iterator[Supervisor]:
    """`rtca ingest run --source simulator --url URL --products ...` as a supervised process (pid file, log under
    the run directory) named `name`, so it never collides with the workbench's own `ingest`; stopped on exit."""
    argv = [*settings.rtca_command, "ingest", "run", "--source", "simulator", "--url", url,
            "--products", ",".join(products)]
    if channels:
        argv += ["--channels", ",".join(channels)]
    service = Service(name, lambda: Launch(argv=argv, env=dict(env or {})), url=url)
    supervisor = Supervisor(settings)
    supervisor.start_all([service], timeout=60, started=[])
    try:
        yield supervisor
    finally:
        supervisor.stop(name)


def ingest_exit(supervisor: Supervisor, name: str, *, timeout: float) -> None:
    """Wait for the ingest to end by itself (the source ended: it flushes, then exits)."""
    wait_for(lambda: supervisor.process(name) is None, timeout=timeout, what=f"{name} to flush and exit")


def ingest_report(settings: Settings, name: str) -> dict[str, Any]:
    """The JSON report the ingest printed last in its log."""
    for line in reversed(Supervisor(settings).log_file(name).read_text(errors="replace").splitlines()):
        if line.startswith("{") and '"received"' in line:
            return orjson.loads(line)  # type: ignore[no-any-return]
    raise AssertionError(f"no ingest report in the log of {name}")


# --- the stack's own restarts ---------------------------------------------------------------------------------------
def restart_pulsar(settings: Settings) -> float:
    """Stop Pulsar (broker, bookie, functions worker and their function instances), then `rtca up`: it starts what
    is missing, re-applies the namespace policies and restarts the functions the worker left stopped. Seconds."""
    started = time.monotonic()
    Supervisor(settings).stop("pulsar")
    rtca_stack.up(settings)
    return time.monotonic() - started


def restart_pinot_server(settings: Settings) -> tuple[float, list[str]]:
    """Stop and start the Pinot server; its outage in seconds and what the stop reported (a line if it had to be
    killed: Pinot stops its consuming tables one after another, each when its current fetch ends)."""
    from rtca.stack import pinot as pinot_stack

    started = time.monotonic()
    server = next(s for s in pinot_stack.services(settings) if s.name == "pinot-server")
    supervisor = Supervisor(settings)
    stop_report: list[str] = []
    supervisor.stop(server.name, report=stop_report.append)
    supervisor.start_all([server], timeout=settings.start_timeout, started=[])
    return time.monotonic() - started, [line for line in stop_report if "killed" in line and "within" in line]


# --- Pinot ---------------------------------------------------------------------------------------------------------
def quoted(products: Collection[str]) -> str:
    return ", ".join(f"'{p}'" for p in sorted(products))


def pinot_keys(pinot: PinotClient, table: str, key: str, products: Collection[str]) -> list[tuple[str, int]]:
    """(product, key column) of every row of `products` in `table`, duplicates included."""
    try:
        rows = pinot.query(f"SELECT product_id, {key} FROM {table} WHERE product_id IN ({quoted(products)}) "
                           f"LIMIT 1000000")
    except DeployError:  # a reloading server: the broker answers with an error for a moment
        return []
    return [(str(p), int(k)) for p, k in rows]


def wait_for_keys(pinot: PinotClient, table: str, key: str, expected: Collection[tuple[str, int]], *,
                  timeout: float, settle: float = 4.0) -> list[tuple[str, int]]:
    """Rows of `expected`'s products once they cover `expected`, then `settle` s more so a late duplicate shows."""
    products = {p for p, _ in expected}
    wanted = set(expected)
    deadline = time.monotonic() + timeout
    while True:
        rows = pinot_keys(pinot, table, key, products)
        if wanted <= set(rows) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    time.sleep(settle)
    return pinot_keys(pinot, table, key, products)


def exactly_once(label: str, sent: Sequence[tuple[str, int]], rows: Sequence[tuple[str, int]]) -> str:
    """A one-line account: sent, rows, distinct rows, missing, duplicated."""
    counts = Counter(rows)
    missing = set(sent) - set(rows)
    extra = set(rows) - set(sent)
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    return (f"{label}: sent {len(sent)} (distinct {len(set(sent))}), in Pinot COUNT(*) {len(rows)}, distinct "
            f"{len(counts)}, missing {len(missing)}, duplicated {duplicated}, unexpected {len(extra)}")


def in_order(got: Sequence[tuple[str, int]], sent: Sequence[tuple[str, int]]) -> int:
    """How many of `got` are where the source's per-product order puts them (the longest common prefix per
    product, summed): equal to len(got) when nothing was reordered, lost or repeated."""
    total = 0
    for product in {p for p, _ in sent}:
        mine = [k for p, k in got if p == product]
        theirs = [k for p, k in sent if p == product]
        total += next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
    return total


# --- Pulsar --------------------------------------------------------------------------------------------------------
def read_all(client: pulsar.Client, topic: str, *, idle: float = 3.0, timeout: float = 300.0
             ) -> list[pulsar.Message]:  # fmt: skip
    """Every message of `topic` from the earliest, until none arrives for `idle` seconds."""
    reader = client.create_reader(topic, pulsar.MessageId.earliest)
    out: list[pulsar.Message] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                out.append(reader.read_next(int(idle * 1000)))
            except pulsar.Timeout:
                break
    finally:
        reader.close()
    return out


def topic_size(client: pulsar.Client, topic: str) -> int:
    """How many messages `topic` holds now."""
    reader = client.create_reader(topic, pulsar.MessageId.earliest)
    n = 0
    try:
        while reader.has_message_available():
            reader.read_next(10_000)
            n += 1
    finally:
        reader.close()
    return n


# --- processes -----------------------------------------------------------------------------------------------------
def function_instance(function_name: str) -> psutil.Process | None:
    """The Python process running instance 0 of the Pulsar Function `function_name` (process runtime)."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(part.endswith("python_instance_main.py") for part in cmdline):
            try:
                details = orjson.loads(cmdline[cmdline.index("--function_details") + 1].strip("'"))
                instance = int(cmdline[cmdline.index("--instance_id") + 1])
            except (ValueError, IndexError, orjson.JSONDecodeError):
                continue
            if details.get("name") == function_name and instance == 0:
                return proc
    return None


def rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 1024**2


# --- raw frames as ingest publishes them, and the statistics' reference ------------------------------------------
def ticker_frames(products: Mapping[str, float], n: int, *, seed: int, start_ms: int = 1_700_000_000_000
                  ) -> list[tuple[str, float, int, bytes]]:  # fmt: skip
    """`n` raw ticker frames of seeded random walks, interleaved: (product, price, sequence, frame JSON)."""
    from rtca.feed.protocol import format_time_us
    from rtca.functions.samples import sample

    out = []
    for sequence, product, price in random_walks(products, n, seed=seed):
        frame = sample("ticker", product_id=product, price=repr(price), sequence=sequence,
                       trade_id=sequence, time=format_time_us((start_ms + 10 * sequence) * 1000))
        out.append((product, price, sequence, orjson.dumps(frame)))
    return out


def produce_raw(client: pulsar.Client, topic: str, frames: Sequence[bytes], *, per_second: float | None = None,
                received_ms: int = 1_700_000_000_000) -> int:  # fmt: skip
    """Frames onto a raw topic as ingest puts them (key = type, properties product / sequence / received_ms),
    paced at `per_second` when given; returns how many, once all are stored."""
    producer = client.create_producer(topic, batching_enabled=True, batching_max_publish_delay_ms=5,
                                      block_if_queue_full=True, send_timeout_millis=0)  # fmt: skip
    failures: list[Any] = []
    started = time.monotonic()
    for i, data in enumerate(frames):
        if per_second:
            delay = started + i / per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        properties = {"received_ms": str(received_ms + i)}
        key = "malformed"
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            key = body["type"] if isinstance(body.get("type"), str) else key
            if isinstance(body.get("product_id"), str):
                properties["product"] = body["product_id"]
            if isinstance(body.get("sequence"), int):
                properties["sequence"] = str(body["sequence"])
        producer.send_async(data, lambda res, _id: res == pulsar.Result.Ok or failures.append(res),
                            properties=properties, partition_key=key)
    producer.flush()
    producer.close()
    assert not failures, failures[:3]
    return len(frames)


def stats_mismatches(records: Sequence[Mapping[str, Any]], stream: Sequence[tuple[str, float, int, bytes]]
                     ) -> list[str]:  # fmt: skip
    """Where the statistics records differ from pandas over each product's whole price stream (empty = equal):
    one record per ticker, none twice, in the stream's order."""
    from rtca.analytics.stats import FIELDS, StatsRow, mismatches, pandas_reference

    problems = []
    for product in sorted({p for p, _, _, _ in stream}):
        prices = [price for p, price, _, _ in stream if p == product]
        sequences = [s for p, _, s, _ in stream if p == product]
        mine = [r for r in records if r["product_id"] == product]
        if [r["sequence"] for r in mine] != sequences:
            got = [r["sequence"] for r in mine]
            problems.append(f"{product}: {len(got)} records ({len(got) - len(set(got))} repeated) for "
                            f"{len(sequences)} tickers, or not in their order")
            continue
        rows = [StatsRow(*(r[f] for f in FIELDS)) for r in mine]
        problems += [f"{product}: {m}" for m in mismatches(rows, pandas_reference(prices), prices)[:3]]
    return problems

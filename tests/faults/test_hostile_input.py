"""Over 10,000 fuzzed frames through the real path: a local websocket server (the simulator, with the fuzz injected
between its frames) -> the supervised ingest -> the raw topic -> the deployed router. Every frame the server sent is
on the raw topic, and each one is either routed to its typed topic or in the dead-letter topic with a reason (the
router's own `route` says which, frame by frame); the resident memory of the ingest process and of the router's
instance grows by less than 50 MB over the run, and both keep running.

Topics, products and the router instance are the test's own (the ingest gets the topic names from RTCA_TOPICS__*).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import orjson
import psutil
import pulsar
import pytest
from faults_support import (
    RecordingSimulator,
    ServerThread,
    function_instance,
    ingest_exit,
    ingest_report,
    read_all,
    rss_mb,
    supervised_ingest,
    wait_for,
)

from rtca.feed.server import Faults
from rtca.functions import routing
from rtca.functions.deploy import ROUTER, delete_functions, deploy, function_specs, function_status
from rtca.functions.runtime import message_id_text
from rtca.functions.samples import SAMPLES, hostile_payloads, sample
from rtca.settings import Settings, Topics

pytestmark = [pytest.mark.stack, pytest.mark.slow]

FUZZED = 10_200
PER_SLOT = 25
MAX_GROWTH_MB = 50.0


# --- the fuzz ------------------------------------------------------------------------------------------------------
def fuzz(count: int, *, seed: int) -> Iterator[str | bytes]:
    """`count` hostile frames: the shared hostile payloads (every defect the router knows) interleaved with random
    mutations of valid frames, absurd numbers, deep nesting and a few frames over ingest's 4 MB limit. Text frames
    are str, frames that are not UTF-8 go as binary frames (a websocket text frame cannot carry them)."""
    rng = random.Random(seed)
    known = hostile_payloads(count, seed=seed)
    valid = [orjson.dumps(s) for s in SAMPLES.values()]
    literals = [b'"1e308"', b"-1e308", b"1e400", b"-1e400", b"100000000000000000000000000000", b"-5", b"-0",
                b"1e-320", b'"NaN"', b'"Infinity"', b'"-Infinity"', b"NaN", b"Infinity", b"9223372036854775808",
                b'"99999999999999999999"', b"0.0000000000000000000000001", b"[]", b"{}", b"true", b"null"]
    fields = [("ticker", "price"), ("ticker", "sequence"), ("ticker", "trade_id"), ("ticker", "best_bid"),
              ("match", "size"), ("match", "price"), ("match", "trade_id"), ("heartbeat", "last_trade_id"),
              ("heartbeat", "sequence"), ("l2update", "changes"), ("snapshot", "bids")]

    def mutated() -> bytes:
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randrange(1, 6)):
            i = rng.randrange(len(data))
            action = rng.randrange(4)
            if action == 0:
                data[i] = rng.randrange(256)
            elif action == 1:
                del data[i]
            elif action == 2:
                data.insert(i, rng.choice(b'{}[]",:\\0123456789-eE.ntfu\x00\xff'))
            else:
                del data[i:]
                break
        return bytes(data) or b"{"

    def absurd_number() -> bytes:
        kind, name = rng.choice(fields)
        frame = sample(kind, **{name: [["buy", "__N__", "__N__"]] if name in ("changes", "bids") else "__N__"})
        return orjson.dumps(frame).replace(b'"__N__"', rng.choice(literals))

    def deep() -> bytes:
        depth = rng.choice([64, 500, 1100, 20_000])
        if rng.random() < 0.5:
            return b'{"type":"ticker","x":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
        return b"[" * depth + b"]" * depth

    def oversized() -> bytes:
        size = rng.choice([3_000_000, 4_500_000, 6_000_000])
        return orjson.dumps(sample("ticker", product_id="OVERSIZED-USD", extra="z" * size))

    extras = itertools.cycle([mutated, absurd_number, deep])  # by `i % 3`, the mutations never came
    for i in range(count):
        if i % 1000 == 999:
            data = oversized()
        elif i % 3 == 0:
            data = next(known)
        else:
            data = next(extras)()
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError:
            yield data


# --- the router on topics of its own ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def router(stack: Settings) -> Iterator[tuple[Settings, str]]:
    tag = uuid.uuid4().hex[:8]
    topics = Topics(**{key: f"fuzz-{tag}-{name}" for key, name in stack.topics.model_dump().items()})
    settings = stack.model_copy(update={"topics": topics})
    spec = next(s for s in function_specs(settings, name_prefix=f"fuzz-{tag}-") if s.name.endswith(ROUTER))
    deploy(stack, [spec], say=lambda _: None)
    yield settings, spec.name
    delete_functions(stack, [spec.name], known_only=False)


class MemoryWatch:
    """Samples the resident memory of the ingest and the router instance every 0.2 s. The bound is on the peak over
    the first sample once each has handled `warm_up` frames: imports, connections, first buffers and the allocator's
    response to the first multi-megabyte frames (one per 1,000 fuzzed frames; how many wait in the router's receiver
    queue depends on the machine's load) are not growth. Also shown, not bounded: the last sample before the server
    sent its first fuzzed frame (`before`), so the warm-up's share is on record too."""

    def __init__(self, ingest: psutil.Process, router: psutil.Process, server: ServerThread, stack: Settings,
                 router_name: str, warm_up: int = 2500) -> None:  # fmt: skip
        self.ingest, self.router = ingest, router
        self.samples: dict[str, list[float]] = {"ingest": [], "router": []}
        self.base: dict[str, float] = {}
        self.before: dict[str, float] = {}
        self._server, self._stack, self._name, self._warm_up = server, stack, router_name, warm_up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last_status = 0.0
        while not self._stop.is_set():
            for name, proc in (("ingest", self.ingest), ("router", self.router)):
                try:
                    rss = rss_mb(proc)
                except psutil.Error:
                    continue
                if rss > 0:  # 0: the process is exiting
                    self.samples[name].append(rss)
            server = self._server.server
            if server is None or server.stats.sent_by_type["injected"] == 0:  # sampled before any fuzzed frame
                self.before = {name: samples[-1] for name, samples in self.samples.items() if samples}
            if "ingest" not in self.base and server is not None and server.stats.frames_sent >= self._warm_up:
                self.base["ingest"] = self.samples["ingest"][-1]
            if "router" not in self.base and time.monotonic() - last_status > 1.0:
                last_status = time.monotonic()
                (status,) = function_status(self._stack, [self._name], known_only=False)
                if status.processed >= self._warm_up:
                    self.base["router"] = self.samples["router"][-1]
            time.sleep(0.2)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def report(self, name: str) -> tuple[float, float, float, float]:
        """(before any fuzzed frame, after warm-up, peak, last) in MB."""
        samples = self.samples[name]
        assert name in self.before, f"{name}: no memory sample before the first fuzzed frame"
        return self.before[name], self.base.get(name, samples[0]), max(samples), samples[-1]

    def shape(self, name: str) -> str:
        """The samples at each fifth of the run: flat after the baseline, or still climbing (a leak)."""
        samples = self.samples[name]
        return " ".join(f"{samples[min(len(samples) - 1, len(samples) * k // 5)]:.0f}" for k in range(6))


def test_ten_thousand_fuzzed_frames_are_routed_or_dead_lettered_and_nothing_grows(
        stack: Settings, router: tuple[Settings, str], unique: str) -> None:  # fmt: skip
    settings, router_name = router
    frames = list(fuzz(FUZZED, seed=10))
    slots = {60 + 4 * i: frames[i * PER_SLOT:(i + 1) * PER_SLOT] for i in range(-(-len(frames) // PER_SLOT))}
    tag = unique[:6].upper()
    products = [f"FZ{tag}-USD", f"FZ{tag}-EUR"]
    source = RecordingSimulator(products, rate=300, seed=9, limit=max(slots) + 300)
    name = f"faults-fuzz-{unique}"
    env = {"RTCA_TOPICS__RAW": settings.topics.raw, "RTCA_TOPICS__FEED_HEALTH": settings.topics.feed_health}
    instance = function_instance(router_name)
    assert instance is not None
    with ServerThread(source, faults=Faults(inject_after=slots)) as server, \
            supervised_ingest(stack, name, server.url, products, env=env, channels=("ticker", "heartbeat")) as sup:
        ingest = sup.process(name)
        assert ingest is not None
        with MemoryWatch(ingest, instance, server, stack, router_name) as memory:
            ingest_exit(sup, name, timeout=300)
            assert server.server is not None
            stats = server.server.stats
            report = ingest_report(stack, name)
            client = pulsar.Client(stack.pulsar.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
            try:
                raw_topic = settings.topic(settings.topics.raw)
                raw = read_all(client, raw_topic)
                expected: dict[str, str] = {}  # raw message id -> channel, as the router's own logic decides
                for message in raw:
                    properties = message.properties()
                    routed = routing.route(message.data(), received_ms=int(properties["received_ms"]),
                                           source_topic=raw_topic, product_hint=properties.get("product"))
                    expected[message_id_text(message.message_id())] = routed.channel
                want = Counter(expected.values())
                topic_of = {channel: settings.topic(getattr(settings.topics, channel)) for channel in want}
                wait_for(lambda: len(read_all(client, topic_of["dead_letter"], idle=1.0)) >= want["dead_letter"],
                         timeout=300, interval=3.0, what=f"{want['dead_letter']} dead letters")
                got = {channel: read_all(client, topic, idle=2.0) for channel, topic in topic_of.items()}
            finally:
                client.close()
    ingest_mb, router_mb = memory.report("ingest"), memory.report("router")
    letters = [orjson.loads(m.data()) for m in got["dead_letter"]]
    reasons = Counter(letter["reason"] for letter in letters)
    injected = stats.sent_by_type["injected"]
    (status,) = function_status(stack, [router_name], known_only=False)
    print(f"\nserver sent {stats.frames_sent} frames ({injected} fuzzed); ingest received {report['received']}, acked "
          f"{report['acked']}, malformed {report['malformed']}, unknown {report['unknown']}; raw topic {len(raw)}")
    print(f"router: expected per channel {dict(want)}; got {({c: len(m) for c, m in got.items()})}")
    print(f"dead-lettered {len(letters)} by reason {dict(reasons)}; processed (typed or control) "
          f"{sum(len(m) for c, m in got.items() if c != 'dead_letter')}")
    ingest_text, router_text = (" / ".join(f"{mb:.0f}" for mb in values) for values in (ingest_mb, router_mb))
    print(f"resident memory MB (before the fuzz, after warm-up, peak, end): ingest {ingest_text}, router instance "
          f"{router_text}")
    print(f"resident memory MB at each fifth of the run: ingest {memory.shape('ingest')}; router instance "
          f"{memory.shape('router')}")
    print(f"router after the run: running {status.running}, processed {status.processed}, failed {status.failed}")
    assert injected == len(frames) >= 10_000
    assert report["ended"] == "end_of_stream" and report["received"] == report["acked"] == stats.frames_sent
    assert len(raw) == stats.frames_sent, "a frame the server sent is not on the raw topic"
    assert {c: len(m) for c, m in got.items()} == dict(want), "a frame neither routed nor dead-lettered (or twice)"
    dead_ids = [letter["source_message_id"] for letter in letters]
    assert sorted(dead_ids) == sorted(i for i, c in expected.items() if c == "dead_letter")
    assert all(letter["reason"] in set(routing.Reason) and letter["detail"] for letter in letters)
    assert reasons["internal_error"] == 0, [lt["detail"] for lt in letters if lt["reason"] == "internal_error"][:3]
    assert ingest_mb[2] - ingest_mb[1] < MAX_GROWTH_MB, f"ingest grew by {ingest_mb[2] - ingest_mb[1]:.0f} MB"
    assert router_mb[2] - router_mb[1] < MAX_GROWTH_MB, f"the router grew by {router_mb[2] - router_mb[1]:.0f} MB"
    assert instance.is_running() and function_instance(router_name) == instance, "the router instance was restarted"
    assert status.running == 1 and status.failed == 0

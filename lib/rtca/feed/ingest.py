"""Ingest: frames from the exchange (or a replay or the simulator) -> the raw Pulsar topic, plus feed health.

Raw topic record (the record contract): value = the frame exactly as received; partition key = its `type`, or
`unknown` for a type we do not know, or `malformed` for a frame that is not a JSON object with a string type, has
fields of the wrong type, or exceeds `max_payload_bytes` (then only its first 64 KiB are kept); properties
`received_ms`, `product` and `sequence` when the frame has them, `type` for unknown frames, `error` (not_json,
not_object, no_type, bad_fields, oversized, internal_error: the parser itself failed) and `detail` for malformed
ones, plus `payload_bytes` and
`truncated` for oversized ones; event time = the frame's `time` (`timestamp` for auction), else the receive time.

Feed health (JSON, to the health topic, key = kind; every record also carries `kind`, `ts_ms`, `source` (coinbase,
replay, simulator, or url: a server given by URL in place of the exchange) and `url`):
- kind "tick", every `health_interval` seconds, also while the feed is silent, and a last one after the flush:
  ts_ms, source, url, connected, connections, reconnects, failures (connection attempts that failed before the
  subscription went out: refused, handshake timeout or error, closed at once), silences (connections the
  watchdog closed), messages (frames received so far), msg_rate (frames/s
  over the last interval), acked (raw records Pulsar confirmed), pending, failed (given up after retries),
  malformed, unknown, missed_trades, gaps, out_of_order (frames whose sequence went back), lag_ms_p50 and
  lag_ms_max (receive time minus exchange time over the interval, leaving out the state a subscription starts
  with: `last_match` and each product's first ticker; null when no frame had a time),
  new_reconnects, new_gaps, new_missed_trades (since the previous tick: they sum per minute across ingest
  restarts, where the running counters start again at 0),
  last_message_ms, silence_ms (since the last frame; null before the first), last_error (why the connection
  last dropped or failed, null if never), server_errors (`error` frames received, e.g. "Failed to subscribe"),
  last_server_error (the last one's message and reason, null if none), book_resyncs (level2 resubscriptions
  sent for a book the book function reported crossed or without a snapshot: `rtca.feed.resync`).
  An `error` frame saying "Failed to subscribe" (an unknown product, a channel that needs authentication) before
  any market data (on any connection) ends the ingest with that reason (`SubscriptionRefused`) after the flush: the
  exchange sends nothing on that connection, and reconnecting would only be refused again. Once data came, it
  is only logged and counted, on a reconnect too (a server cannot end a running ingest with one frame).
- kind "gap", as soon as missed trades are detected: ts_ms, source, url, product_id, first_missing, last_missing,
  missed, detected_by (match | heartbeat).

Book resync (`rtca.feed.resync`, setting `feed.resync_books`, on by default): the book function reports a crossed
book or an update before any snapshot on the alerts topic; for a product this ingest subscribed to on a level2
channel, ingest then sends `unsubscribe` and `subscribe` for it on its connection, and the server's fresh snapshot
goes to the raw topic like every frame (at most once per product every 10 s; counted in the ticks' book_resyncs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from rtca.errors import ConfigError, RtcaError
from rtca.feed.connection import ConnectionState, FeedConnection, Frame
from rtca.feed.gaps import MAX_PRODUCTS, GapDetector, TradeGap, bound
from rtca.feed.lifecycle import run_until, stop_on_signals
from rtca.feed.protocol import Error, MalformedFrame, Message, Subscriptions, Unknown, frame_product, parse_frame
from rtca.feed.resync import BookResync, alerts_reader
from rtca.feed.sinks import Publisher, Record, Sink, pulsar_sinks
from rtca.feed.sources import SourceKind, SourceSpec, open_source
from rtca.settings import Settings

log = logging.getLogger(__name__)

STARTED = "ingesting"
#: Announced at the first market data of a run (`rtca.runbook.check_ingest` counts rows only after it).
DATA_FLOWS = "market data flows"
"""The first word of the line `rtca ingest run` prints once it publishes: `rtca ingest start` waits for it."""
GAP_LOG_EVERY_S = 10.0
"""A product's missed trades are logged at most this often (every gap is a health record)."""
OFFLINE_HINT = "offline or behind a proxy? `--source replay` or `--source simulator` run without the internet"
"""What to try when the exchange (or a server given by URL) cannot be reached."""
REFUSED = "failed to subscribe"
"""How an `error` frame refusing the subscription starts (Coinbase's, and the replay and simulator servers')."""


class SubscriptionRefused(ConfigError):
    """The server refused what the ingest subscribed to: nothing will come until the products or channels change."""
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Frames above this are cut (Pulsar's default maximum message size is 5 MB, metadata included)."""
CUT_BYTES = 64 * 1024
PROPERTY_CHARS = 200
"""Properties taken from a frame (`product`, `type`) are cut to this: a huge one must not make the record too big."""


def raw_record(frame: Frame, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> tuple[Record, Message | MalformedFrame]:
    """The raw-topic record of a frame, and what the frame turned out to be. Never raises: a frame that breaks the
    parser in a way it does not foresee is still published, as malformed with the error, and the feed goes on."""
    try:
        return _raw_record(frame, max_payload_bytes)
    except Exception as exc:
        log.exception("a frame broke the parser; published as malformed")
        problem = MalformedFrame("internal_error", f"{type(exc).__name__}: {exc}"[:300])
        properties = {"received_ms": str(frame.received_ms), "error": problem.code, "detail": problem.detail}
        return Record(frame.data, "malformed", properties, frame.received_ms), problem


def _raw_record(frame: Frame, max_payload_bytes: int) -> tuple[Record, Message | MalformedFrame]:
    received_ms = frame.received_ms
    properties = {"received_ms": str(received_ms)}
    if len(frame.data) > max_payload_bytes:
        problem = MalformedFrame("oversized", f"{len(frame.data)} bytes, more than {max_payload_bytes}")
        properties |= {"error": problem.code, "detail": problem.detail, "payload_bytes": str(len(frame.data)),
                       "truncated": "true"}
        return Record(frame.data[:CUT_BYTES], "malformed", properties, received_ms), problem
    try:
        message = parse_frame(frame.data)
    except MalformedFrame as problem:
        product = frame_product(problem.obj)
        if product is not None:
            properties["product"] = product[:PROPERTY_CHARS]
        properties |= {"error": problem.code, "detail": problem.detail[:300]}
        return Record(frame.data, "malformed", properties, received_ms), problem
    if message.product is not None:
        properties["product"] = message.product[:PROPERTY_CHARS]
    if message.seq is not None:
        properties["sequence"] = str(message.seq)
    key = message.type
    if isinstance(message, Unknown):
        key, properties["type"] = "unknown", message.type[:PROPERTY_CHARS]
    event_ms = message.event_ms
    if event_ms is not None and event_ms <= 0:  # a time before 1970: Pulsar's event time is unsigned
        event_ms = None
    return Record(frame.data, key, properties, received_ms if event_ms is None else event_ms), message


@dataclass(frozen=True)
class IngestReport:
    source: str
    url: str
    ended: str
    """end_of_stream | duration | max_messages | stopped (SIGINT / SIGTERM or the `stop` event)."""
    seconds: float
    received: int
    by_key: dict[str, int]
    sent: int
    acked: int
    failed: int
    pending: int
    malformed: int
    unknown: int
    reconnects: int
    missed_trades: int
    gaps: int
    out_of_order: int
    health_records: int
    attempts: int = 0
    """Connections tried (the first included)."""

    @property
    def rate(self) -> float:
        """Frames received per second, over the whole run up to the last acknowledgement."""
        return self.received / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        """Every record reached Pulsar."""
        return self.failed == 0 and self.pending == 0

    def __str__(self) -> str:
        keys = ", ".join(f"{key} {count}" for key, count in sorted(self.by_key.items()))
        return (
            f"{self.source} {self.url}: {self.ended} after {self.seconds:.1f} s; received {self.received} "
            f"({self.rate:.0f} msg/s), acked {self.acked}, failed {self.failed}, pending {self.pending}; "
            f"malformed {self.malformed}, unknown {self.unknown}, reconnects {self.reconnects}, "
            f"missed trades {self.missed_trades} in {self.gaps} gaps, out of order {self.out_of_order}; "
            f"health records {self.health_records}\n  by key: {keys}"
        )


class Ingest:
    """Turns frames into raw records and feed-health records; owns the counters."""

    def __init__(
        self,
        raw: Publisher,
        health: Publisher,
        *,
        source: str,
        connection: ConnectionState,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        announce: Callable[[str], None] | None = None,
        resync: BookResync | None = None,
    ) -> None:
        self.raw = raw
        self.resync = resync
        self.announce = announce
        self.health = health
        self.source = source
        self.connection = connection
        self.max_payload_bytes = max_payload_bytes
        self.gaps = GapDetector()
        self.by_key: Counter[str] = Counter()
        self.received = self.malformed = self.unknown = 0
        self.last_message_ms: int | None = None
        self._gap_log: dict[str, tuple[float, int, int]] = {}  # product: (next warning at, gaps, trades since)
        self.server_errors = 0
        self.last_server_error: str | None = None
        self._logged_error: tuple[int, str] | None = None
        self._had_data = False  # market data came (on any connection): the subscription was accepted once
        self._interval_messages = 0
        self._interval_lags: list[int] = []
        self._lag_connection = 0  # the connection whose products' first ticker `_ticker_seen` has passed over
        self._ticker_seen: set[str] = set()
        self._ticker_ms: dict[str, int] = {}  # per product the newest ticker's time
        self._interval_start = time.monotonic()
        self._counted_at_tick = (0, 0, 0)  # reconnects, gaps, missed trades at the previous tick

    def handle(self, frame: Frame) -> None:
        record, parsed = raw_record(frame, max_payload_bytes=self.max_payload_bytes)
        self.raw.publish(record)
        self.received += 1
        self._interval_messages += 1
        self.by_key[record.key] += 1
        self.last_message_ms = frame.received_ms
        if isinstance(parsed, MalformedFrame):
            self.malformed += 1
            return
        if isinstance(parsed, Unknown):
            self.unknown += 1
        if isinstance(parsed, Error):
            self._server_error(parsed, frame.connection)
        elif not isinstance(parsed, Subscriptions):
            if not self._had_data and self.announce is not None:
                self.announce(f"{DATA_FLOWS} from {self.connection.url}")
            self._had_data = True
        if (parsed.event_time is not None and record.event_ms is not None
                and self._live(parsed, frame.connection, record.event_ms)):  # fmt: skip
            self._interval_lags.append(frame.received_ms - record.event_ms)  # only from the exchange's time
        gap = self.gaps.observe(parsed)
        if gap is not None:
            self._log_gap(gap)
            self._publish_health("gap", self._gap_fields(gap))

    def _live(self, message: Message, connection: int, event_ms: int) -> bool:
        """Whether a frame's time says how late the feed is: not the state a subscription starts with, the
        `last_match` (the newest trade, minutes old on a quiet product) and each product's first ticker on a
        connection, nor a ticker older than the product's newest (that first ticker again, at each loop of a
        replay); their age made the lag spike at every (re)connection and every loop of a replay."""
        if message.type == "last_match":
            return False
        if message.type != "ticker" or message.product is None:
            return True
        if connection != self._lag_connection:
            self._lag_connection, self._ticker_seen = connection, set()
        first = message.product not in self._ticker_seen and len(self._ticker_seen) < MAX_PRODUCTS
        if first:
            self._ticker_seen.add(message.product)
        newest = self._ticker_ms.get(message.product)
        if newest is None or event_ms > newest:
            self._ticker_ms[message.product] = event_ms
            bound(self._ticker_ms)
        return not first and (newest is None or event_ms >= newest)

    def _log_gap(self, gap: TradeGap) -> None:
        """A warning per product at most every `GAP_LOG_EVERY_S`, with the gaps passed over since: a feed skipping
        ids wrote one line per gap (thousands a second); each gap is still a health record."""
        now = time.monotonic()
        next_at, gaps, missed = self._gap_log.get(gap.product_id, (0.0, 0, 0))
        if now < next_at:
            self._gap_log[gap.product_id] = (next_at, gaps + 1, missed + gap.missed)
            return
        earlier = f" (and {gaps} more gaps, {missed} trades, in the last {GAP_LOG_EVERY_S:g} s)" if gaps else ""
        log.warning("%s: missed trades %d..%d (%d)%s", gap.product_id, gap.first_missing, gap.last_missing,
                    gap.missed, earlier)
        self._gap_log[gap.product_id] = (now + GAP_LOG_EVERY_S, 0, 0)
        bound(self._gap_log)

    def _server_error(self, error: Error, connection: int) -> None:
        """An `error` frame: said in the log, once per connection and text, and in feed health; it is on the raw
        topic like every frame. A refused subscription, before any data came, ends the ingest
        (`SubscriptionRefused`)."""
        self.server_errors += 1
        text = (f"{error.message}: {error.reason}" if error.reason else error.message)[:300]
        self.last_server_error = text
        if self._logged_error != (connection, text):
            self._logged_error = (connection, text)
            log.warning("%s: the server answered with an error: %s", self.connection.url, text)
        # Every connection sends the same subscription: refused after one was served, it is the server's trouble
        # (or a hostile server's word), not the products' or channels': logged and counted only.
        if error.message.lower().startswith(REFUSED) and not self._had_data:
            raise SubscriptionRefused(f"{self.connection.url} refused the subscription: {text}",
                                      hint="check the products and channels (`rtca ingest run --help`); the "
                                           "exchange's public channels need no authentication, level2 does")

    async def receive(self, connection: FeedConnection, max_messages: int | None) -> str:
        """Frames -> records until the stream ends or `max_messages`; back-pressure when Pulsar lags."""
        async with aclosing(connection.frames()) as stream:
            async for frame in stream:
                self.handle(frame)
                if max_messages is not None and self.received >= max_messages:
                    return "max_messages"
                await self.raw.wait_capacity()
        return "end_of_stream"

    async def tick_every(self, interval: float) -> None:
        """A health tick every `interval` seconds on a fixed schedule, whatever the feed does."""
        next_at = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            self.tick()

    def tick(self) -> None:
        now = time.monotonic()
        elapsed, self._interval_start = now - self._interval_start, now
        lags, self._interval_lags = self._interval_lags, []
        messages, self._interval_messages = self._interval_messages, 0
        now_ms = int(time.time() * 1000)
        state = self.connection
        counted = (state.reconnects, self.gaps.gaps, self.gaps.missed_trades)
        new = [count - before for count, before in zip(counted, self._counted_at_tick, strict=True)]
        self._counted_at_tick = counted
        self._publish_health("tick", {
            "connected": state.connected,
            "connections": state.connections,
            "reconnects": state.reconnects,
            "failures": state.failures,
            "silences": state.silences,
            "messages": self.received,
            "msg_rate": round(messages / elapsed, 3) if elapsed > 0 else 0.0,
            "acked": self.raw.acked,
            "pending": self.raw.pending,
            "failed": self.raw.failed,
            "malformed": self.malformed,
            "unknown": self.unknown,
            "missed_trades": self.gaps.missed_trades,
            "gaps": self.gaps.gaps,
            "out_of_order": self.gaps.out_of_order,
            "new_reconnects": new[0],
            "new_gaps": new[1],
            "new_missed_trades": new[2],
            "lag_ms_p50": statistics.median_low(lags) if lags else None,
            "lag_ms_max": max(lags) if lags else None,
            "last_message_ms": self.last_message_ms,
            "silence_ms": None if self.last_message_ms is None else max(0, now_ms - self.last_message_ms),
            "last_error": state.last_error,
            "server_errors": self.server_errors,
            "last_server_error": self.last_server_error,
            "book_resyncs": 0 if self.resync is None else self.resync.resyncs,
        }, now_ms)

    def _publish_health(self, kind: str, fields: dict[str, Any], now_ms: int | None = None) -> None:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        body = {"kind": kind, "ts_ms": now_ms, "source": self.source, "url": self.connection.url, **fields}
        try:
            data = orjson.dumps(body)
        except TypeError:  # e.g. an integer beyond 64 bits: never a reason to stop ingesting
            data = json.dumps(body, default=str).encode()
        self.health.publish(Record(data, kind, {"source": self.source}, now_ms))

    @staticmethod
    def _gap_fields(gap: TradeGap) -> dict[str, Any]:
        return {**asdict(gap), "missed": gap.missed}


DRAIN_TIMEOUT_S = 60.0
"""How long an ingest that stops waits for Pulsar to confirm what it sent, once for the frames and once for the
last health records (a stop that killed it sooner would lose them: `rtca.feed.service.STOP_TIMEOUT_S`)."""


async def ingest(
    connection: FeedConnection,
    raw: Sink,
    health: Sink,
    *,
    source: str,
    duration: float | None = None,
    max_messages: int | None = None,
    stop: asyncio.Event | Sequence[asyncio.Event] | None = None,
    health_interval: float = 1.0,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    drain_timeout: float = DRAIN_TIMEOUT_S,
    announce: Callable[[str], None] | None = None,
    resync: BookResync | None = None,
) -> IngestReport:
    """Run until the source ends, `duration` seconds pass, `max_messages` frames arrived or `stop` is set; then
    flush: every received frame is handed to the raw sink and waited for. `resync` follows the alerts beside the
    feed (`rtca.feed.resync`)."""
    raw_publisher, health_publisher = Publisher(raw), Publisher(health)
    work = Ingest(raw_publisher, health_publisher, source=source, connection=connection.state,
                  max_payload_bytes=max_payload_bytes, announce=announce, resync=resync)
    started = time.monotonic()
    ticker = asyncio.create_task(work.tick_every(health_interval), name="ingest-health")
    sides = [ticker]
    if resync is not None:
        sides.append(asyncio.create_task(resync.follow(), name="ingest-book-resync"))
    try:
        ended = await run_until(work.receive(connection, max_messages), duration=duration, stop=stop)
    finally:  # also when receiving failed: nothing received is lost
        for task in sides:
            task.cancel()
        await asyncio.gather(*sides, return_exceptions=True)
        await raw_publisher.drain(drain_timeout)
        seconds = time.monotonic() - started
        work.tick()  # the last word: final counts, acks included
        await health_publisher.drain(drain_timeout)
    return IngestReport(
        source=source, url=connection.url, ended=ended, seconds=round(seconds, 3), received=work.received,
        by_key=dict(work.by_key), sent=raw_publisher.sent, acked=raw_publisher.acked, failed=raw_publisher.failed,
        pending=raw_publisher.pending, malformed=work.malformed, unknown=work.unknown,
        reconnects=connection.state.reconnects, missed_trades=work.gaps.missed_trades, gaps=work.gaps.gaps,
        out_of_order=work.gaps.out_of_order, health_records=health_publisher.acked,
        attempts=connection.state.attempts,
    )


async def ingest_to_pulsar(
    settings: Settings,
    spec: SourceSpec,
    *,
    raw_topic: str | None = None,
    health_topic: str | None = None,
    alerts_topic: str | None = None,
    duration: float | None = None,
    max_messages: int | None = None,
    silence_timeout: float = 10.0,
    stop: asyncio.Event | None = None,
    announce: Callable[[str], None] | None = None,
) -> IngestReport:
    """`ingest` from a source (started in-process for a replay or simulator) into the configured topics;
    `announce` gets one line once Pulsar and the source are open (what a supervisor waits for). With
    `settings.feed.resync_books` and a level2 channel subscribed, the book function's problems on the alerts topic
    make it resubscribe that product's level2 channel (`rtca.feed.resync`)."""
    raw_topic = raw_topic or settings.topic(settings.topics.raw)
    health_topic = health_topic or settings.topic(settings.topics.feed_health)
    alerts_topic = alerts_topic or settings.topic(settings.topics.alerts)
    # the source first: a capture that does not exist is named at once, not after Pulsar's connection attempts
    if spec.kind == "coinbase" and spec.url is None:
        spec = dataclasses.replace(spec, url=settings.feed.coinbase_url)
    async with open_source(spec) as endpoint, pulsar_sinks(settings, raw_topic, health_topic) as (raw, health):
        # the exchange never ends its stream: a close code of our servers' from anything else is a drop like any
        connection = FeedConnection(endpoint.url, endpoint.subscribe_frame(), silence_timeout=silence_timeout,
                                    end_of_stream=spec.kind != "coinbase",
                                    offline_hint=OFFLINE_HINT if spec.kind == "coinbase" else None)
        label = spec.label(settings.feed.coinbase_url)  # as the report and feed health say: `url` is not coinbase
        log.info("ingesting %s (%s) into %s", label, endpoint.url, raw_topic)
        if announce is not None:
            announce(f"{STARTED} {label} ({endpoint.url}) into {raw_topic}")
        server = endpoint.server
        stops = [*([stop] if stop else []), *([server.failed] if server else [])]
        resync: BookResync | None = BookResync(endpoint.products, endpoint.channels, connection.send,
                                               open_reader=alerts_reader(settings, alerts_topic))  # fmt: skip
        if settings.feed.resync_books and resync.products:
            log.info("book problems on %s resubscribe the product's %s", alerts_topic, ", ".join(resync.channels))
        else:
            resync = None
        report = await ingest(connection, raw, health, source=label,
                              duration=duration, max_messages=max_messages, stop=stops,
                              announce=announce, resync=resync)  # fmt: skip
    if server is not None and server.failure is not None:  # what was received is in Pulsar; the source is dead
        failure = server.failure
        raise RtcaError(f"the {spec.kind} source failed: {type(failure).__name__}: {failure}",
                        hint=f"ingest published {report.acked} records before it; the log has the traceback")
    return report


def run_ingest(
    settings: Settings,
    *,
    source: SourceKind = "coinbase",
    url: str | None = None,
    capture: Path | str | None = None,
    speed: float | str | None = None,
    loop: bool = False,
    shift_time: bool = False,
    products: Sequence[str] | None = None,
    channels: Sequence[str] | None = None,
    rate: float | str | None = None,
    seed: int | None = None,
    raw_topic: str | None = None,
    health_topic: str | None = None,
    duration: float | None = None,
    max_messages: int | None = None,
    silence_timeout: float = 10.0,
    announce: Callable[[str], None] | None = None,
) -> IngestReport:
    """`rtca ingest run`: ingest in the foreground until the source ends (a capture without `loop`), `duration`
    or `max_messages`, or SIGINT / SIGTERM; then flush and return the counts. The source's options are those of
    `SourceSpec.build`: None is the source's default, and one the source would ignore is refused."""
    spec = SourceSpec.build(
        source, url=url, capture=capture, speed=speed, loop=loop, shift_time=shift_time, products=products,
        channels=channels, rate=rate, seed=seed,
    )

    async def main() -> IngestReport:
        with stop_on_signals() as stop:
            return await ingest_to_pulsar(
                settings, spec, raw_topic=raw_topic, health_topic=health_topic, duration=duration,
                max_messages=max_messages, silence_timeout=silence_timeout, stop=stop, announce=announce,
            )

    return asyncio.run(main())

"""Book resynchronisation: ingest asks the exchange again for the level2 snapshot of a product whose book broke.

The book function (`rtca.functions.book`) reports a crossed book or an l2update before any snapshot on the alerts
topic (rule ``book_crossed`` / ``book_no_snapshot``), drops that product's book and waits for a snapshot. Coinbase
sends one only to a new subscriber of (level2 channel, product), so without a resubscription the product's book
would stay dark until the next reconnect. `BookResync` follows the alerts topic from its latest message (a
non-durable reader: old alerts are never acted on again) and, for a product this ingest subscribed to on a level2
channel, sends ``unsubscribe`` then ``subscribe`` for it on the open websocket (one pair for all the products of a
burst of alerts): the exchange (and our replay and simulator servers) then sends a fresh snapshot. Any other record,
a bad one included, is ignored.

A product that breaks again within `RESYNC_EVERY_S` is resubscribed when that time is up (the book function
reports a problem once). A side path: if the alerts topic cannot be read, ingest goes on (a warning, then retries
with backoff, from the last alert read).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol

import orjson

from rtca.feed.connection import Backoff
from rtca.feed.protocol import DATA_CHANNEL, subscribe_frame
from rtca.settings import Settings

log = logging.getLogger(__name__)

RULES: frozenset[str] = frozenset({"book_crossed", "book_no_snapshot"})
"""The alert rules of the book function (`rtca.analytics.alerts.book_problem_alert`) that ask for a snapshot."""
RESYNC_EVERY_S = 10.0
"""At most one resync per product this often: a product whose fresh snapshot crosses again (a broken server, a
bad price level) must not make a storm of resubscriptions, which the exchange answers by dropping the connection."""
READ_TIMEOUT_MS = 1000
"""A read waits this long at most, so that stopping the ingest never waits longer for the reader's thread."""
GATHER_MS = 100
"""Records that follow each other within this time are acted on together (one resubscription for all)."""
GATHER_FOR_MS = 250
"""A burst is acted on at most this long after its first record: the alerts topic carries every rule's alerts, and a
steady stream of them must not hold a book's problem back."""
OPERATION_TIMEOUT_S = 10
"""The reader's client gives up on the broker this soon (the sinks' client waits a minute): a retry comes sooner."""
RETRY = Backoff(initial=1.0, maximum=60.0)
"""Delays between attempts to open the alerts reader again."""
SEND_TIMEOUT_S = 5.0
"""A resubscription not sent by then (a server that does not read) is given up; the watchdog closes such a
connection and the next one subscribes afresh."""


class Reader(Protocol):
    def read_next(self, timeout_millis: int) -> Any: ...

    def close(self) -> None: ...


def level2_channels(channels: Iterable[str]) -> list[str]:
    """The subscribed channels that carry level2 frames (level2, level2_batch, level2_50), as subscribed."""
    return [name for name in channels if DATA_CHANNEL.get(name, name) == "level2"]


class BookResync:
    """Resubscribes a product's level2 channels when an alert says its book broke; throttled per product."""

    def __init__(
        self,
        products: Iterable[str],
        channels: Iterable[str],
        send: Callable[[str], Awaitable[bool]],
        *,
        open_reader: Callable[[Any], Reader] | None = None,
        every: float = RESYNC_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`send(text)` sends a frame on the open connection, False when none is open (then the next connection
        subscribes afresh, snapshot included, and nothing is to be done); `open_reader(after)` opens the reader of
        the alerts topic that `follow` reads, after the message id `after` (None: from the latest; `alerts_reader`)."""
        self.open_reader = open_reader
        self.channels = level2_channels(channels)
        self.products = frozenset(products) if self.channels else frozenset()
        self.send = send
        self.every = every
        self.clock = clock
        self.resyncs = 0
        """Resubscriptions sent."""
        self.throttled = 0
        """Problems not acted on at once because the product was (or is being) resynchronised less than `every`
        seconds before."""
        self._last: dict[str, float] = {}
        self._after: Any = None
        """The id of the last alerts-topic message read: a reader opened again starts after it."""
        self._waiting: dict[str, tuple[str, str]] = {}
        """Problems of throttled products: the book function reports a problem once, until a snapshot comes, so each
        is resubscribed once its time is up (`resync_waiting`) rather than left without a book."""

    def wanted(self, data: bytes) -> tuple[str, str, str] | None:
        """(product, rule, message) of an alert record asking for a snapshot of one of our products; None for any
        other record (another rule, another product, not JSON, fields missing or of the wrong type)."""
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(record, dict):
            return None
        rule, product, message = record.get("rule"), record.get("product_id"), record.get("message")
        if not isinstance(rule, str) or rule not in RULES or not isinstance(product, str):
            return None
        if product not in self.products:
            return None
        return product, rule, message[:200] if isinstance(message, str) else ""

    def due(self, product: str) -> bool:
        """Whether `product` may be resynchronised now (none in the last `every` seconds)."""
        last = self._last.get(product)
        return last is None or self.clock() - last >= self.every

    async def handle(self, *records: bytes) -> list[str]:
        """Act on alerts-topic records read together (and on the waiting problems now due); returns the products
        resubscribed.

        Every due product goes in one ``unsubscribe`` and one ``subscribe``: the exchange takes 100 client messages a
        second, and a burst of broken books (after a reconnect, say) must not cost two per product."""
        problems: dict[str, tuple[str, str]] = {}
        for data in records:
            wanted = self.wanted(data)
            if wanted is None:
                continue
            product, rule, message = wanted
            if product in problems or product in self._waiting:
                self.throttled += 1  # the same problem twice: one resubscription answers both
            elif not self.due(product):
                self.throttled += 1
                self._waiting[product] = rule, message
                log.info("%s: %s within %g s of its last resync: resubscribed once that time is up", product, rule,
                         self.every)  # fmt: skip
            else:
                problems[product] = rule, message
        for product in [product for product in self._waiting if self.due(product)]:
            problems[product] = self._waiting.pop(product)
        if not problems:
            return []
        products = list(problems)
        unsubscribe = subscribe_frame(products, self.channels, kind="unsubscribe")
        subscribe = subscribe_frame(products, self.channels)
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                sent = await self.send(unsubscribe) and await self.send(subscribe)
        except TimeoutError:
            sent = False
        if not sent:  # no connection open (or it closed meanwhile): the next one subscribes afresh, to every book
            self._waiting.clear()
            log.info("%s: book problems, but no connection to resubscribe on (the next one brings a snapshot)",
                     ", ".join(products))  # fmt: skip
            return []
        now = self.clock()
        for product, (rule, message) in problems.items():
            self._last[product] = now
            # a warning, as for missed trades: a book broke, which its feed's operator wants to see
            log.warning("%s: resubscribed to %s for a fresh snapshot (%s: %s)", product, ", ".join(self.channels),
                        rule, message)  # fmt: skip
        self.resyncs += len(products)
        return products

    @property
    def waiting(self) -> list[str]:
        """Products whose problem waits for its throttle interval to end."""
        return list(self._waiting)

    async def follow(self, *, retry: Backoff = RETRY, rng: random.Random | None = None) -> None:
        """Read records from `open_reader`'s reader and `handle` each burst of them (those that come less than
        `GATHER_MS` apart, for at most `GATHER_FOR_MS`) together, and the waiting problems once due, until
        cancelled; a reader that fails (or cannot be opened) is logged and opened again after a backoff, after the
        last message read, so that no alert published meanwhile is missed. Never raises but CancelledError."""
        open_reader = self.open_reader
        if open_reader is None:
            raise ValueError("BookResync.follow needs the open_reader it reads alerts from")
        rng = rng or random.Random()
        loop = asyncio.get_running_loop()
        # blocking reads on a thread of their own: the default executor's threads are the sinks'
        executor = ThreadPoolExecutor(1, thread_name_prefix="book-resync")
        attempt = 0
        try:
            while True:
                reader: Reader | None = None
                delay = None
                opening = executor.submit(open_reader, self._after)
                try:
                    reader = await asyncio.wrap_future(opening)
                    log.info("book resync: following the alerts topic")
                    read = partial(loop.run_in_executor, executor, _read, reader)
                    while True:
                        message = await read(READ_TIMEOUT_MS)
                        attempt = 0  # a reader that reads: the next failure starts the backoff again
                        await self._handle_burst(message, read)
                except asyncio.CancelledError:
                    if reader is None:  # stopped while it opens: closed once it is open
                        opening.add_done_callback(_close_opened)
                    raise
                except Exception as exc:  # noqa: BLE001 - a side path: ingest goes on whatever the reader does
                    delay = retry.delay(attempt, rng)
                    attempt += 1
                    log.warning("book resync: cannot read the alerts topic (%s: %s); ingest goes on, retrying in "
                                "%.0f s", type(exc).__name__, exc, delay)  # fmt: skip
                finally:
                    if reader is not None:  # after the read in progress (at most `READ_TIMEOUT_MS`), not waited for
                        executor.submit(_close, reader)
                if delay is not None:
                    await asyncio.sleep(delay)
        finally:
            executor.shutdown(wait=False)

    async def _handle_burst(self, message: Any, read: Callable[[int], Awaitable[Any]]) -> None:
        """`handle` `message` (None: nothing came) with those `read(timeout_ms)` gives less than `GATHER_MS` apart,
        for at most `GATHER_FOR_MS`; what was read is acted on even when a read fails (then re-raised)."""
        burst: list[bytes] = []
        ends = time.monotonic() + GATHER_FOR_MS / 1000
        try:
            while message is not None:
                self._after = message.message_id()
                burst.append(message.data())
                wait = min(GATHER_MS, int((ends - time.monotonic()) * 1000))
                message = None if wait <= 0 else await read(wait)
        except Exception:
            await self.handle(*burst)
            raise
        if burst or self._waiting:
            await self.handle(*burst)


def _read(reader: Reader, timeout_ms: int) -> Any:
    """The next message, None when none came within `timeout_ms`."""
    import pulsar

    try:
        return reader.read_next(timeout_millis=timeout_ms)
    except pulsar.Timeout:
        return None


def _close_opened(opening: Future[Reader]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        _close(opening.result())


def _close(reader: Reader) -> None:
    try:
        reader.close()
    except Exception as exc:  # noqa: BLE001 - closing is tidiness only
        log.debug("book resync: closing the reader: %s", exc)


def alerts_reader(settings: Settings, topic: str) -> Callable[[Any], Reader]:
    """Opens a non-durable reader of `topic` after a message id (None: at its latest message), on a client of its
    own (closed with it)."""

    def open_reader(after: Any) -> Reader:
        import pulsar

        from rtca.feed.sinks import pulsar_client

        client = pulsar_client(settings, operation_timeout_s=OPERATION_TIMEOUT_S)
        try:
            start = pulsar.MessageId.latest if after is None else after  # exclusive: the next message on
            return _ClientReader(client, client.create_reader(topic, start))
        except BaseException:
            client.close()
            raise

    return open_reader


class _ClientReader:
    """A reader that closes its client with it."""

    def __init__(self, client: Any, reader: Any) -> None:
        self.client, self.reader = client, reader

    def read_next(self, timeout_millis: int) -> Any:
        return self.reader.read_next(timeout_millis=timeout_millis)

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.client.close()

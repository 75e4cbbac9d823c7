"""Ticker-statistics Pulsar Function: typed ticker records -> one statistics record per ticker.

Each output record carries the product's complete `TickerStats` state and the id of the input message it answers,
keyed by product. Pulsar runs here without stream storage (no Functions state API), so on its first message an
instance rebuilds its state from the output topic itself: the last record per product (`restore_books`). Inputs
redelivered after a restart (published but not yet acknowledged) are recognised by their message id and skipped,
so the output equals pandas over the whole stream with no duplicate row.

userConfig: ``dead_letter`` (topic for records it cannot use), optional ``span`` and ``window``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pulsar

from rtca.analytics.stats import DEFAULT_SPAN, DEFAULT_WINDOW, StatsRow, TickerStats
from rtca.functions.routing import Reason, dead_letter_record, encode_dead_letter
from rtca.functions.runtime import (
    Context,
    MessageIdKey,
    Publisher,
    ack_now,
    freeze_startup_objects,
    message_id_key,
    message_id_text,
    received_ms_of,
    user_config,
)


@dataclass(slots=True)
class ProductBook:
    """One product's statistics and the last input it has answered (topic, message id)."""

    stats: TickerStats
    source_topic: str | None = None
    source_id: MessageIdKey | None = None

    def already_done(self, topic: str, message_id: MessageIdKey) -> bool:
        return self.source_topic == topic and self.source_id is not None and message_id <= self.source_id


@dataclass(slots=True)
class StatsBooks:
    """All products' books: the function's whole state, rebuilt from its own output records."""

    span: float = DEFAULT_SPAN
    window: int = DEFAULT_WINDOW
    books: dict[str, ProductBook] = field(default_factory=dict)

    def book(self, product: str) -> ProductBook:
        book = self.books.get(product)
        if book is None:
            book = self.books[product] = ProductBook(TickerStats(self.span, self.window))
        return book

    def resume(self, record: Mapping[str, Any]) -> None:
        """Take a previously emitted record as the product's current state (later records win)."""
        stats = TickerStats.from_state(record["state"])
        if stats.span != self.span or stats.window != self.window:
            return  # emitted under other parameters: start that product afresh
        source = record.get("source") or {}
        message_id = source.get("message_id")
        self.books[record["product_id"]] = ProductBook(
            stats, source.get("topic"), tuple(message_id[:3]) if message_id else None  # type: ignore[arg-type]
        )

    def resume_all(self, payloads: Iterable[bytes]) -> int:
        """Feed the output topic's records in order; returns how many were usable."""
        used = 0
        for payload in payloads:
            try:
                self.resume(orjson.loads(payload))
                used += 1
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                continue  # not one of ours (or an older format): it cannot define a state
        return used


def stats_record(
    ticker: Mapping[str, Any], book: ProductBook, price: float, row: StatsRow, source_id: list[int]
) -> dict[str, Any]:
    """The ticker-stats record: product, price, event time, sequence, the six statistics (`FIELDS`), count, the
    input it answers and the state to resume from. One literal: this runs for every ticker."""
    get = ticker.get
    return {
        "product_id": ticker["product_id"], "price": price, "sequence": get("sequence"), "trade_id": get("trade_id"),
        "event_ms": get("event_ms"), "received_ms": get("received_ms"),
        "ewma_mean": row[0], "ewma_std": row[1], "ewma_var": row[2],
        "rolling_mean": row[3], "rolling_std": row[4], "rolling_var": row[5],
        "count": book.stats.count,
        "source": {"topic": book.source_topic, "message_id": source_id},
        "state": book.stats.state(),
    }  # fmt: skip


def read_topic(client: Any, topic: str, *, timeout_ms: int = 10_000) -> Iterable[bytes]:
    """Every payload of `topic` from the earliest to the last one stored now (compacted view if there is one)."""
    reader = client.create_reader(topic, pulsar.MessageId.earliest, is_read_compacted=True)
    try:
        while reader.has_message_available():
            yield reader.read_next(timeout_ms).data()
    finally:
        reader.close()


class TickerStatsFunction(pulsar.Function):
    """Per product: EWMA (span 10, adjust=False) and rolling(5) mean/std/var of the ticker price stream."""

    def __init__(self) -> None:
        self._books: StatsBooks | None = None
        self._publisher: Publisher | None = None
        self._output = ""
        self._dead_letter = ""

    def _restore(self, context: Context) -> StatsBooks:
        freeze_startup_objects()
        config = context.get_user_config_map()
        books = StatsBooks(float(config.get("span", DEFAULT_SPAN)), int(config.get("window", DEFAULT_WINDOW)))
        output = self._output = context.get_output_topic()
        self._dead_letter = user_config(context, "dead_letter")
        self._publisher = Publisher(context)
        used = books.resume_all(read_topic(context.get_pulsar_client(), output))
        context.get_logger().info("ticker stats: resumed %d products from %d records of %s", len(books.books), used,
                                  output)  # fmt: skip
        return books

    def process(self, input: Any, context: Context) -> None:  # noqa: A002 - the runtime's parameter name
        books = self._books
        if books is None:
            books = self._books = self._restore(context)  # an error here propagates: retried with the next message
        publisher: Publisher = self._publisher  # type: ignore[assignment]
        message_id = context.get_message_id()
        topic = context.get_current_message_topic_name()
        try:
            ticker = orjson.loads(input)
            product = ticker["product_id"]
            price = float(ticker["price"])
            if not isinstance(product, str) or not product:
                raise ValueError("product_id must be a non-empty string")
            book = books.book(product)
            key = message_id_key(message_id)
            if book.already_done(topic, key):
                ack_now(context)  # redelivered after a restart: its output is already in the topic
                context.record_metric("redelivered_skipped", 1)
                return
            row = book.stats.update(price)  # raises ValueError on NaN/inf before changing any state
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self._reject(context, input, f"{type(exc).__name__}: {exc}")
            return
        book.source_topic, book.source_id = topic, key
        record = stats_record(ticker, book, price, row, [*key, message_id.partition()])
        event_ms = ticker.get("event_ms")
        publisher.publish_then_ack(context, self._output, orjson.dumps(record), key=product,
                                   event_ms=event_ms if type(event_ms) is int else None, source=topic,
                                   message_id=message_id)  # fmt: skip

    def _reject(self, context: Context, payload: Any, detail: str) -> None:
        data = payload if isinstance(payload, bytes) else str(payload).encode("utf-8", "backslashreplace")
        record = dead_letter_record(
            Reason.INVALID_FIELD, detail, data, source_topic=context.get_current_message_topic_name(),
            source_message_id=message_id_text(context.get_message_id()),
            received_ms=received_ms_of(context.get_message_properties()),
        )  # fmt: skip
        context.record_metric("dead_letters", 1)
        self._publisher.publish_then_ack(context, self._dead_letter, encode_dead_letter(record))  # type: ignore[union-attr]

"""Ticker-statistics Pulsar Function: typed ticker records -> one statistics record per ticker.

Each output record carries the product's complete `TickerStats` state and the id of the input message it answers,
keyed by product. Pulsar runs here without stream storage (no Functions state API), so on its first message an
instance rebuilds its state from the output topic itself: the last record per product (`StatsBooks.resume_all`).
Inputs redelivered after a restart (published but not yet acknowledged) are recognised by their message id and
skipped, so the output equals pandas over the whole stream with no duplicate row. The frame (start, dead letters,
reading the output topic) is `rtca.functions.resume`'s, shared with the other stateful functions; every record is
a checkpoint here, so its hot path stays its own.

userConfig: ``dead_letter`` (topic for records it cannot use), optional ``span`` and ``window``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from rtca.analytics.checks import event_time, number, product_id
from rtca.analytics.stats import DEFAULT_SPAN, DEFAULT_WINDOW, StatsRow, TickerStats
from rtca.functions.resume import DECODE_ERRORS, StatefulFunction, id_key, json_records, read_topic
from rtca.functions.runtime import Context, MessageIdKey, Publisher, ack_now, message_id_key

__all__ = ["ProductBook", "StatsBooks", "TickerStatsFunction", "read_topic", "stats_record"]

_LONG = 1 << 63


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
            stats, source.get("topic"), id_key(message_id) if message_id else None
        )

    def resume_all(self, payloads: Iterable[bytes]) -> int:
        """Feed the output topic's records in order; returns how many were usable."""
        used = 0
        for record in json_records(payloads):
            try:
                self.resume(record)
                used += 1
            except (*DECODE_ERRORS, AttributeError):
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


class TickerStatsFunction(StatefulFunction):
    """Per product: EWMA (span 10, adjust=False) and rolling(5) mean/std/var of the ticker price stream."""

    name = "ticker stats"

    def setup(self, context: Context, config: Mapping[str, Any]) -> StatsBooks:
        return StatsBooks(float(config.get("span", DEFAULT_SPAN)), int(config.get("window", DEFAULT_WINDOW)))

    def restore(self, context: Context) -> None:
        books: StatsBooks = self.engine
        used = books.resume_all(read_topic(context.get_pulsar_client(), self._output))
        context.get_logger().info("ticker stats: resumed %d products from %d records of %s", len(books.books), used,
                                  self._output)  # fmt: skip

    def process(self, input: Any, context: Context) -> None:  # noqa: A002 - the runtime's parameter name
        self.ensure_started(context)
        books: StatsBooks = self.engine
        publisher: Publisher = self._publisher  # type: ignore[assignment]
        message_id = context.get_message_id()
        topic = context.get_current_message_topic_name()
        try:
            ticker = orjson.loads(input)
            product = product_id(ticker)
            price = number(ticker["price"], "price", positive=True)
            event_ms = event_time(ticker)  # checked again: see `rtca.analytics.checks`
            sequence, trade_id = ticker.get("sequence"), ticker.get("trade_id")  # the record copies them (LONGs)
            if not ((sequence is None or type(sequence) is int and 0 <= sequence < _LONG)
                    and (trade_id is None or type(trade_id) is int and 0 <= trade_id < _LONG)):  # fmt: skip
                raise ValueError(f"sequence and trade_id must be integers in [0, 2**63): {sequence!r:.30}, "
                                 f"{trade_id!r:.30}")  # fmt: skip
            book = books.book(product)
            key = message_id_key(message_id)
            if book.already_done(topic, key):
                ack_now(context)  # redelivered after a restart: its output is already in the topic
                context.record_metric("redelivered_skipped", 1)
                return
            row = book.stats.update(price)  # raises ValueError on NaN/inf before changing any state
        except DECODE_ERRORS as exc:
            self._reject(context, input, f"{type(exc).__name__}: {exc}")
            return
        book.source_topic, book.source_id = topic, key
        record = stats_record(ticker, book, price, row, [*key, message_id.partition()])
        publisher.publish_then_ack(context, self._output, orjson.dumps(record), key=product, event_ms=event_ms,
                                   source=topic, message_id=message_id)  # fmt: skip

"""Order-book Pulsar Function: typed level2 (snapshot, l2update) -> book summaries at an event-time cadence.

Valid summaries go to the output topic (``coinbase-book``); a crossed book or an update before a snapshot goes, as
an alert record (rule ``book_crossed`` / ``book_no_snapshot``), to the ``alerts`` topic, and the product's book
waits for the next snapshot. Coinbase sends one only to a new subscriber: ingest reads these alerts and resubscribes
the product's level2 channel for it (`rtca.feed.resync`, at most once per product every 10 s; off with
``RTCA_FEED__RESYNC_BOOKS=false``, then the book waits for ingest's next reconnect).

Restart policy (a book has thousands of levels: no record can carry it): every summary carries the id of the
input it answers (``source``: topic, message_id) and of the snapshot its book was built from (``snapshot_id``).
A restarted instance reads the last summary per product from its output topic and re-reads its input topic from
the oldest of those snapshots to the last message stored at that moment, rebuilding every book as it was. Inputs
up to each product's last summary are applied silently; the summaries of later ones (lost, or never made before
the restart) are published, as the first run would have; problems are not reported a second time. Redelivered
inputs up to the last one re-read are then skipped by message id. So after a restart the book resumes exactly,
without a duplicate summary and without an invalid one. The re-reading needs the input's retention (the
workbench's namespace keeps 7 days, `RTCA_PULSAR__RETENTION_MINUTES`: a busy level2 feed passes ``max_replay``
within hours; a quiet product whose snapshot expired gets its updates ignored, as any update without a snapshot,
until its next snapshot); when it would read more than ``max_replay`` messages, the instance
drops every book instead and waits for the next snapshot of each product (publishing nothing for it until then),
as it does for a product without a summary yet whose snapshot lies before that point: the product's first update
after that is reported as ``book_no_snapshot``, so a running ingest asks for that snapshot.

userConfig: ``dead_letter``, ``alerts``, optional ``cadence_ms`` (1000), ``depth_bps`` (50), ``max_replay``
(2,000,000).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from rtca.analytics.alerts import book_problem_alert
from rtca.analytics.book import DEFAULT_CADENCE_MS, DEFAULT_DEPTH_BPS, BookTracker
from rtca.functions.resume import (
    DECODE_ERRORS,
    Output,
    StatefulFunction,
    id_key,
    id_list,
    json_records,
    read_from,
    read_topic,
)
from rtca.functions.runtime import Context, MessageIdKey, topic_of_partition, user_config

DEFAULT_MAX_REPLAY = 2_000_000


@dataclass(frozen=True, slots=True)
class LastSummary:
    """Where a product's last published summary came from."""

    snapshot: list[int]  # id of the snapshot its book was built from
    source: MessageIdKey  # the input it answered
    bucket: int  # its cadence bucket
    snapshot_key: MessageIdKey  # `snapshot`'s ordering key, once (compared with every message re-read)


class OrderBookFunction(StatefulFunction):
    name = "book"

    def setup(self, context: Context, config: Mapping[str, Any]) -> BookTracker:
        self._alerts = user_config(context, "alerts")
        self._max_replay = int(config.get("max_replay", DEFAULT_MAX_REPLAY))
        self._snapshots: dict[str, list[int]] = {}  # product -> id of the snapshot of its current book
        self._replayed: dict[str, MessageIdKey] = {}  # input topic -> last message re-read at start
        self._taken: dict[str, MessageIdKey] = {}  # input topic -> last message this instance took in
        return BookTracker(int(config.get("cadence_ms", DEFAULT_CADENCE_MS)),
                           float(config.get("depth_bps", DEFAULT_DEPTH_BPS)))  # fmt: skip

    def message_key(self, topic: str, record: Mapping[str, Any]) -> str | None:
        # Problems share the alerts topic with the alerts function's records, keyed by product: a key of their own
        # keeps compaction from dropping those.
        product = record.get("product_id")
        return product if topic == self._output else f"{product}/book"

    def already_done(self, key: str | None, topic: str, message_id: MessageIdKey) -> bool:
        """Re-read at start, or taken in already by this instance (a broker restart or topic unload redelivers what
        is unacknowledged to the running instance: a snapshot applied again would undo the updates after it).
        An input that is not is taken in now."""
        for last in (self._replayed.get(topic), self._taken.get(topic)):
            if last is not None and message_id <= last:
                return True
        self._taken[topic] = message_id
        return False

    def compute(self, record: dict[str, Any], context: Context) -> list[Output]:
        return self._apply(record, context.get_current_message_topic_name(), id_list(context.get_message_id()),
                           context)  # fmt: skip

    def _apply(self, record: dict[str, Any], topic: str, message_id: list[int], context: Context | None
               ) -> list[Output]:  # fmt: skip
        outputs = []
        product = record["product_id"]
        results = self.engine.update(record)
        if record.get("type") == "snapshot":
            self._snapshots[product] = message_id
        for out in results:
            if out.get("valid"):
                out["source"] = {"topic": topic, "message_id": message_id}
                out["snapshot_id"] = self._snapshots.get(product)
                outputs.append((self._output, out))
            else:
                if context is not None:
                    context.record_metric("book_problems", 1)
                outputs.append((self._alerts, book_problem_alert(out)))
        return outputs

    # --- restart -------------------------------------------------------------------------------------------------
    def restore(self, context: Context) -> None:
        client = context.get_pulsar_client()
        last: dict[str, dict[str, Any]] = {}
        for record in json_records(read_topic(client, self._output)):
            product = record.get("product_id")
            if (record.get("valid") and record.get("snapshot_id") and isinstance(record.get("source"), dict)
                    and isinstance(product, str) and product):  # fmt: skip
                last[product] = record
        inputs = set(context.get_input_topics())
        by_topic: dict[str, dict[str, LastSummary]] = {}
        starts: dict[str, list[int]] = {}
        for product, record in last.items():
            try:  # a summary that is not one of ours (corrupt, foreign, older format) defines no book
                topic, snapshot = record["source"]["topic"], [int(v) for v in record["snapshot_id"]]
                if not isinstance(topic, str) or topic_of_partition(topic) not in inputs or len(snapshot) != 4:
                    raise ValueError("not a summary's source / snapshot id")  # re-reading another topic (or a
                    # name the client refuses) would rebuild nothing of ours, or fail every start
                summary = LastSummary(snapshot, id_key(record["source"]["message_id"]),
                                      int(record["event_ms"]) // self.engine.cadence_ms, id_key(snapshot))  # fmt: skip
            except (*DECODE_ERRORS, IndexError):
                continue
            by_topic.setdefault(topic, {})[product] = summary
            if topic not in starts or summary.snapshot_key < id_key(starts[topic]):
                starts[topic] = snapshot
        for topic, products in by_topic.items():
            self._replay(context, topic, starts[topic], products)

    def _replay(self, context: Context, topic: str, start: Sequence[int], products: Mapping[str, LastSummary]
                ) -> None:  # fmt: skip
        """Re-read `topic` from `start` to its end, rebuilding the books; publish what the first run had not."""
        log = context.get_logger()
        outputs: list[Output] = []
        read, last_id = 0, None
        for message_id, payload in read_from(context.get_pulsar_client(), topic, start):
            read += 1
            if read > self._max_replay:
                log.warning("book: more than %d messages to re-read in %s: every book waits for a snapshot",
                            self._max_replay, topic)  # fmt: skip
                self.engine.products.clear()
                self._snapshots.clear()
                return
            last_id = message_id
            try:
                record = orjson.loads(payload)
                if not isinstance(record, dict):
                    raise TypeError("not a JSON object")
                product = self.key_of(record)  # what `process` refuses, replay skips
                known = products.get(product)
                if known is not None and message_id < known.snapshot_key:
                    continue  # before the snapshot of its last summary: that book starts there
                results = self._apply(record, topic, [*message_id, start[3] if len(start) > 3 else -1], None)
            except Exception:  # noqa: BLE001 - the first run sent it to the dead letter; replay never stops on it
                continue
            if known is not None and message_id <= known.source:
                if message_id == known.source:  # the cadence goes on from that summary
                    self.engine.state_of(product).last_bucket = known.bucket
                continue
            outputs += [(t, out) for t, out in results if t == self._output]  # problems were reported already
        if last_id is not None:
            self._replayed[topic] = last_id
        if outputs:
            self.publish(context, outputs, inputs=[])  # their inputs: settled when the subscription redelivers them
        log.info("book: rebuilt %d books from %d messages of %s, published %d summaries the first run had not",
                 len(products), read, topic, len(outputs))  # fmt: skip

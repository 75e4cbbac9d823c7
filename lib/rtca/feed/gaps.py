"""Gap detection: missed trades and out-of-order frames, per product.

- Trade ids are consecutive per product. Only `match` / `last_match` ids are checked (tickers batch cascading
  matches, so their ids may jump normally); once a product's matches are tracked, a heartbeat's `last_trade_id`
  ahead of the last match also reveals missed trades. An id at or below the last one is a repeat, not a gap.
- `sequence` is one counter per product shared across channels: a jump is normal (other channels' events used the
  numbers), a decrease means an old or replayed frame. It is checked per (product, channel): across channels a
  decrease is normal, e.g. a `last_match` or the ticker a (re)subscription starts with is older than the last
  heartbeat. Equal numbers are normal too (a match and its ticker share one; heartbeats repeat it when idle).
- A counter that went back for good (the exchange restarted its sequence numbers, or one bogus frame put the last
  value far ahead) would make every later frame look old and stop the trade checks: after `RESYNC_AFTER` frames
  in a row behind the last value, the detector takes the current one as its new start (counted in `resyncs`).
- A trade id more than `MAX_GAP` ahead is taken for a bogus frame, not for missed trades (one heartbeat with
  `last_trade_id` 2**63-1 made `missed_trades` 9e18 for good): passed over (counted in `implausible`), unless
  `RESYNC_AFTER` frames in a row are that far ahead (the numbers really moved on): then a new start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rtca.feed.protocol import CHANNEL_OF_TYPE, Heartbeat, Match, Message


log = logging.getLogger(__name__)

RESYNC_AFTER = 50
"""Frames in a row behind a counter's last value after which that value is taken as a new start."""

MAX_GAP = 100_000_000
"""More trade ids in one jump than the busiest product trades in months: a bogus frame, not missed trades."""

MAX_PRODUCTS = 10_000
"""Products (and product-channel pairs) whose counters are kept: an exchange lists about a thousand. Beyond, the
longest-known is forgotten (its next frame starts it again, a gap then unseen): a feed of ever new product ids
must not grow ingest's memory without end."""


@dataclass(frozen=True, slots=True)
class TradeGap:
    product_id: str
    first_missing: int
    last_missing: int
    detected_by: str
    """`match` or `heartbeat`."""

    @property
    def missed(self) -> int:
        return self.last_missing - self.first_missing + 1


class GapDetector:
    def __init__(self) -> None:
        self._last_trade: dict[str, int] = {}
        self._last_sequence: dict[tuple[str, str], int] = {}
        self._behind: dict[tuple[str, str], int] = {}
        self._ahead: dict[str, int] = {}
        self.implausible = 0
        self.missed_trades = 0
        self.gaps = 0
        self.out_of_order = 0
        self.resyncs = 0

    def observe(self, message: Message) -> TradeGap | None:
        """Check one frame; returns the trade gap it reveals, if any (also counted here)."""
        product = message.product
        if product is None:
            return None
        sequence = message.seq
        if sequence is not None:
            key = (product, CHANNEL_OF_TYPE.get(message.type, message.type))
            last = self._last_sequence.get(key)
            if last is not None and sequence < last:
                if not self._resync(key, "sequence", last, sequence):
                    self.out_of_order += 1
                    return None  # an old frame says nothing about trades we missed
                self._last_trade.pop(product, None)  # the product's trades start again from its next match
            self._last_sequence[key] = sequence
            bound(self._last_sequence)
            self._behind.pop(key, None)
        if isinstance(message, Match):
            return self._advance(product, message.trade_id, message.trade_id - 1, "match")
        if isinstance(message, Heartbeat) and product in self._last_trade:
            return self._advance(product, message.last_trade_id, message.last_trade_id, "heartbeat")
        return None

    def _advance(self, product: str, newest: int, missed_upto: int, detected_by: str) -> TradeGap | None:
        """The product's trades now reach `newest`; ids after the last one up to `missed_upto` were not seen."""
        last = self._last_trade.get(product)
        if last is not None and newest <= last:
            if newest == last or not self._resync((product, "trade_id"), "trade id", last, newest):
                return None  # a repeat
            self._last_trade[product] = newest
            return None
        self._behind.pop((product, "trade_id"), None)
        if last is not None and missed_upto - last > MAX_GAP:
            self._far_ahead(product, last, newest)
            return None
        self._ahead.pop(product, None)
        self._last_trade[product] = newest
        bound(self._last_trade)
        if last is None or missed_upto <= last:
            return None
        gap = TradeGap(product, last + 1, missed_upto, detected_by)
        self.gaps += 1
        self.missed_trades += gap.missed
        return gap

    def _far_ahead(self, product: str, last: int, newest: int) -> None:
        """One trade id implausibly far ahead of `last`: passed over, unless it is the `RESYNC_AFTER`th in a row
        (then a new start from it, no trades counted as missed)."""
        ahead = self._ahead[product] = self._ahead.get(product, 0) + 1
        bound(self._ahead)
        if ahead < RESYNC_AFTER:
            self.implausible += 1
            if ahead == 1:
                log.warning("%s: trade id %d is %d ahead of the last one (%d): taken for a bogus frame", product,
                            newest, newest - last, last)
            return
        del self._ahead[product]
        self.resyncs += 1
        self._last_trade[product] = newest
        log.warning("%s trade id: %d frames in a row far ahead of %d: starting again from %d", product, ahead, last,
                    newest)

    def _resync(self, key: tuple[str, str], counter: str, last: int, current: int) -> bool:
        """Count one frame behind `last`; True when it is the `RESYNC_AFTER`th in a row: start again from it."""
        behind = self._behind[key] = self._behind.get(key, 0) + 1
        bound(self._behind)
        if behind < RESYNC_AFTER:
            return False
        del self._behind[key]
        self.resyncs += 1
        log.warning("%s %s: %d frames in a row behind %d: starting again from %d", key[0], counter, behind, last,
                    current)
        return True


def bound(per_product: dict[Any, Any]) -> None:
    """Forget the longest-known entry of `per_product` beyond `MAX_PRODUCTS` (dicts keep insertion order)."""
    if len(per_product) > MAX_PRODUCTS:
        del per_product[next(iter(per_product))]

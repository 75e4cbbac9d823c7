"""What the functions after the router check of a typed record before it changes any state.

The router enforces the record contract (`rtca.functions.routing`), but anything that may publish to a typed topic
bypasses it, and one record outside the contract would otherwise poison a product for good: an event time far
ahead makes every later record of its product late (dropped by the windows, the order book's cadence and the alerts'
price window), a price of 1e200 makes the statistics' variance infinite (written as JSON null, which a restarted
function cannot resume from), a price written as text (``" 1_0 "``) is read by Python but dropped by Pinot, a
product id that is not a string cannot key the published records (the Pulsar client refuses it). These
checks raise TypeError / ValueError, which the functions turn into dead letters, and leave every other record alone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

MAX_EVENT_MS = 2**53
"""Event times stay below this (exact as a float): beyond, a window's bounds no longer fit the 64-bit integers that
JSON encoding and Pinot's LONG columns allow."""
MAX_AHEAD_MS = 5 * 60_000
"""An event time is at most this far after its receipt, and a receipt time this far after the clock of the process
that checks it (clock skew): the router's bounds too."""
MAX_PRODUCT_ID = 64
"""Product ids are short (``BTC-USD``): a longer one is a malformed frame for ingest and the router alike; kept as
state per product (gap detection, windows), a megabyte-long id each frame would grow their memory by as much."""
MAX_VALUE = 1e100
"""Prices, sizes and volumes stay below this, so that products and squares of them stay finite (the router's
bound too: far above any real value)."""


def now_ms() -> int:
    """This process's clock in epoch milliseconds: the bound of receipt times, and the receipt of a record without
    one."""
    return time.time_ns() // 1_000_000


def latest_time_ms() -> int:
    """The latest event time a record checked now can carry: MAX_AHEAD_MS after a receipt that is itself
    MAX_AHEAD_MS ahead of this clock. State read back at start with a time after it is none the functions kept."""
    return now_ms() + 2 * MAX_AHEAD_MS


def receipt_time(received_ms: int) -> int:
    """`received_ms` if it is at most MAX_AHEAD_MS after this process's clock, else ValueError. An event time may be
    MAX_AHEAD_MS after its receipt: a receipt far ahead (a wrong clock, or anyone publishing) would let one event far
    ahead through, and one from 2286 made every later record of its product late, for good."""
    now = now_ms()
    if received_ms > now + MAX_AHEAD_MS:
        raise ValueError(f"received_ms {received_ms} is {(received_ms - now) / 1000:.0f} s after the clock "
                         f"(at most {MAX_AHEAD_MS // 1000} s)")  # fmt: skip
    return received_ms


def event_time(record: Mapping[str, Any]) -> int:
    """A record's ``event_ms``: an int in [0, MAX_EVENT_MS), at most MAX_AHEAD_MS after its ``received_ms`` (itself
    an int checked by `receipt_time`), or, for a record without one (not the router's), after the time it is
    checked."""
    event_ms = record["event_ms"]
    if type(event_ms) is not int:
        raise TypeError(f"event_ms must be an int, not {event_ms!r:.40}")
    if not 0 <= event_ms < MAX_EVENT_MS:
        raise ValueError(f"event_ms out of range: {event_ms}")
    received_ms = record.get("received_ms")
    if received_ms is None:
        received_ms = now_ms()
    elif type(received_ms) is not int:  # the functions copy it into their records' LONG columns: Pinot fails on it
        raise TypeError(f"received_ms must be an int, not {received_ms!r:.40}")
    elif 0 <= received_ms < MAX_EVENT_MS:
        received_ms = receipt_time(received_ms)
    else:
        raise ValueError(f"received_ms out of range: {received_ms}")
    if event_ms > received_ms + MAX_AHEAD_MS:
        raise ValueError(f"event_ms {event_ms} is {(event_ms - received_ms) / 1000:.0f} s after its receipt "
                         f"(at most {MAX_AHEAD_MS // 1000} s)")  # fmt: skip
    return event_ms


def product_id(record: Mapping[str, Any]) -> str:
    """A record's ``product_id``: a string of 1 to MAX_PRODUCT_ID characters, else KeyError / TypeError / ValueError
    (a dead letter). It keys the product's state and the published records: the Pulsar client refuses any other key
    after the state has taken the record in, and the record would then be lost on redelivery."""
    product = record["product_id"]
    if type(product) is not str:
        raise TypeError(f"product_id must be a string, not {type(product).__name__}: {product!r:.40}")
    if not 0 < len(product) <= MAX_PRODUCT_ID:
        raise ValueError(f"product_id must have 1 to {MAX_PRODUCT_ID} characters, not {len(product)}")
    return product


def number(value: Any, name: str, *, positive: bool = False) -> float:
    """A JSON number (not text, not a bool) in [0, MAX_VALUE), or (0, MAX_VALUE) if `positive` (a price)."""
    kind = type(value)
    if kind is not float and kind is not int:
        raise TypeError(f"{name} must be a number, not {kind.__name__}: {value!r:.40}")
    if not (0 < value < MAX_VALUE if positive else 0 <= value < MAX_VALUE):  # also false for NaN
        raise ValueError(f"{name} out of range ({'> 0' if positive else '>= 0'}, < {MAX_VALUE:g}): {value!r:.40}")
    return float(value)


def long_field(record: Mapping[str, Any], name: str) -> int:
    """A field a record carries into a LONG column (times, sequences, trade ids, a gap's count): an integer in
    [0, 2**63) (what ingest and the router write); else the record is refused (ValueError: a dead letter) before
    any state keeps it: Pinot would drop (or mis-store) a row of text, a fraction or a larger number, a loss nobody
    sees."""
    value = record[name]
    if type(value) is not int or not 0 <= value < 2**63:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {value!r:.40}")
    return value


def optional_long(record: Mapping[str, Any], name: str) -> int | None:
    """`long_field`, or None for a field that is absent or null."""
    return None if record.get(name) is None else long_field(record, name)

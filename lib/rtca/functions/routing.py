"""Raw Coinbase frame -> typed record or dead letter: the router's pure logic (no Pulsar here).

The record contract (the fields every table in `infra/pinot/README.md` relies on):

- typed records keep Coinbase's field names, with decimal strings turned into JSON numbers (float64) and integer
  fields into integers, plus ``event_ms`` (the frame's ``time``, ``timestamp`` for auctions, else the receive time),
  ``received_ms`` and ``product_id`` (null for frames about no single product: status, subscriptions, error);
- frames the router cannot parse or validate become dead-letter records with a short ``reason`` code, a ``detail``,
  the source topic and message id, and the payload (UTF-8, invalid bytes replaced; ``payload_b64`` when the bytes
  were not UTF-8; cut at 64 KB with ``payload_bytes`` the full size). Beyond the fields' shapes, an event time
  before 1971 or more than 5 minutes after the frame's receipt is ``invalid_time`` (`MIN_EVENT_MS`, `MAX_AHEAD_MS`:
  one far-future record would make every later record of its product late to the windowed functions; the router
  takes its own clock for a receipt time more than 5 minutes after it, `rtca.functions.runtime.received_ms_of`),
  and a decimal of 1e100 or more ``invalid_field`` (`MAX_DECIMAL`), as is a frame carrying a column the tables derive
  (`RESERVED_FIELDS`) or a product id not of Coinbase's shape (``BTC-USD``: `PRODUCT_ID`); a frame ingest cut (over
  its size limit), or whose typed record Pulsar would refuse (`MAX_RECORD_BYTES`), is ``too_large``.

`route()` never raises: anything unexpected, even a bug here, ends as a dead letter with reason ``internal_error``.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from itertools import chain
from typing import Any, NamedTuple

import orjson

from rtca.analytics.checks import MAX_AHEAD_MS, MAX_PRODUCT_ID, MAX_VALUE, now_ms

#: Cut dead-letter payloads here (bytes); `payload_bytes` keeps the full size.
MAX_DEAD_LETTER_PAYLOAD = 64 * 1024
DEAD_LETTER = "dead_letter"
CONTROL = "control"
MAX_RECORD_BYTES = 5 * 1024 * 1024 - 64 * 1024
"""A typed record larger than this is a ``too_large`` dead letter: Pulsar refuses messages over its
``maxMessageSize`` (5 MiB by default; the room left is for the message's metadata), and a record it refuses would
stay unacknowledged, redelivered and refused after every restart. Converting can make a frame larger (a price
written ``"1e5"`` becomes ``100000.0``)."""
RESERVED_FIELDS = ("event_time",)
"""Fields a frame may not carry: columns the Pinot tables derive from the record (``event_time`` from ``event_ms``,
`infra/pinot`). Pinot 0.11 keeps a value already in the record instead of deriving it, so a frame's own would
replace the event time the router checked, or make Pinot drop the row without a trace."""


class Reason(StrEnum):
    """Dead-letter reason codes (stable: dashboards and alerts group by them)."""

    EMPTY = "empty"
    INVALID_JSON = "invalid_json"
    NOT_OBJECT = "not_object"
    MISSING_TYPE = "missing_type"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    INVALID_TIME = "invalid_time"
    TOO_LARGE = "too_large"
    INTERNAL_ERROR = "internal_error"


class Rejected(Exception):
    """A frame that breaks the contract; carries the dead-letter reason and a human detail."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Routed(NamedTuple):
    """Where one input frame goes: `channel` is a `rtca.settings.Topics` field name (``ticker`` ... ``control``,
    ``dead_letter``), `record` the record and `data` its JSON, `key` the partition key (the product, if any)."""

    channel: str
    record: dict[str, Any]
    data: bytes
    key: str | None = None
    event_ms: int | None = None

    @property
    def is_dead_letter(self) -> bool:
        return self.channel == DEAD_LETTER


# --- field conversions ---------------------------------------------------------------------------------------------
# Each converter has a fast path for well-formed input (the router's hot path: thousands of frames a second) and
# falls back to the careful checks that word the dead-letter detail.
_DECIMAL_PATTERN = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_DECIMAL = re.compile(_DECIMAL_PATTERN, re.ASCII).fullmatch
_DECIMAL_CHARS = "0123456789.eE+-"
"""What a decimal (`_DECIMAL`) is written with. A string of only these that `float()` accepts is a decimal: within
them Python's float syntax is the pattern's (no underscores, spaces, ``inf`` or ``nan`` can be written), so the
bulk paths check ``not text.strip(_DECIMAL_CHARS)`` (a C loop) and let ``float()`` reject the malformed rest."""
_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,12}))?(?:([Zz])|([+-])(\d{2}):?(\d{2}))?",
    re.ASCII,
).fullmatch
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
MAX_DECIMAL = MAX_VALUE
"""Decimal fields (prices, sizes, volumes) stay below this, so that the statistics' squares of them stay finite
(1e200 once made a product's EWMA variance infinite for good); far above any real one (30-day volumes of
meme coins in base units reach 1e14). The functions after the router check it again (`rtca.analytics.checks`)."""
MIN_EVENT_MS = 365 * 86_400_000
"""1971-01-01: Pinot refuses time values before it (a "1970-01-01T00:00:00+23:59" is even negative)."""
PRODUCT_ID = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}", re.ASCII).fullmatch
"""What a Coinbase Exchange product id looks like (``BTC-USD``, ``1INCH-USD``, ``USDT-USDC``): each function after the
router keeps state per product id, for good (a restart must resume it), so a frame of any other shape (``btc-usd``,
64 characters of noise) is ``invalid_field`` here rather than a key kept in five functions' memory and checkpoints.
It does not bound how many products there are: only the raw topic's publishers (ingest, whose trackers keep at most
`rtca.feed.gaps.MAX_PRODUCTS`) can."""
_SIDES = frozenset(("buy", "sell"))


def _number(name: str, value: Any, *, positive: bool = False) -> float:
    """A decimal field (Coinbase sends strings; numbers are accepted too) as a finite float >= 0 (> 0 if positive)."""
    if isinstance(value, str):
        if len(value) > 64 or _DECIMAL(value) is None:
            raise Rejected(Reason.INVALID_FIELD, f"{name}: not a decimal number: {value[:40]!r}")
        number = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise Rejected(Reason.INVALID_FIELD, f"{name}: expected a decimal string, got {type(value).__name__}")
    if not (0 < number < MAX_DECIMAL if positive else 0 <= number < MAX_DECIMAL):  # also false for NaN
        raise Rejected(Reason.INVALID_FIELD, f"{name}: out of range: {value!r}")
    return number


def _price(name: str, value: Any) -> float:
    return _number(name, value, positive=True)


def _integer(name: str, value: Any) -> int:
    """An integer field (sequence, trade ids): a JSON integer or a digit string, >= 0 and < 2**63. Not a float,
    even an integral one (ingest refuses those too, and counts the id as missed: both must agree)."""
    if isinstance(value, bool):
        raise Rejected(Reason.INVALID_FIELD, f"{name}: expected an integer, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise Rejected(Reason.INVALID_FIELD, f"{name}: expected an integer: {str(value)[:40]!r}")
    if not 0 <= number < 2**63:
        raise Rejected(Reason.INVALID_FIELD, f"{name}: out of range: {number}")
    return number


def _text(name: str, value: Any, *, max_len: int = 256) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise Rejected(Reason.INVALID_FIELD, f"{name}: expected a non-empty string of at most {max_len} characters")
    return value


def _side(name: str, value: Any) -> str:
    if type(value) is not str or value not in _SIDES:
        raise Rejected(Reason.INVALID_FIELD, f"{name}: expected 'buy' or 'sell', got {str(value)[:20]!r}")
    return value


@lru_cache(maxsize=4096)
def _epoch_day(year: int, month: int, day: int) -> int:
    return dt.date(year, month, day).toordinal() - _EPOCH_ORDINAL


_SECONDS: dict[str, int] = {}
"""`YYYY-MM-DDTHH:MM:SS` -> epoch ms, for the fast path: a feed sends hundreds of frames within one second."""
_SECOND = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})", re.ASCII).fullmatch


def _second_ms(prefix: str) -> int | None:
    """Epoch ms of a `YYYY-MM-DDTHH:MM:SS` prefix, None if it is not a valid one; valid ones are cached."""
    match = _SECOND(prefix)
    if match is None:
        return None
    year, month, day, hour, minute, second = map(int, match.groups())
    if not 1970 <= year < 2300 or hour > 23 or minute > 59 or second > 59:
        return None
    try:
        days = _epoch_day(year, month, day)
    except ValueError:
        return None
    if len(_SECONDS) >= 4096:
        _SECONDS.clear()
    ms = _SECONDS[prefix] = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1000
    return ms


def parse_time_ms(value: Any, name: str = "time") -> int:
    """ISO-8601 (as Coinbase sends it: UTC, 0-9 fraction digits, 'Z' or an offset) -> epoch milliseconds.

    Tolerant of the fraction's length, strict about everything else; a time without a zone is taken as UTC.
    """
    # fast path: `YYYY-MM-DDTHH:MM:SS[.fff...]Z`
    if type(value) is str and 20 <= len(value) <= 33 and value[-1] == "Z":
        prefix = value[:19]
        second = _SECONDS.get(prefix)
        if second is None:
            second = _second_ms(prefix)
        if second is not None:
            if len(value) == 20:
                return second
            fraction = value[20:-1]
            if value[19] == "." and fraction.isdigit() and fraction.isascii():
                return second + int((fraction + "00")[:3])
    return _parse_time(value, name)


def _parse_time(value: Any, name: str) -> int:
    if not isinstance(value, str) or len(value) > 40:
        raise Rejected(Reason.INVALID_TIME, f"{name}: expected an ISO-8601 string")
    match = _TIME(value)
    if match is None:
        raise Rejected(Reason.INVALID_TIME, f"{name}: not ISO-8601: {value!r}")
    year, month, day, hour, minute, second, fraction, _z, sign, off_h, off_m = match.groups()
    try:
        days = _epoch_day(int(year), int(month), int(day))
    except ValueError as exc:
        raise Rejected(Reason.INVALID_TIME, f"{name}: {exc}: {value!r}") from None
    h, m, s = int(hour), int(minute), int(second)
    if h > 23 or m > 59 or s > 59 or not 1970 <= int(year) < 2300:
        raise Rejected(Reason.INVALID_TIME, f"{name}: out of range: {value!r}")
    ms = (((days * 24 + h) * 60 + m) * 60 + s) * 1000
    if fraction:
        ms += int((fraction + "00")[:3])
    if sign:
        offset = (int(off_h) * 60 + int(off_m)) * 60_000
        if offset >= 24 * 3_600_000:
            raise Rejected(Reason.INVALID_TIME, f"{name}: bad UTC offset: {value!r}")
        ms -= offset if sign == "+" else -offset
    return ms


# --- per-type shapes -----------------------------------------------------------------------------------------------
Converter = Callable[[str, Any], Any]


def _levels(name: str, value: Any) -> list[list[float]]:
    """Snapshot bids/asks: [[price, size], ...] -> numbers.

    A snapshot holds thousands of levels, so the common case is checked in bulk, with no Python code per level:
    all lists of two (the sets of their types and lengths), all strings written with decimal characters only (one
    `str.strip` over the joined values), all decimals (`float()` of each), prices > 0 and sizes >= 0 (min/max).
    Anything else takes the per-level path, which names the offending level."""
    if type(value) is list and value and set(map(type, value)) == _LIST_TYPE and set(map(len, value)) == _PAIR_LEN:
        flat = list(chain.from_iterable(value))
        try:
            decimal_text = not "".join(flat).strip(_DECIMAL_CHARS)
        except TypeError:  # not all strings
            decimal_text = False
        if decimal_text:
            try:
                numbers = list(map(float, flat))
            except ValueError:  # e.g. "1.2.3": the per-level path words the detail
                numbers = []
            if numbers:
                prices, sizes = numbers[0::2], numbers[1::2]
                if min(prices) > 0 and max(prices) < MAX_DECIMAL and min(sizes) >= 0 and max(sizes) < MAX_DECIMAL:
                    return list(map(list, zip(prices, sizes)))
    return _levels_one_by_one(name, value)


_LIST_TYPE, _PAIR_LEN = {list}, {2}


def _levels_one_by_one(name: str, value: Any) -> list[list[float]]:
    if not isinstance(value, list):
        raise Rejected(Reason.INVALID_FIELD, f"{name}: expected a list of [price, size]")
    out = []
    for level in value:
        if type(level) is not list or len(level) != 2:
            raise Rejected(Reason.INVALID_FIELD, f"{name}: expected [price, size], got {str(level)[:40]!r}")
        out.append([_price(name, level[0]), _number(name, level[1])])
    return out


def _changes(name: str, value: Any) -> list[list[Any]]:
    """l2update changes: [[side, price, size], ...] -> side stays, numbers become numbers (in place: these lists
    are the decoded frame's own, and not allocating new ones matters at thousands of frames a second)."""
    if not isinstance(value, list):
        raise Rejected(Reason.INVALID_FIELD, f"{name}: expected a list of [side, price, size]")
    for change in value:
        if type(change) is list and len(change) == 3:
            side, price, size = change
            if (type(side) is str and side in _SIDES and type(price) is str and type(size) is str
                    and not price.strip(_DECIMAL_CHARS) and not size.strip(_DECIMAL_CHARS)):  # fmt: skip
                try:
                    p, q = float(price), float(size)
                except ValueError:  # not a decimal after all: the careful path below words the detail
                    p = q = -1.0
                if 0 < p < MAX_DECIMAL and 0 <= q < MAX_DECIMAL:
                    change[1] = p
                    change[2] = q
                    continue
            change[:] = [_side(name, side), _price(name, price), _number(name, size)]
            continue
        raise Rejected(Reason.INVALID_FIELD, f"{name}: expected [side, price, size], got {str(change)[:40]!r}")
    return value


def _objects(converters: Mapping[str, Converter]) -> Converter:
    """A list of objects (status products/currencies) whose known numeric fields become numbers."""

    def convert(name: str, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise Rejected(Reason.INVALID_FIELD, f"{name}: expected a list")
        out = []
        for item in value:
            if not isinstance(item, dict):
                raise Rejected(Reason.INVALID_FIELD, f"{name}: expected objects")
            item = dict(item)
            for key, conv in converters.items():
                if item.get(key) not in (None, ""):
                    item[key] = conv(f"{name}.{key}", item[key])
            out.append(item)
        return out

    return convert


def _list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise Rejected(Reason.INVALID_FIELD, f"{name}: expected a list")
    return value


@dataclass(frozen=True, slots=True)
class Shape:
    """What one Coinbase message type must hold and how its fields convert."""

    channel: str
    required: tuple[str, ...] = ()
    #: Decimal fields (>= 0), price fields (> 0) and integer fields (>= 0), when present.
    decimals: tuple[str, ...] = ()
    prices: tuple[str, ...] = ()
    integers: tuple[str, ...] = ()
    #: Other fields with their own converters.
    fields: Mapping[str, Converter] = field(default_factory=dict)
    #: The field holding the event time; absent (or None) -> the receive time.
    time_field: str | None = "time"
    time_required: bool = False
    has_product: bool = True
    #: (fields, exclusive lower bound) pairs for `convert`'s loop: prices must be > 0, other decimals >= 0.
    numeric: tuple[tuple[tuple[str, ...], float], ...] = field(init=False)

    def __post_init__(self) -> None:
        pairs = tuple((names, low) for names, low in ((self.prices, 0.0), (self.decimals, -1.0)) if names)
        object.__setattr__(self, "numeric", pairs)


_TRADE = {"side": _side, "maker_order_id": _text, "taker_order_id": _text}
_TRADE_REQUIRED = ("trade_id", "sequence", "price", "size", "side")

SHAPES: dict[str, Shape] = {
    "ticker": Shape(
        "ticker", required=("sequence", "price"), prices=("price",), integers=("sequence", "trade_id"),
        decimals=("open_24h", "volume_24h", "low_24h", "high_24h", "volume_30d", "best_bid", "best_bid_size",
                  "best_ask", "best_ask_size", "last_size"),
        fields={"side": _side},
    ),
    "match": Shape("matches", required=_TRADE_REQUIRED, prices=("price",), decimals=("size",),
                   integers=("trade_id", "sequence"), fields=_TRADE, time_required=True),
    "last_match": Shape("matches", required=_TRADE_REQUIRED, prices=("price",), decimals=("size",),
                        integers=("trade_id", "sequence"), fields=_TRADE, time_required=True),
    "l2update": Shape("level2", required=("changes",), integers=("sequence",), fields={"changes": _changes},
                      time_required=True),
    "snapshot": Shape("level2", required=("bids", "asks"), integers=("sequence",),
                      fields={"bids": _levels, "asks": _levels}),
    "heartbeat": Shape("heartbeat", required=("sequence", "last_trade_id"), integers=("sequence", "last_trade_id"),
                       time_required=True),
    "status": Shape(
        "status", required=("products",),
        fields={
            "products": _objects({
                "base_min_size": _number, "base_max_size": _number, "quote_increment": _number,
                "base_increment": _number, "min_market_funds": _number, "max_market_funds": _number,
                "max_slippage": _number,
            }),
            "currencies": _objects({"min_size": _number, "max_precision": _number}),
        },
        time_field=None, has_product=False,
    ),
    "rfq_match": Shape("rfq_matches", required=("trade_id", "price", "size", "side"), prices=("price",),
                       decimals=("size",), integers=("trade_id", "sequence"), fields=_TRADE, time_required=True),
    "auction": Shape(
        "auction", required=("sequence", "auction_state"), integers=("sequence",),
        decimals=("best_bid_price", "best_bid_size", "best_ask_price", "best_ask_size", "open_price", "open_size"),
        fields={"auction_state": _text, "can_open": _text}, time_field="timestamp",
    ),
    "subscriptions": Shape(CONTROL, required=("channels",), fields={"channels": _list}, time_field=None,
                           has_product=False),
    "error": Shape(CONTROL, required=("message",), fields={"message": _text, "reason": _text}, time_field=None,
                   has_product=False),
}  # fmt: skip
"""Message type -> shape. Types not listed (e.g. the authenticated `full` channel's) are dead letters. Required fields
are those `rtca.feed.protocol` requires, so ingest and router agree on what is malformed."""

CHANNELS: tuple[str, ...] = tuple(dict.fromkeys(shape.channel for shape in SHAPES.values()))
"""Every channel a typed record can go to (each a `Topics` field name)."""


def convert(message: dict[str, Any], received_ms: int) -> Routed:
    """Validate and convert one decoded frame in place; raises `Rejected` when it breaks the contract."""
    kind = message.get("type")
    if kind is None:
        raise Rejected(Reason.MISSING_TYPE, "no 'type' field")
    shape = SHAPES.get(kind) if type(kind) is str else None
    if shape is None:
        raise Rejected(Reason.UNKNOWN_TYPE, f"unknown type {str(kind)[:40]!r}")
    get = message.get
    for name in shape.required:
        if get(name) is None:
            raise Rejected(Reason.MISSING_FIELD, f"{kind}: no {name!r}")
    for name in RESERVED_FIELDS:
        if name in message:
            raise Rejected(Reason.INVALID_FIELD, f"{kind}: {name!r} is reserved (the tables derive it from event_ms)")
    for names, low in shape.numeric:
        for name in names:
            value = get(name)
            if value is None:
                continue
            if type(value) is str and _DECIMAL(value):
                number = float(value)
                if low < number < MAX_DECIMAL and number >= 0:
                    message[name] = number
                    continue
            message[name] = _number(name, value, positive=low == 0.0)
    for name in shape.integers:
        value = get(name)
        if value is not None and not (type(value) is int and 0 <= value < 2**63):
            message[name] = _integer(name, value)
    for name, conv in shape.fields.items():
        value = get(name)
        if value is not None:
            message[name] = conv(name, value)
    product = None
    if shape.has_product:
        product = get("product_id")
        if product is None:
            raise Rejected(Reason.MISSING_FIELD, f"{kind}: no 'product_id'")
        if type(product) is not str or PRODUCT_ID(product) is None:
            _text("product_id", product, max_len=MAX_PRODUCT_ID)
            raise Rejected(Reason.INVALID_FIELD, f"{kind}: product_id {product[:40]!r} is not a Coinbase product id "
                                                 f"(BASE-QUOTE: 1 to 20 capital letters or digits each)")  # fmt: skip
    event_ms = received_ms
    if shape.time_field is not None:
        raw_time = get(shape.time_field)
        if raw_time is not None:
            event_ms = parse_time_ms(raw_time, shape.time_field)
        elif shape.time_required:
            raise Rejected(Reason.MISSING_FIELD, f"{kind}: no {shape.time_field!r}")
    if event_ms < MIN_EVENT_MS:
        raise Rejected(Reason.INVALID_TIME, f"{shape.time_field}: before 1971, outside Pinot's time range")
    if event_ms > received_ms + MAX_AHEAD_MS:
        raise Rejected(Reason.INVALID_TIME, f"{shape.time_field}: {(event_ms - received_ms) / 1000:.0f} s after it "
                                            f"was received (at most {MAX_AHEAD_MS // 1000} s)")
    message["event_ms"] = event_ms
    message["received_ms"] = received_ms
    message["product_id"] = product
    data = orjson.dumps(message)
    if len(data) > MAX_RECORD_BYTES:
        raise Rejected(Reason.TOO_LARGE, f"{kind}: the typed record has {len(data)} bytes, more than Pulsar takes "
                                         f"in a message ({MAX_RECORD_BYTES})")  # fmt: skip
    return _new_routed(Routed, (shape.channel, message, data, product, event_ms))


_new_routed = tuple.__new__
"""`Routed(...)` without the NamedTuple's Python-level `__new__` (half the cost of building one, per frame)."""


def dead_letter_record(
    reason: str,
    detail: str,
    payload: bytes,
    *,
    source_topic: str | None,
    source_message_id: str | None,
    received_ms: int,
    product_id: str | None = None,
    payload_bytes: int | None = None,
) -> dict[str, Any]:
    """The dead-letter record of the contract (also used by other functions for their own rejects);
    `payload_bytes`: the size of the whole payload when `payload` is only its start."""
    size = len(payload) if payload_bytes is None else payload_bytes
    cut = payload[:MAX_DEAD_LETTER_PAYLOAD]
    record: dict[str, Any] = {
        "reason": str(reason),
        "detail": detail[:1000],
        "source_topic": source_topic,
        "source_message_id": source_message_id,
        "event_ms": received_ms,
        "received_ms": received_ms,
        "product_id": product_id,
        "payload_bytes": size,
    }
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        record["payload"] = cut.decode("utf-8", "replace")
        record["payload_b64"] = base64.b64encode(cut).decode("ascii")
    else:  # a cut may split the last character: drop that partial tail only
        record["payload"] = cut.decode("utf-8", "ignore")
    return record


def route(
    payload: bytes | str,
    *,
    received_ms: int | None = None,
    source_topic: str | None = None,
    source_message_id: str | None = None,
    product_hint: str | None = None,
    cut_from: int | None = None,
) -> Routed:
    """One raw frame -> a typed `Routed` record, or a dead letter. Never raises. `cut_from`: the frame's size when
    `payload` is only its start (ingest publishes the start of an oversized frame, `rtca.feed.ingest`)."""
    data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else bytes(payload)
    if received_ms is None:
        received_ms = now_ms()
    try:
        if cut_from is not None:
            raise Rejected(Reason.TOO_LARGE, f"a frame of {cut_from} bytes, more than ingest publishes; the record "
                                             f"holds its first {len(data)}")  # fmt: skip
        if not data.strip():
            raise Rejected(Reason.EMPTY, "empty payload")
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise Rejected(Reason.INVALID_JSON, str(exc)) from None
        if not isinstance(message, dict):
            raise Rejected(Reason.NOT_OBJECT, f"expected a JSON object, got {type(message).__name__}")
        return convert(message, received_ms)
    except Rejected as exc:
        reason, detail = exc.reason, exc.detail
    except Exception as exc:  # noqa: BLE001 - the router must never crash on input; a bug here is a dead letter
        reason, detail = Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
    product = product_hint if isinstance(product_hint, str) and 0 < len(product_hint) <= MAX_PRODUCT_ID else None
    record = dead_letter_record(
        reason, detail, data, source_topic=source_topic, source_message_id=source_message_id,
        received_ms=received_ms, product_id=product, payload_bytes=cut_from,
    )  # fmt: skip
    return Routed(DEAD_LETTER, record, encode_dead_letter(record), product, received_ms)


def encode_dead_letter(record: dict[str, Any]) -> bytes:
    """JSON of a dead-letter record; text that cannot be UTF-8 (lone surrogates) is escaped rather than fatal."""
    try:
        return orjson.dumps(record)
    except TypeError:
        safe = {
            k: v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v
            for k, v in record.items()
        }
        return orjson.dumps(safe)

"""The Coinbase Exchange websocket protocol: typed messages, a tolerant parser and frame builders.

Every frame parses to one `Message`. Prices and sizes become `Decimal` (the exchange sends them as strings so that
no precision is lost), times become timezone-aware `datetime` whatever the number of fraction digits. A frame of a
type we do not know becomes `Unknown` with its raw object: never dropped. A frame that is not a JSON object with a
string `type`, or whose known fields have the wrong type, raises `MalformedFrame` with a short code, so that ingest
can keep it, count it and let the router dead-letter it. A sample frame of every type is in
tests/feed/test_protocol.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, ClassVar, Literal, NamedTuple

import orjson

from rtca.analytics.checks import MAX_PRODUCT_ID
from rtca.settings import FeedSettings

COINBASE_WS_URL = FeedSettings().coinbase_url
"""The public market-data endpoint by default (no key needed for the channels below); where settings are read
(ingest, `rtca record`) `RTCA_FEED__COINBASE_URL` overrides it."""

LIVE_PRODUCTS: tuple[str, ...] = (
    "BTC-USD", "ETH-USD", "USDT-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD", "LTC-USD",
)
LIVE_CHANNELS: tuple[str, ...] = ("ticker", "matches", "level2_batch", "heartbeat", "status")

END_OF_STREAM = 4000
"""Close code our replay server and simulator send when a finite stream ends (a private-use code Coinbase never
sends), so a client stops instead of reconnecting."""

CHANNELS: frozenset[str] = frozenset({
    "heartbeat", "status", "ticker", "ticker_batch", "level2", "level2_batch", "level2_50", "matches", "full",
    "level3", "auctionfeed", "rfq_matches",
})
"""Channel names a subscription may name."""

DATA_CHANNEL: Mapping[str, str] = {"ticker_batch": "ticker", "level2_batch": "level2", "level2_50": "level2"}
"""Subscription channel -> the channel whose frames it carries (our servers serve `level2_batch` from level2 data)."""

PRODUCTLESS_CHANNELS: frozenset[str] = frozenset({"status"})

CHANNEL_OF_TYPE: Mapping[str, str] = {
    "snapshot": "level2", "l2update": "level2", "ticker": "ticker", "match": "matches", "last_match": "matches",
    "heartbeat": "heartbeat", "status": "status", "rfq_match": "rfq_matches", "auction": "auctionfeed",
}
"""Message type -> the (data) channel that carries it."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_US = timedelta(microseconds=1)

Side = Literal["buy", "sell"]


class MalformedFrame(ValueError):
    """A frame ingest cannot type. `code`: not_json | not_object | no_type | bad_fields | oversized | internal_error (a
    parser error nothing foresaw: the frame is still published, see `rtca.feed.ingest.raw_record`)."""

    def __init__(self, code: str, detail: str, obj: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.obj = obj


# --- time --------------------------------------------------------------------------------------------------------
def parse_time(value: object) -> datetime:
    """ISO-8601 -> aware UTC datetime; any number of fraction digits (beyond 6 are cut), `Z` or an offset."""
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO-8601 string, got {type(value).__name__}")
    parsed = datetime.fromisoformat(value)
    try:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset that leaves datetime's range
        raise ValueError(f"time out of range: {value!r:.40}") from None


def epoch_ms(moment: datetime) -> int:
    """Exact integer epoch milliseconds (no float rounding)."""
    return (moment - _EPOCH) // _MS


def epoch_us(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


def format_time_us(micros: int) -> str:
    """Epoch microseconds -> the exchange's time format (`2021-04-17T16:43:30.244075Z`); ValueError beyond year
    9999."""
    seconds, fraction = divmod(micros, 1_000_000)
    try:
        return f"{_format_second(seconds)}.{fraction:06d}Z"
    except OverflowError:
        raise ValueError(f"epoch microseconds out of range: {micros}") from None


@lru_cache(maxsize=8)
def _format_second(seconds: int) -> str:
    """The date and time of a whole second: the simulator stamps thousands of frames a second, and `strftime` was a
    tenth of its cost."""
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


# --- field converters (a field's annotation picks its converter) -------------------------------------------------
def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


INT_LIMIT = 2**63
"""Integer fields (sequence, trade ids) are >= 0 and below this, as the router and Pinot's LONG columns require: a
larger one would also break the JSON encoding of what ingest derives from it (a gap's size in feed health)."""


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise TypeError(f"expected an integer, got {value!r:.40}")
    if not 0 <= number < INT_LIMIT:
        raise ValueError(f"integer out of range: {value!r:.40}")
    return number


def _decimal(value: object) -> Decimal:
    """Strings (the protocol) and JSON numbers (lenient); never NaN or infinite."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError(f"expected a decimal string, got {type(value).__name__}")
    number = Decimal(value if isinstance(value, str) else repr(value))
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r:.40}")
    return number


def _side(value: object) -> Side:
    if value not in ("buy", "sell"):
        raise ValueError(f"side must be buy or sell, got {value!r:.40}")
    return value  # type: ignore[return-value]


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


class Level(NamedTuple):
    price: Decimal
    size: Decimal


class Change(NamedTuple):
    """One level2 change: the new absolute size at that price; 0 removes the level."""

    side: Side
    price: Decimal
    size: Decimal


class Channel(NamedTuple):
    name: str
    product_ids: tuple[str, ...]


def _levels(value: object) -> tuple[Level, ...]:
    levels = []
    for entry in _list(value):
        if not isinstance(entry, list) or len(entry) != 2:
            raise ValueError(f"a level is [price, size], got {entry!r:.60}")
        levels.append(Level(_decimal(entry[0]), _decimal(entry[1])))
    return tuple(levels)


def _changes(value: object) -> tuple[Change, ...]:
    changes = []
    for entry in _list(value):
        if not isinstance(entry, list) or len(entry) != 3:
            raise ValueError(f"a change is [side, price, size], got {entry!r:.60}")
        changes.append(Change(_side(entry[0]), _decimal(entry[1]), _decimal(entry[2])))
    return tuple(changes)


def _strings(value: object) -> tuple[str, ...]:
    return tuple(_str(item) for item in _list(value))


def _channels(value: object) -> tuple[Channel, ...]:
    """`["ticker", {"name": "matches", "product_ids": [...]}]`; a bare name has no products of its own."""
    channels = []
    for entry in _list(value):
        if isinstance(entry, str):
            channels.append(Channel(entry, ()))
        elif isinstance(entry, dict):
            channels.append(Channel(_str(entry.get("name")), _strings(entry.get("product_ids", []))))
        else:
            raise TypeError(f"a channel is a name or an object, got {entry!r:.60}")
    return tuple(channels)


def _objects(value: object) -> tuple[dict[str, Any], ...]:
    items = _list(value)
    if not all(isinstance(item, dict) for item in items):
        raise TypeError("expected a list of objects")
    return tuple(items)


_CONVERTERS: dict[str, Callable[[object], Any]] = {
    "str": _str, "int": _int, "Decimal": _decimal, "datetime": parse_time, "Side": _side,
    "tuple[str, ...]": _strings, "tuple[Level, ...]": _levels, "tuple[Change, ...]": _changes,
    "tuple[Channel, ...]": _channels, "tuple[dict[str, Any], ...]": _objects,
}


# --- messages ----------------------------------------------------------------------------------------------------
class Message:
    """Base of every typed frame. Subclasses are frozen dataclasses whose field names are the exchange's own."""

    __slots__ = ()
    TYPES: ClassVar[tuple[str, ...]] = ()
    TIME_FIELD: ClassVar[str] = "time"
    _fields: ClassVar[tuple[tuple[str, Callable[[object], Any], bool], ...]]

    type: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.TYPES:
            MESSAGE_TYPES[name] = cls

    @property
    def product(self) -> str | None:
        return getattr(self, "product_id", None)

    @property
    def seq(self) -> int | None:
        return getattr(self, "sequence", None)

    @property
    def event_time(self) -> datetime | None:
        return getattr(self, self.TIME_FIELD, None)

    @property
    def event_ms(self) -> int | None:
        """The exchange's time of the event as epoch ms (None for frames without one, e.g. snapshot)."""
        moment = self.event_time
        return None if moment is None else epoch_ms(moment)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Message:
        """Typed message from a decoded frame; `MalformedFrame("bad_fields")` when a field is missing or wrong."""
        values = {}
        for name, convert, optional in _field_specs(cls):
            raw = obj.get(name)
            if raw is None:
                if not optional:
                    raise MalformedFrame("bad_fields", f"{obj.get('type')} without {name}", obj)
                values[name] = None
                continue
            try:
                values[name] = convert(raw)
            except (TypeError, ValueError, ArithmeticError) as exc:
                raise MalformedFrame("bad_fields", f"{obj.get('type')}.{name}: {exc}", obj) from None
        product = values.get("product_id")
        if product is not None and not 0 < len(product) <= MAX_PRODUCT_ID:
            raise MalformedFrame("bad_fields", f"{obj.get('type')}.product_id: not 1 to {MAX_PRODUCT_ID} characters "
                                               f"({len(product)})", obj)  # fmt: skip
        return cls(**values)


MESSAGE_TYPES: dict[str, type[Message]] = {}
"""Frame `type` -> message class; filled by `Message.__init_subclass__`."""


def _field_specs(cls: type[Message]) -> tuple[tuple[str, Callable[[object], Any], bool], ...]:
    """(name, converter, optional) per dataclass field, derived once from the annotations."""
    specs = cls.__dict__.get("_fields")
    if specs is None:
        built = []
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            annotation = str(field.type)
            optional = annotation.endswith(" | None")
            built.append((field.name, _CONVERTERS[annotation.removesuffix(" | None")], optional))
        specs = tuple(built)
        cls._fields = specs
    return specs


_message = dataclasses.dataclass(frozen=True, slots=True, kw_only=True)


@_message
class Subscribe(Message):
    """Client request (`subscribe` / `unsubscribe`)."""

    TYPES = ("subscribe", "unsubscribe")
    type: str
    channels: tuple[Channel, ...]
    product_ids: tuple[str, ...] | None = None

    def requested(self) -> dict[str, tuple[str, ...]]:
        """Channel -> products, bare channel names taking the top-level `product_ids`."""
        top = self.product_ids or ()
        wanted: dict[str, tuple[str, ...]] = {}
        for channel in self.channels:
            products = channel.product_ids or top
            wanted[channel.name] = tuple(dict.fromkeys(wanted.get(channel.name, ()) + products))
        return wanted


@_message
class Subscriptions(Message):
    """Server reply: the full current subscription set."""

    TYPES = ("subscriptions",)
    type: str
    channels: tuple[Channel, ...]


@_message
class Heartbeat(Message):
    TYPES = ("heartbeat",)
    type: str
    product_id: str
    sequence: int
    last_trade_id: int
    time: datetime


@_message
class Status(Message):
    TYPES = ("status",)
    type: str
    products: tuple[dict[str, Any], ...]
    currencies: tuple[dict[str, Any], ...] | None = None


@_message
class Ticker(Message):
    """`side` is the taker's. Older tickers lack best_bid_size / best_ask_size; the first one after a subscribe
    may lack the trade fields."""

    TYPES = ("ticker",)
    type: str
    product_id: str
    sequence: int
    price: Decimal
    open_24h: Decimal | None = None
    volume_24h: Decimal | None = None
    low_24h: Decimal | None = None
    high_24h: Decimal | None = None
    volume_30d: Decimal | None = None
    best_bid: Decimal | None = None
    best_bid_size: Decimal | None = None
    best_ask: Decimal | None = None
    best_ask_size: Decimal | None = None
    side: Side | None = None
    time: datetime | None = None
    trade_id: int | None = None
    last_size: Decimal | None = None


@_message
class Match(Message):
    """`match`, or `last_match` (the first frame per product on the matches channel). `side` is the MAKER's."""

    TYPES = ("match", "last_match")
    type: str
    product_id: str
    trade_id: int
    sequence: int
    price: Decimal
    size: Decimal
    side: Side
    time: datetime
    maker_order_id: str | None = None
    taker_order_id: str | None = None


@_message
class Snapshot(Message):
    TYPES = ("snapshot",)
    type: str
    product_id: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    time: datetime | None = None


@_message
class L2Update(Message):
    TYPES = ("l2update",)
    type: str
    product_id: str
    changes: tuple[Change, ...]
    time: datetime


@_message
class RfqMatch(Message):
    TYPES = ("rfq_match",)
    type: str
    product_id: str
    trade_id: int
    price: Decimal
    size: Decimal
    side: Side
    time: datetime
    maker_order_id: str | None = None
    taker_order_id: str | None = None


@_message
class Auction(Message):
    TYPES = ("auction",)
    TIME_FIELD = "timestamp"
    type: str
    product_id: str
    sequence: int
    auction_state: str
    timestamp: datetime | None = None
    best_bid_price: Decimal | None = None
    best_bid_size: Decimal | None = None
    best_ask_price: Decimal | None = None
    best_ask_size: Decimal | None = None
    open_price: Decimal | None = None
    open_size: Decimal | None = None
    can_open: str | None = None


@_message
class Error(Message):
    TYPES = ("error",)
    type: str
    message: str
    reason: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Unknown(Message):
    """A frame whose type we do not know, kept whole."""

    type: str
    raw: Mapping[str, Any]

    @property
    def product(self) -> str | None:
        value = self.raw.get("product_id")
        return value if isinstance(value, str) else None

    @property
    def seq(self) -> int | None:
        value = self.raw.get("sequence")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def event_time(self) -> datetime | None:
        try:
            return parse_time(self.raw.get("time"))
        except (TypeError, ValueError):
            return None


# --- parsing -----------------------------------------------------------------------------------------------------
def parse_frame(data: bytes | str) -> Message:
    """One websocket frame -> `Message`; raises `MalformedFrame`."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedFrame("not_json", str(exc)) from None
    return parse_message(obj)


def parse_message(obj: object) -> Message:
    """A decoded frame -> `Message`; unknown types -> `Unknown`; raises `MalformedFrame`."""
    if not isinstance(obj, dict):
        raise MalformedFrame("not_object", f"a frame is a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        raise MalformedFrame("no_type", "the frame has no string `type`", obj)
    cls = MESSAGE_TYPES.get(kind)
    return Unknown(type=kind, raw=obj) if cls is None else cls.from_dict(obj)


def frame_product(obj: Mapping[str, Any] | None) -> str | None:
    """`product_id` of a possibly malformed frame, when it is a string."""
    value = obj.get("product_id") if obj else None
    return value if isinstance(value, str) else None


# --- building frames ---------------------------------------------------------------------------------------------
def dumps(obj: Mapping[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def subscribe_frame(products: Iterable[str], channels: Iterable[str], *, kind: str = "subscribe") -> str:
    return dumps({"type": kind, "product_ids": list(products), "channels": list(channels)})


def subscriptions_frame(subscribed: Mapping[str, Iterable[str]]) -> str:
    return dumps({
        "type": "subscriptions",
        "channels": [{"name": name, "product_ids": list(products)} for name, products in subscribed.items()],
    })


def error_frame(message: str, reason: str) -> str:
    return dumps({"type": "error", "message": message, "reason": reason})

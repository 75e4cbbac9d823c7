"""Every message type parses to its typed form; numbers keep their precision; bad frames raise MalformedFrame."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from rtca.feed import protocol
from rtca.feed.capture import Capture
from rtca.feed.protocol import (
    Auction,
    Change,
    Channel,
    Error,
    Heartbeat,
    L2Update,
    Level,
    MalformedFrame,
    Match,
    RfqMatch,
    Snapshot,
    Status,
    Subscribe,
    Subscriptions,
    Ticker,
    Unknown,
    parse_frame,
)

TICKER_NEW = (
    '{"type":"ticker","sequence":37475248783,"product_id":"ETH-USD","price":"1285.22","open_24h":"1310.79",'
    '"volume_24h":"245532.79269678","low_24h":"1280.52","high_24h":"1313.8","volume_30d":"9788783.60117027",'
    '"best_bid":"1285.04","best_bid_size":"0.46688654","best_ask":"1285.27","best_ask_size":"1.56637040",'
    '"side":"buy","time":"2022-10-19T23:28:22.061769Z","trade_id":370843401,"last_size":"11.4396987"}'
)
TICKER_OLD = (
    '{"type":"ticker","sequence":333938798,"product_id":"BAND-GBP","price":"14.7775","open_24h":"14.6647",'
    '"volume_24h":"94381.28000000","low_24h":"14.3691","high_24h":"16.55","volume_30d":"2295579.57000000",'
    '"best_bid":"14.7550","best_ask":"14.8060","side":"buy","time":"2021-04-17T16:43:30.244075Z",'
    '"trade_id":881613,"last_size":"0.04"}'
)
MATCH = (
    '{"type":"match","trade_id":280232,"maker_order_id":"2a0da34e-61f7-4c36-88e5-c9dd15927b16",'
    '"taker_order_id":"3c82abaa-c01e-4608-be59-6a1e69742891","side":"sell","size":"985","price":"0.00001305",'
    '"product_id":"SKL-BTC","sequence":177100030,"time":"2021-04-17T16:43:37.089723Z"}'
)
SAMPLES = {
    "subscribe": '{"type":"subscribe","product_ids":["BTC-USD","ETH-USD"],"channels":["ticker","heartbeat",'
                 '{"name":"matches","product_ids":["BTC-USD"]}]}',
    "subscriptions": '{"type":"subscriptions","channels":[{"name":"ticker","product_ids":["BTC-USD","ETH-USD"]}]}',
    "heartbeat": '{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD",'
                 '"time":"2014-11-07T08:19:28.464459Z"}',
    "status": '{"type":"status","products":[{"id":"BTC-USD","base_currency":"BTC","quote_currency":"USD",'
              '"status":"online"}],"currencies":[{"id":"USD","status":"online"}]}',
    "ticker": TICKER_NEW,
    "match": MATCH,
    "last_match": MATCH.replace('"match"', '"last_match"'),
    "snapshot": '{"type":"snapshot","product_id":"BTC-USD","bids":[["10101.10","0.45054140"]],'
                '"asks":[["10102.55","0.57753524"]]}',
    "l2update": '{"type":"l2update","product_id":"BTC-USD","time":"2022-10-19T23:28:22.061769Z",'
                '"changes":[["buy","22356.27","0.00000000"],["sell","22357.01","1.5"]]}',
    "rfq_match": '{"type":"rfq_match","maker_order_id":"m","taker_order_id":"t","time":"2022-10-19T23:28:22.1Z",'
                 '"trade_id":30,"product_id":"BTC-USD","size":"5.23512","price":"400.23","side":"sell"}',
    "auction": '{"type":"auction","product_id":"LTC-USD","sequence":3262786978,"auction_state":"collection",'
               '"best_bid_price":"333.98","best_bid_size":"4.39088265","best_ask_price":"333.99",'
               '"best_ask_size":"25.23542881","open_price":"333.99","open_size":"0.193","can_open":"yes",'
               '"timestamp":"2015-11-14T20:46:03.511254Z"}',
    "error": '{"type":"error","message":"Failed to subscribe","reason":"BTC-XYZ is not a valid product"}',
}
CLASSES = {
    "subscribe": Subscribe, "subscriptions": Subscriptions, "heartbeat": Heartbeat, "status": Status,
    "ticker": Ticker, "match": Match, "last_match": Match, "snapshot": Snapshot, "l2update": L2Update,
    "rfq_match": RfqMatch, "auction": Auction, "error": Error,
}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_type_parses_to_its_class(kind: str) -> None:
    message = parse_frame(SAMPLES[kind].encode())
    assert type(message) is CLASSES[kind]
    assert message.type == kind


def test_ticker_with_and_without_best_sizes() -> None:
    new, old = parse_frame(TICKER_NEW), parse_frame(TICKER_OLD)
    assert isinstance(new, Ticker) and isinstance(old, Ticker)
    assert new.best_bid_size == Decimal("0.46688654") and new.best_ask_size == Decimal("1.56637040")
    assert old.best_bid_size is None and old.best_ask_size is None
    assert (old.product, old.seq, old.trade_id, old.side) == ("BAND-GBP", 333938798, 881613, "buy")


def test_prices_and_sizes_keep_every_digit() -> None:
    match = parse_frame(MATCH)
    assert isinstance(match, Match)
    assert match.price == Decimal("0.00001305") and str(match.price) == "0.00001305"
    assert str(parse_frame(TICKER_NEW).volume_24h) == "245532.79269678"  # type: ignore[attr-defined]
    update = parse_frame(SAMPLES["l2update"])
    assert isinstance(update, L2Update)
    assert update.changes == (Change("buy", Decimal("22356.27"), Decimal("0")), Change("sell", Decimal("22357.01"),
                                                                                      Decimal("1.5")))
    snapshot = parse_frame(SAMPLES["snapshot"])
    assert isinstance(snapshot, Snapshot)
    assert snapshot.bids == (Level(Decimal("10101.10"), Decimal("0.45054140")),)
    assert str(snapshot.bids[0].price) == "10101.10"


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("2021-04-17T16:43:30Z", 1618677810000),
        ("2021-04-17T16:43:30.2Z", 1618677810200),
        ("2021-04-17T16:43:30.24Z", 1618677810240),
        ("2021-04-17T16:43:30.244Z", 1618677810244),
        ("2021-04-17T16:43:30.2449Z", 1618677810244),
        ("2021-04-17T16:43:30.244075Z", 1618677810244),
        ("2021-04-17T16:43:30.244999999Z", 1618677810244),
        ("2021-04-17T18:43:30.244075+02:00", 1618677810244),
        ("2021-04-17T16:43:30.244075", 1618677810244),
    ],
)
def test_times_with_any_fraction_digits(text: str, expected_ms: int) -> None:
    frame = orjson.dumps({"type": "heartbeat", "sequence": 1, "last_trade_id": 2, "product_id": "X-Y", "time": text})
    message = parse_frame(frame)
    assert message.event_ms == expected_ms
    assert message.event_time is not None and message.event_time.tzinfo is not None


def test_event_time_is_timestamp_for_auction_and_none_for_snapshot() -> None:
    assert parse_frame(SAMPLES["auction"]).event_ms == 1447533963511
    assert parse_frame(SAMPLES["snapshot"]).event_ms is None


def test_unknown_type_is_kept_raw() -> None:
    frame = b'{"type":"brand_new","product_id":"BTC-USD","sequence":7,"time":"2024-01-01T00:00:00Z","x":[1]}'
    message = parse_frame(frame)
    assert isinstance(message, Unknown)
    assert message.type == "brand_new" and message.raw["x"] == [1]
    assert (message.product, message.seq, message.event_ms) == ("BTC-USD", 7, 1704067200000)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"not json at all", "not_json"),
        (b'{"type":"ticker"', "not_json"),
        (b"\xff\xfe{}", "not_json"),
        (b"[1, 2, 3]", "not_object"),
        (b'"just a string"', "not_object"),
        (b'{"product_id":"BTC-USD"}', "no_type"),
        (b'{"type":42}', "no_type"),
        (b'{"type":""}', "no_type"),
        (b'{"type":"ticker","product_id":"BTC-USD","sequence":"abc","price":"1"}', "bad_fields"),
        (b'{"type":"ticker","product_id":"BTC-USD","sequence":1,"price":[1]}', "bad_fields"),
        (b'{"type":"ticker","product_id":"BTC-USD","sequence":1,"price":"NaN"}', "bad_fields"),
        (b'{"type":"ticker","product_id":"BTC-USD","sequence":true,"price":"1"}', "bad_fields"),
        (b'{"type":"ticker","product_id":7,"sequence":1,"price":"1"}', "bad_fields"),
        (b'{"type":"ticker","product_id":"BTC-USD","sequence":1}', "bad_fields"),
        (b'{"type":"l2update","product_id":"A-B","time":"yesterday","changes":[]}', "bad_fields"),
        (b'{"type":"l2update","product_id":"A-B","time":"2021-04-17T16:43:30Z","changes":[["up","1","2"]]}',
         "bad_fields"),
        (b'{"type":"l2update","product_id":"A-B","time":"2021-04-17T16:43:30Z","changes":{"a":1}}', "bad_fields"),
        (b'{"type":"snapshot","product_id":"A-B","bids":[["1"]],"asks":[]}', "bad_fields"),
        (b'{"type":"subscriptions","channels":[3]}', "bad_fields"),
    ],
)
def test_malformed_frames_raise_with_a_code(frame: bytes, code: str) -> None:
    with pytest.raises(MalformedFrame) as caught:
        parse_frame(frame)
    assert caught.value.code == code


def test_malformed_frame_keeps_the_object_for_its_product() -> None:
    with pytest.raises(MalformedFrame) as caught:
        parse_frame(b'{"type":"match","product_id":"BTC-USD","trade_id":"x"}')
    assert protocol.frame_product(caught.value.obj) == "BTC-USD"


def test_subscribe_resolves_bare_channels_to_top_level_products() -> None:
    message = parse_frame(SAMPLES["subscribe"])
    assert isinstance(message, Subscribe)
    assert message.channels[2] == Channel("matches", ("BTC-USD",))
    assert message.requested() == {
        "ticker": ("BTC-USD", "ETH-USD"), "heartbeat": ("BTC-USD", "ETH-USD"), "matches": ("BTC-USD",),
    }


def test_built_frames_parse_back() -> None:
    subscribe = parse_frame(protocol.subscribe_frame(["BTC-USD"], ["ticker", "level2_batch"]))
    assert isinstance(subscribe, Subscribe)
    assert subscribe.requested() == {"ticker": ("BTC-USD",), "level2_batch": ("BTC-USD",)}
    reply = parse_frame(protocol.subscriptions_frame({"ticker": ["BTC-USD"]}))
    assert isinstance(reply, Subscriptions) and reply.channels == (Channel("ticker", ("BTC-USD",)),)
    error = parse_frame(protocol.error_frame("Failed to subscribe", "why"))
    assert isinstance(error, Error) and error.reason == "why"


def test_format_time_round_trips_microseconds() -> None:
    moment = datetime(2021, 4, 17, 16, 43, 30, 244075, tzinfo=UTC)
    text = protocol.format_time_us(protocol.epoch_us(moment))
    assert text == "2021-04-17T16:43:30.244075Z"
    assert protocol.parse_time(text) == moment


@pytest.mark.parametrize("micros", [0, 1, -1, 999_999, 1_000_000, -1_000_001, 1_618_677_810_244_075,
                                    253_402_300_799_999_999])
def test_format_time_writes_every_second_and_fraction_as_datetime_does(micros: int) -> None:
    """The date and time of a second are formatted once and reused (the simulator stamps thousands of frames a
    second); the fraction, before 1970 too, must still be the instant's own."""
    expected = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert protocol.format_time_us(micros) == expected
    assert protocol.format_time_us(micros) == expected  # the cached second again


def test_format_time_refuses_instants_past_year_9999() -> None:
    with pytest.raises(ValueError, match="out of range"):
        protocol.format_time_us(253_402_300_800_000_000)


def test_every_frame_of_the_shipped_capture_parses(shipped: Capture) -> None:
    kinds = Counter(type(parse_frame(frame.text)).__name__ for frame in shipped.frames)
    print("parsed:", dict(kinds))
    assert kinds == {"L2Update": 9719, "Ticker": 107, "Match": 107, "Snapshot": 10, "Subscriptions": 3}

"""The router's pure logic: every message type converted by the record contract; anything else a dead letter."""

from __future__ import annotations

import base64
from collections import Counter

import orjson
import pytest

from rtca.feed.capture import SHIPPED_CAPTURE, read_capture
from rtca.functions import routing
from rtca.functions.routing import DEAD_LETTER, MAX_DEAD_LETTER_PAYLOAD, Reason, parse_time_ms, route
from rtca.functions.samples import SAMPLES, hostile_payloads, sample

RECEIVED = 1_700_000_000_123
CHANNEL = {
    "ticker": "ticker", "match": "matches", "last_match": "matches", "snapshot": "level2", "l2update": "level2",
    "heartbeat": "heartbeat", "status": "status", "rfq_match": "rfq_matches", "auction": "auction",
    "subscriptions": "control", "error": "control",
}  # fmt: skip


def routed(message: dict[str, object]) -> routing.Routed:
    return route(orjson.dumps(message), received_ms=RECEIVED, source_topic="raw", source_message_id="1:2:-1:-1")


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_type_goes_to_its_channel_with_times_and_product(kind: str) -> None:
    out = routed(SAMPLES[kind])
    assert out.channel == CHANNEL[kind], out.record
    record = orjson.loads(out.data)
    assert record == out.record
    assert record["received_ms"] == RECEIVED
    assert isinstance(record["event_ms"], int)
    assert record["product_id"] == SAMPLES[kind].get("product_id")
    assert out.key == record["product_id"]
    assert {k for k in SAMPLES[kind]} <= set(record)  # Coinbase's field names are all kept


def test_ticker_numbers_become_numbers() -> None:
    record = routed(SAMPLES["ticker"]).record
    assert record["price"] == 1285.22 and record["best_ask_size"] == 1.5663704
    assert record["sequence"] == 37475248783 and record["trade_id"] == 370843401
    assert record["side"] == "buy" and record["time"] == "2022-10-19T23:28:22.061769Z"
    assert record["event_ms"] == 1666222102061


def test_level2_arrays_become_numbers() -> None:
    assert routed(SAMPLES["l2update"]).record["changes"] == [["buy", 22356.27, 0.0], ["sell", 22357.01, 1.5]]
    snapshot = routed(SAMPLES["snapshot"]).record
    assert snapshot["bids"] == [[10101.10, 0.4505414]] and snapshot["asks"] == [[10102.55, 0.57753524]]
    assert snapshot["event_ms"] == RECEIVED  # a snapshot has no time: the receive time stands in


def test_status_nested_numbers_and_no_product() -> None:
    record = routed(SAMPLES["status"]).record
    assert record["products"][0]["base_min_size"] == 0.001 and record["products"][0]["post_only"] is False
    assert record["currencies"][0]["min_size"] == 0.01
    assert record["product_id"] is None and record["event_ms"] == RECEIVED


def test_auction_time_is_its_timestamp() -> None:
    assert routed(SAMPLES["auction"]).record["event_ms"] == 1447533963511


def test_older_ticker_without_time_or_sizes_is_accepted() -> None:
    record = routed(sample("ticker", time=..., best_bid_size=..., best_ask_size=..., trade_id=..., side=...)).record
    assert record["event_ms"] == RECEIVED and "best_bid_size" not in record


def test_numbers_as_json_numbers_are_accepted() -> None:
    assert routed(sample("ticker", price=101.5, sequence="42")).record["price"] == 101.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-04-17T16:43:30.244075Z", 1618677810244),
        ("2021-04-17T16:43:30Z", 1618677810000),
        ("2021-04-17T16:43:30.2Z", 1618677810200),
        ("2021-04-17T16:43:30.123456789Z", 1618677810123),
        ("2021-04-17T18:43:30.5+02:00", 1618677810500),
        ("2021-04-17T16:43:30.5", 1618677810500),
    ],
)
def test_time_parsing_is_tolerant_of_fraction_digits(text: str, expected: int) -> None:
    assert parse_time_ms(text) == expected


def test_the_shipped_capture_routes_completely() -> None:
    """Every received frame of the real capture is typed; counts per channel equal the capture's."""
    capture = read_capture(SHIPPED_CAPTURE)
    counts: Counter[str] = Counter()
    for frame in capture.frames:
        out = route(frame.text, received_ms=int(frame.at * 1000))
        assert not out.is_dead_letter, out.record
        counts[out.channel] += 1
    expected: Counter[str] = Counter()
    for kind, n in capture.counts().items():
        expected[CHANNEL[kind]] += n
    assert counts == expected
    assert counts == Counter(level2=9729, ticker=107, matches=107, control=3)


def test_1000_hostile_payloads_all_dead_letters_with_reasons() -> None:
    reasons: Counter[str] = Counter()
    payloads = list(hostile_payloads(1500, seed=3))
    for i, payload in enumerate(payloads):
        out = route(payload, received_ms=RECEIVED, source_topic="raw", source_message_id=f"9:{i}:-1:-1")
        assert out.channel == DEAD_LETTER, (payload[:200], out.record)
        record = orjson.loads(out.data)
        assert record["reason"] in set(Reason) and record["reason"] != Reason.INTERNAL_ERROR, record
        assert record["detail"] and record["source_message_id"] == f"9:{i}:-1:-1"
        assert record["payload_bytes"] == len(payload)
        assert record["event_ms"] == RECEIVED
        reasons[record["reason"]] += 1
    assert set(reasons) == set(Reason) - {Reason.INTERNAL_ERROR, Reason.TOO_LARGE}, reasons  # too large: below


def test_dead_letter_keeps_invalid_utf8_as_base64() -> None:
    payload = b'{"type":"ticker","product_id":"\xff\xfe"}'
    record = route(payload, received_ms=RECEIVED).record
    assert record["reason"] == Reason.INVALID_JSON
    assert base64.b64decode(record["payload_b64"]) == payload
    assert "\ufffd" in record["payload"]


def test_dead_letter_cuts_large_payloads() -> None:
    payload = orjson.dumps(sample("ticker", product_id="\u00e9" * 50_000))  # 2-byte characters: a cut mid-character
    record = route(payload, received_ms=RECEIVED).record
    assert record["reason"] == Reason.INVALID_FIELD
    assert record["payload_bytes"] == len(payload) > MAX_DEAD_LETTER_PAYLOAD
    assert MAX_DEAD_LETTER_PAYLOAD - 1 <= len(record["payload"].encode()) <= MAX_DEAD_LETTER_PAYLOAD
    assert "payload_b64" not in record


def test_product_hint_names_the_product_of_a_dead_letter() -> None:
    out = route(b"{", received_ms=RECEIVED, product_hint="BTC-USD")
    assert out.key == "BTC-USD" and out.record["product_id"] == "BTC-USD"
    longer = route(b"{", received_ms=RECEIVED, product_hint="X" * (routing.MAX_PRODUCT_ID + 1))
    assert longer.key is None and longer.record["product_id"] is None  # no product is named so


def test_a_bug_in_conversion_is_a_dead_letter_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(message: object, received_ms: int) -> routing.Routed:
        raise ZeroDivisionError("bug \ud800")

    monkeypatch.setattr(routing, "convert", broken)
    out = route(orjson.dumps(SAMPLES["ticker"]), received_ms=RECEIVED)
    assert out.record["reason"] == Reason.INTERNAL_ERROR
    assert orjson.loads(out.data)["detail"].startswith("ZeroDivisionError")


def test_str_input_is_accepted() -> None:
    assert route(orjson.dumps(SAMPLES["heartbeat"]).decode()).channel == "heartbeat"


def test_an_event_time_far_after_receipt_is_a_dead_letter() -> None:
    ahead = RECEIVED + routing.MAX_AHEAD_MS
    at_limit = dt_text(ahead)
    assert routed({**SAMPLES["ticker"], "time": at_limit}).record["event_ms"] == ahead  # clock skew: accepted
    out = routed({**SAMPLES["ticker"], "time": "2299-12-31T23:59:59Z"})
    assert out.channel == DEAD_LETTER and out.record["reason"] == Reason.INVALID_TIME
    assert "after it was received" in out.record["detail"]


@pytest.mark.parametrize("field", ["price", "last_size", "volume_24h"])
def test_decimals_beyond_any_market_value_are_dead_letters(field: str) -> None:
    assert routed({**SAMPLES["ticker"], field: "999999999999999999"}).channel == "ticker"  # 1e18: meme volumes
    for value in ("1e200", 1e101):
        out = routed({**SAMPLES["ticker"], field: value})
        assert out.channel == DEAD_LETTER and out.record["reason"] == Reason.INVALID_FIELD, (field, value)


def dt_text(epoch_ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@pytest.mark.parametrize("side", [["buy"], {"buy": 1}])
def test_a_side_of_the_wrong_type_is_an_invalid_field(side: object) -> None:
    assert routed({**SAMPLES["ticker"], "side": side}).record["reason"] == Reason.INVALID_FIELD
    update = {**SAMPLES["l2update"], "changes": [[side, "1.0", "2.0"]]}
    assert routed(update).record["reason"] == Reason.INVALID_FIELD


@pytest.mark.parametrize("time", ["1970-01-01T00:00:00+23:59", "1970-06-01T00:00:00Z"])
def test_an_event_time_before_pinots_range_is_a_dead_letter(time: str) -> None:
    out = routed({**SAMPLES["match"], "time": time})
    assert out.channel == DEAD_LETTER and out.record["reason"] == Reason.INVALID_TIME


@pytest.mark.parametrize("value", [101.0, 1e3])
def test_an_integer_field_written_as_a_float_is_refused_as_ingest_refuses_it(value: float) -> None:
    """Ingest marks such a frame malformed and counts its trade id as missed: the router must not deliver it."""
    from rtca.feed.connection import Frame
    from rtca.feed.ingest import raw_record

    for kind, field in (("match", "trade_id"), ("match", "sequence"), ("heartbeat", "last_trade_id")):
        message = {**SAMPLES[kind], field: value}
        assert raw_record(Frame(orjson.dumps(message), RECEIVED / 1000, 1))[0].key == "malformed"
        out = routed(message)
        assert out.channel == DEAD_LETTER and out.record["reason"] == Reason.INVALID_FIELD, (kind, field)


@pytest.mark.parametrize("kind", ["l2update", "snapshot"])
def test_a_level2_sequence_that_is_not_an_integer_is_a_dead_letter(kind: str) -> None:
    """coinbase_book.sequence is a LONG column: Pinot would drop the book's row (or mis-store it) without a word."""
    assert routed({**SAMPLES[kind], "sequence": 42}).record["sequence"] == 42
    for bad in ("not-a-number", {"x": 1}, 1.5):
        out = routed({**SAMPLES[kind], "sequence": bad})
        assert out.channel == DEAD_LETTER and out.record["reason"] == Reason.INVALID_FIELD, bad


@pytest.mark.parametrize("value", [1, "garbage", 2_000_000_000_000_000])
def test_a_frame_carrying_a_column_the_tables_derive_is_a_dead_letter(value: object) -> None:
    """Pinot keeps an ``event_time`` already in the record: a forged one would stand, or the row would be dropped."""
    out = routed({**SAMPLES["ticker"], "event_time": value})
    assert out.channel == DEAD_LETTER and out.record["reason"] == Reason.INVALID_FIELD
    assert "'event_time' is reserved" in out.record["detail"]


def test_every_column_a_table_over_a_routed_topic_derives_is_reserved() -> None:
    """The tables' ingestion transforms name the columns a frame must not carry (`RESERVED_FIELDS`)."""
    from rtca.pinot.tables import render_tables
    from rtca.settings import load_settings

    settings = load_settings()
    routed_topics = {settings.topic(getattr(settings.topics, channel)) for channel in routing.CHANNELS}
    derived = {
        transform["columnName"]
        for spec in render_tables(settings) if spec.topic in routed_topics
        for transform in (spec.table.get("ingestionConfig") or {}).get("transformConfigs") or []
    }  # fmt: skip
    assert derived and derived <= set(routing.RESERVED_FIELDS)


def test_a_typed_record_pulsar_would_refuse_is_a_too_large_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Converting can grow a frame ("1e5" -> 100000.0): a record over Pulsar's limit would never be stored."""
    levels = [["1e5", "2e1"]] * 200
    frame = orjson.dumps({**SAMPLES["snapshot"], "bids": levels, "asks": levels})
    converted = len(routed(orjson.loads(frame)).data)
    assert converted > len(frame)
    monkeypatch.setattr(routing, "MAX_RECORD_BYTES", converted - 1)
    out = route(frame, received_ms=RECEIVED, source_topic="raw", product_hint="BTC-USD")
    assert out.channel == DEAD_LETTER and out.record["reason"] == Reason.TOO_LARGE
    assert out.record["payload_bytes"] == len(frame) and out.key == "BTC-USD"
    assert f"{converted} bytes" in out.record["detail"]


def test_a_frame_ingest_cut_is_a_too_large_dead_letter_with_its_full_size() -> None:
    start = orjson.dumps(SAMPLES["snapshot"])[:40]
    out = route(start, received_ms=RECEIVED, cut_from=4_800_000, product_hint="BTC-USD")
    assert out.channel == DEAD_LETTER and out.record["reason"] == Reason.TOO_LARGE
    assert out.record["payload_bytes"] == 4_800_000 and out.record["payload"] == start.decode()
    assert "4800000 bytes" in out.record["detail"] and out.key == "BTC-USD"


@pytest.mark.parametrize("product", ["BTC-USD", "1INCH-USD", "USDT-USDC", "ZZPAGE-USD", "B07-USD",
                                     *read_capture(SHIPPED_CAPTURE).products])
def test_coinbase_product_ids_are_routed(product: str) -> None:
    assert routed(sample("ticker", product_id=product)).channel == "ticker"


@pytest.mark.parametrize("product", ["btc-usd", "BTC USD", "BTC", "BTC-USD-", "-USD", "BTC-USD\n", "BÄT-USD",
                                     "X" * 21 + "-USD", "G" * 30 + "-" + "H" * 30])
def test_a_product_id_not_of_coinbase_shape_is_a_dead_letter(product: str) -> None:
    """Every function after the router keeps state per product id, for good: a frame with a new made-up one each
    time (up to 64 characters were taken) grew five functions' memory and checkpoints with each."""
    out = routed(sample("match", product_id=product))
    assert out.channel == DEAD_LETTER and out.record["reason"] == Reason.INVALID_FIELD
    assert "not a Coinbase product id" in out.record["detail"]

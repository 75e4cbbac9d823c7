"""Sample frames of every Coinbase message type, and hostile payloads the router must dead-letter.

Shared by the unit tests, the integration tests against the deployed router and the benchmarks, so they all
exercise the same inputs. Each hostile payload breaks the record contract in one way (seeded, reproducible).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import orjson

SAMPLES: dict[str, dict[str, Any]] = {
    "ticker": {
        "type": "ticker", "sequence": 37475248783, "product_id": "ETH-USD", "price": "1285.22", "open_24h": "1310.79",
        "volume_24h": "245532.79269678", "low_24h": "1280.52", "high_24h": "1313.8", "volume_30d": "9788783.60117027",
        "best_bid": "1285.04", "best_bid_size": "0.46688654", "best_ask": "1285.27", "best_ask_size": "1.56637040",
        "side": "buy", "time": "2022-10-19T23:28:22.061769Z", "trade_id": 370843401, "last_size": "11.4396987",
    },
    "match": {
        "type": "match", "trade_id": 10, "sequence": 50, "maker_order_id": "ac928c66-ca53-498f-9c13-a110027a60e8",
        "taker_order_id": "132fb6ae-456b-4654-b4e0-d681ac05cea1", "time": "2014-11-07T08:19:27.028459Z",
        "product_id": "BTC-USD", "size": "5.23512", "price": "400.23", "side": "sell",
    },
    "last_match": {
        "type": "last_match", "trade_id": 881613, "maker_order_id": "27fff20b-af29-4f45-8744-56dd1ef57dc0",
        "taker_order_id": "1da6ce16-c8da-4732-9f71-6049f4c6aaf8", "side": "sell", "size": "0.04", "price": "14.7775",
        "product_id": "BAND-GBP", "sequence": 333938798, "time": "2021-04-17T16:43:30.244075Z",
    },
    "snapshot": {
        "type": "snapshot", "product_id": "BTC-USD", "bids": [["10101.10", "0.45054140"]],
        "asks": [["10102.55", "0.57753524"]],
    },
    "l2update": {
        "type": "l2update", "product_id": "BTC-USD", "time": "2019-08-14T20:42:27.265Z",
        "changes": [["buy", "22356.27", "0.00000000"], ["sell", "22357.01", "1.5"]],
    },
    "heartbeat": {
        "type": "heartbeat", "sequence": 90, "last_trade_id": 20, "product_id": "BTC-USD",
        "time": "2014-11-07T08:19:28.464459Z",
    },
    "status": {
        "type": "status",
        "products": [{
            "id": "BTC-USD", "base_currency": "BTC", "quote_currency": "USD", "base_min_size": "0.001",
            "base_max_size": "70", "base_increment": "0.00000001", "quote_increment": "0.01",
            "display_name": "BTC/USD", "status": "online", "status_message": None, "min_market_funds": "10",
            "max_market_funds": "1000000", "post_only": False, "limit_only": False, "cancel_only": False,
        }],
        "currencies": [{
            "id": "USD", "name": "United States Dollar", "min_size": "0.01000000", "status": "online",
            "status_message": None, "max_precision": "0.01", "convertible_to": ["USDC"], "details": {},
        }],
    },
    "rfq_match": {
        "type": "rfq_match", "maker_order_id": "ac928c66-ca53-498f-9c13-a110027a60e8",
        "taker_order_id": "132fb6ae-456b-4654-b4e0-d681ac05cea1", "time": "2014-11-07T08:19:27.028459Z",
        "trade_id": 30, "product_id": "BTC-USD", "size": "5.23512", "price": "400.23", "side": "sell",
    },
    "auction": {
        "type": "auction", "product_id": "LTC-USD", "sequence": 3262786978, "auction_state": "collection",
        "best_bid_price": "333.98", "best_bid_size": "4.39088265", "best_ask_price": "333.99",
        "best_ask_size": "25.23542881", "open_price": "333.99", "open_size": "0.193", "can_open": "yes",
        "timestamp": "2015-11-14T20:46:03.511254Z",
    },
    "subscriptions": {
        "type": "subscriptions", "channels": [{"name": "ticker", "product_ids": ["BTC-USD", "ETH-USD"]}],
    },
    "error": {"type": "error", "message": "Failed to subscribe", "reason": "ZZZ-USD is not a valid product"},
}  # fmt: skip
"""One frame per message type, in the shapes of the Coinbase Exchange documentation (numbers as strings)."""

_BAD_NUMBERS: list[Any] = [
    "abc", "", " 1", "1,5", "0x10", "NaN", "nan", "Infinity", "-inf", "1e999", "-1", "-0.5", "1_000", "١٢٣",
    True, None, [], {}, [1], {"v": 1}, float("nan"), -3,
]  # fmt: skip
_BAD_INTEGERS: list[Any] = [-1, 1.5, "12a", "", "1e3", 2**63, "99999999999999999999", True, "-5", [], "٣"]
_BAD_TIMES: list[Any] = [
    "yesterday", "2021-13-01T00:00:00Z", "2021-02-30T00:00:00Z", "2021-04-17T25:00:00Z", "2021-04-17T16:61:00Z",
    "2021-04-17 16:43", "17/04/2021", 1618677817, "", "1969-12-31T23:59:59Z", "2021-04-17T16:43:30.2Z+25:00",
    "2021-04-17T16:43:30+24:00", None, ["2021-04-17T16:43:30Z"],
]  # fmt: skip
_BAD_PRODUCTS: list[Any] = ["", 42, None, ["BTC-USD"], "X" * 65, {"id": "BTC-USD"}, True, "btc-usd", "BTC USD",
                            "X" * 64, "BTC-USD-"]
_BAD_SIDES: list[Any] = ["hold", "", "BUY", 1, None]
_NUMERIC = {
    "ticker": ["price"], "match": ["price", "size"], "last_match": ["price", "size"], "rfq_match": ["price", "size"],
    "auction": [],
}  # fmt: skip
_INTEGER = {"ticker": ["sequence", "trade_id"], "match": ["trade_id", "sequence"], "heartbeat": ["last_trade_id"]}
_TIMED = {"match": "time", "last_match": "time", "l2update": "time", "heartbeat": "time", "rfq_match": "time",
          "auction": "timestamp", "ticker": "time"}  # fmt: skip
_TIME_REQUIRED = ["match", "last_match", "l2update", "heartbeat", "rfq_match"]
_PRODUCT_TYPES = ["ticker", "match", "last_match", "snapshot", "l2update", "heartbeat", "rfq_match", "auction"]
_REQUIRED = {
    "ticker": ["price", "product_id", "sequence"],
    "match": ["trade_id", "price", "size", "side", "time", "product_id", "sequence"],
    "l2update": ["changes", "time", "product_id"], "snapshot": ["bids", "asks"],
    "heartbeat": ["time", "sequence", "last_trade_id"], "status": ["products"],
    "rfq_match": ["price", "size", "time", "trade_id", "side"], "auction": ["auction_state", "sequence"],
    "subscriptions": ["channels"], "error": ["message"],
}  # fmt: skip


def sample(kind: str, **changes: Any) -> dict[str, Any]:
    """A fresh copy of `SAMPLES[kind]` with `changes` applied (a value of `...` deletes the field)."""
    message = orjson.loads(orjson.dumps(SAMPLES[kind]))
    for key, value in changes.items():
        if value is ...:
            message.pop(key, None)
        else:
            message[key] = value
    return message


def _dumps(message: Any) -> bytes:
    return orjson.dumps(message)


def _mutations(rng: random.Random) -> list[Callable[[], bytes]]:
    """Generators of one hostile payload each (called repeatedly with the shared rng)."""

    def pick(seq: list[Any]) -> Any:
        return seq[rng.randrange(len(seq))]

    def bad_number() -> bytes:
        kind = pick(list(k for k, v in _NUMERIC.items() if v))
        return _dumps(sample(kind, **{pick(_NUMERIC[kind]): pick(_BAD_NUMBERS)}))

    def bad_integer() -> bytes:
        kind = pick(list(_INTEGER))
        return _dumps(sample(kind, **{pick(_INTEGER[kind]): pick(_BAD_INTEGERS)}))

    def bad_time() -> bytes:
        value = pick(_BAD_TIMES)
        kind = pick(_TIME_REQUIRED if value is None else list(_TIMED))
        return _dumps(sample(kind, **{_TIMED[kind]: ... if value is None else value}))

    def bad_product() -> bytes:
        value = pick(_BAD_PRODUCTS)
        return _dumps(sample(pick(_PRODUCT_TYPES), product_id=... if value is None else value))

    def missing_required() -> bytes:
        kind = pick(list(_REQUIRED))
        return _dumps(sample(kind, **{pick(_REQUIRED[kind]): ...}))

    def bad_side() -> bytes:
        return _dumps(sample(pick(["match", "last_match", "ticker"]), side=pick([s for s in _BAD_SIDES if s])))

    def bad_changes() -> bytes:
        changes = pick([
            "buy", [["buy", "1"]], [["hold", "1", "2"]], [["buy", "-1", "2"]], [["sell", "1", "x"]],
            [["buy", "1", "2", "3"]], [None], [{"side": "buy"}], [["buy", "0", "1"]],
        ])  # fmt: skip
        return _dumps(sample("l2update", changes=changes))

    def bad_levels() -> bytes:
        levels = pick([[["1"]], "x", [["a", "1"]], [[None, "1"]], [["1", "-2"]], [1, 2], {"1": "2"}])
        return _dumps(sample("snapshot", **{pick(["bids", "asks"]): levels}))

    def bad_status() -> bytes:
        products = pick([[1, 2], "BTC-USD", [{"id": "BTC-USD", "base_min_size": "lots"}], {"id": "x"}])
        return _dumps(sample("status", products=products))

    def wrong_type() -> bytes:
        value = pick(["done", "open", "change", "received", "activate", "", "TICKER", 1, None, ["ticker"], True,
                      "subscribe", "l2update ", "tick\u00e9r"])  # fmt: skip
        message = sample(pick(list(SAMPLES)))
        if value is None:
            message.pop("type")
        else:
            message["type"] = value
        return _dumps(message)

    def not_an_object() -> bytes:
        return _dumps(pick([[], [SAMPLES["ticker"]], 1, -2.5, "ticker", None, True, False, 1e300, [None], "{}"]))

    def not_json() -> bytes:
        base = _dumps(pick(list(SAMPLES.values())))
        cut = rng.randrange(1, len(base))
        return pick([
            base[:cut], base + b"}", b"{" + base, base.replace(b":", b"=", 1), b"'" + base + b"'",
            b"{type: 'ticker'}", b"NaN", b"{\"type\":\"ticker\",}", b"\xef\xbb\xbf" + base[:cut], b"\x00" + base,
            b"{\"type\":\"ticker\",\"price\":NaN}", b"[" * 5000 + b"]" * 5000, b"{\"a\":\"\\ud800\"}",
        ])  # fmt: skip

    def not_utf8() -> bytes:
        return pick([
            bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) + b"\xff",
            _dumps(SAMPLES["ticker"]).replace(b"ETH", b"\xc3\x28"),
            b"\xfe\xff" + _dumps(SAMPLES["heartbeat"]),
            b"\xed\xa0\x80",
        ])  # fmt: skip

    def empty() -> bytes:
        return pick([b"", b" ", b"\n", b"\t\r\n "])

    def huge() -> bytes:
        message = sample("ticker", product_id="Z" * rng.randrange(70_000, 90_000))
        return _dumps(message)

    return [bad_number, bad_integer, bad_time, bad_product, missing_required, bad_side, bad_changes, bad_levels,
            bad_status, wrong_type, not_an_object, not_json, not_utf8, empty, huge]  # fmt: skip


def hostile_payloads(count: int = 1000, *, seed: int = 1) -> Iterator[bytes]:
    """`count` payloads, each of which must end in the dead-letter topic (cycling through every kind of defect)."""
    rng = random.Random(seed)
    makers = _mutations(rng)
    for i in range(count):
        yield makers[i % len(makers)]()

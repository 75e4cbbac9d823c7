"""Integer fields beyond 64 bits, negative or in non-ASCII digits: a malformed frame for ingest, never a crash;
a time before 1970 (Pulsar's event time is unsigned): the record takes the receive time, as frames without one.

Found by the fuzz test (tests/faults/test_hostile_input.py): a match with trade id 10**20 passed the protocol, its
"gap" reached feed health, and encoding that record (orjson: 64-bit integers only) stopped the ingest process; a
frame timed 1969 was retried forever (the client refuses a negative event time) and never reached the raw topic.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from rtca.feed.connection import Frame
from rtca.feed.ingest import Ingest, raw_record
from rtca.feed.protocol import MalformedFrame, parse_frame
from rtca.feed.sinks import MemorySink, Publisher
from rtca.functions.samples import sample

BAD = [10**20, 2**63, -1, "99999999999999999999", "٣", "-5", "1e3", ""]


@pytest.mark.parametrize("value", BAD)
def test_out_of_range_integer_fields_make_a_frame_malformed(value: object) -> None:
    for kind, field in (("match", "trade_id"), ("match", "sequence"), ("heartbeat", "last_trade_id")):
        frame = orjson.dumps(sample(kind, **{field: "__N__"})).replace(b'"__N__"', orjson.dumps(value) if not
                                                                      isinstance(value, int) else str(value).encode())
        with pytest.raises(MalformedFrame) as problem:
            parse_frame(frame)
        assert problem.value.code == "bad_fields"
        record, _ = raw_record(Frame(frame, 1_700_000_000.0, 1))
        assert record.key == "malformed"


def test_the_largest_integers_still_parse() -> None:
    message = parse_frame(orjson.dumps(sample("match", trade_id=2**63 - 1, sequence="9223372036854775807")))
    assert message.trade_id == 2**63 - 1 and message.seq == 2**63 - 1  # type: ignore[attr-defined]


def test_a_health_record_that_orjson_cannot_encode_is_still_published() -> None:
    async def main() -> list[bytes]:
        from rtca.feed.connection import ConnectionState

        health = MemorySink()
        work = Ingest(Publisher(MemorySink()), Publisher(health), source="test", connection=ConnectionState("ws://x"))
        work._publish_health("gap", {"missed": 10**30})
        return [r.value for r in health.records]

    (value,) = asyncio.run(main())
    assert b'"missed": 1000000000000000000000000000000' in value


def test_a_time_before_1970_gives_the_receive_time() -> None:
    frame = orjson.dumps(sample("match", time="1969-12-31T23:59:59Z"))
    record, message = raw_record(Frame(frame, 1_700_000_000.5, 1))
    assert record.event_ms == 1_700_000_000_500 and record.key == "match"

"""The notebooks' live views when things go wrong: a broker that does not answer is a clear error, a refresh that
fails in the background says so and the next one runs."""

from __future__ import annotations

import asyncio
import socket

import pytest

from rtca.errors import ServiceError
from rtca.notebook.live import Controls, Trace, live_chart, pinot_frame
from rtca.settings import Settings


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_broker_that_does_not_answer_is_a_service_error_with_a_hint() -> None:
    settings = Settings(pinot={"broker_port": closed_port()})  # type: ignore[arg-type]
    with pytest.raises(ServiceError, match="pinot-broker: query failed") as failure:
        pinot_frame(settings, "SELECT 1")
    assert "rtca up" in str(failure.value.hint)


@pytest.mark.stack
def test_background_refreshes_survive_a_failing_one(stack_up: Settings,
                                                     unique: str) -> None:
    table = stack_up.tables.ticker
    product = f"NONE-{unique}"
    trace = Trace("price", f"SELECT event_time, price FROM {table} WHERE product_id = '{{product}}' LIMIT 10",
                  "event_time", "price")
    view = live_chart(stack_up, "test", [trace], product_table=None, product=product, interval=1.0)
    calls = []
    update = view._update

    def flaky(v):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            raise ServiceError("pinot-broker", "query failed: a blip")
        return update(v)

    view._update = flaky

    async def two_refreshes() -> None:
        view.start(refreshes=2)
        assert view._task is not None
        await view._task

    asyncio.run(two_refreshes())
    assert len(calls) == 2 and view.refreshed == 1  # the second ran after the first failed
    assert view.controls.status.value.startswith("refresh 1:")


def test_controls_keep_what_was_asked_for() -> None:
    controls = Controls.create(["BTC-USD", "ETH-USD"], product="DOGE-USD", minutes=500, interval=0.5)
    assert controls.product.value == "DOGE-USD"  # no rows yet: its chart stays empty, not another product's
    assert (controls.minutes.value, controls.interval.value) == (500, 0.5)  # not cut to the sliders' usual range
    assert Controls.create(["BTC-USD"], product=None, minutes=15, interval=5.0).product.value == "BTC-USD"

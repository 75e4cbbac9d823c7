"""The notebooks' live views when things go wrong: a broker that does not answer is a clear error, a refresh that
fails in the background says so and the next one runs."""

from __future__ import annotations

import asyncio
import socket

import plotly.graph_objects as go
import pytest

from rtca.errors import ServiceError
from rtca.notebook.live import Controls, LiveView, Trace, live_chart, pinot_frame, products
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


def _view(kind: str, update) -> LiveView:  # type: ignore[no-untyped-def]
    controls = Controls.create([], product=None, minutes=15, interval=0.05)
    return LiveView(go.FigureWidget(), controls, update, kind=kind)


def test_starting_a_view_again_stops_the_earlier_one_of_its_kind_only() -> None:
    """A notebook cell run twice builds two views: the first one's loop must not query on, unseen."""

    async def scenario() -> tuple[bool, bool, bool]:
        first, second, other = (_view(kind, lambda v: 0) for kind in ("Market", "Market", "Feed health"))
        first.start()
        other.start()
        await asyncio.sleep(0.2)
        second.start()
        await asyncio.sleep(0.2)
        running = (first.refreshing, second.refreshing, other.refreshing)
        second.stop()
        other.stop()
        return running

    assert asyncio.run(scenario()) == (False, True, True)


def test_an_unexpected_error_in_a_background_refresh_is_shown_and_the_loop_goes_on() -> None:
    calls: list[int] = []

    def update(view: LiveView) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("price")  # e.g. a column the table does not have yet
        return 7

    view = _view("odd rows", update)

    async def refreshes() -> str:
        view.start(refreshes=1)
        assert view._task is not None
        await view._task
        status = view.controls.status.value
        view.start(refreshes=1)
        assert view._task is not None
        await view._task
        return status

    failed = asyncio.run(refreshes())
    assert failed.startswith("refresh failed") and "KeyError" in failed
    assert view.controls.status.value.startswith("refresh 1: 7 rows") and not view.refreshing


@pytest.mark.stack
def test_the_product_dropdown_offers_products_with_rows_in_the_window(stack_up: Settings) -> None:
    """The busiest product of all time may have no rows in the chart's window (data of an earlier day): the default
    product is the busiest of the window, so the first chart a user sees is not empty."""
    from live_data import seed_live_data

    seed_live_data(stack_up)
    table = stack_up.tables.ticker_stats
    recent = products(stack_up, table, minutes=15)
    counts = [pinot_frame(stack_up, f"SELECT COUNT(*) AS n FROM {table} WHERE product_id = '{p}' AND "
                                    f"event_time > ago('PT15M')")["n"][0] for p in recent]
    print(dict(zip(recent, counts)))
    assert recent and all(n > 0 for n in counts)  # (their order may change as rows keep coming)

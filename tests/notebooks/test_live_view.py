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


@pytest.mark.stack
@pytest.mark.parametrize("view", ["live_market", "live_book_and_flow", "live_volatility", "live_feed_health",
                                  "live_candles"])
def test_every_notebook_view_draws_rows_of_the_seeded_data(stack_up: Settings, view: str) -> None:
    """nbval runs the notebooks with --nbval-lax: a view whose SQL finds nothing (a wrong column, a bucket no row
    falls in) would pass there with empty axes. Here each view draws rows from the real tables, for its default
    product: the most traded one with rows in its window."""
    from live_data import seed_live_data

    from rtca.notebook import live

    seed_live_data(stack_up)
    chart = getattr(live, view)(stack_up, interval=0.5)
    try:
        rows = chart.refresh()
    finally:
        chart.stop()
    print(f"{view}: {rows} rows for {chart.controls.product.value!r}")
    assert rows > 0
    if view == "live_candles":  # the candlestick and the VWAP line drawn, not only the volume bars
        ohlc, vwap, volume = chart.figure.data
        assert len(ohlc.x) == len(ohlc.open) == len(ohlc.close) == len(vwap.y) == len(volume.y) > 0
        # within rounding: sum(p * s) / sum(s) of one trade is not always exactly p
        assert all(low * (1 - 1e-12) <= vw <= high * (1 + 1e-12)
                   for low, vw, high in zip(ohlc.low, vwap.y, ohlc.high, strict=True))


@pytest.mark.stack
@pytest.mark.parametrize("table", ["latest_alerts", "feed_ticks", "gaps"])
def test_every_notebook_table_shows_rows_of_the_seeded_data(stack_up: Settings, table: str) -> None:
    """The tables of notebooks 03 and 04 (`rtca.notebook.live`, their SQL in `rtca.pinot.queries`) find the rows the
    seeding made (alerts, health ticks, the skipped trade ids' gaps), not only rows of an earlier day."""
    import pandas as pd
    from live_data import seed_live_data

    from rtca.notebook import live

    seeded = seed_live_data(stack_up)
    frame = getattr(live, table)(stack_up)
    newest = frame["event_time"].max() if not frame.empty else None
    print(f"{table}: {len(frame)} rows, newest {newest}, seeded from {pd.Timestamp(seeded.started_ms, unit='ms')}")
    assert not frame.empty and newest >= pd.Timestamp(seeded.started_ms - 60_000, unit="ms")


def test_the_broker_gets_the_sql_as_written_percent_signs_included() -> None:
    """pinotdb treats a query as a `%` template: `%(` in a product name is no KeyError, `%%` does not become `%`."""
    import json

    from fake_http import SlowHandler, serving

    received: list[str] = []

    class Broker(SlowHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["sql"])
            table = {"dataSchema": {"columnNames": ["n"], "columnDataTypes": ["LONG"]}, "rows": [[0]]}
            self.answer(200, {"resultTable": table, "exceptions": [], "numServersQueried": 1,
                              "numServersResponded": 1})

    sql = "SELECT COUNT(*) AS n FROM t WHERE product_id IN ('A%(x)s', '100%%', 'B%') OR MOD(n, 2) = 0"
    with serving(Broker) as url:
        frame = pinot_frame(Settings(pinot={"broker_url_override": url}), sql)  # type: ignore[arg-type]
    assert received == [sql] and frame["n"].tolist() == [0]


def test_a_refresh_whose_second_query_fails_leaves_the_figure_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the price of the product just chosen under the volume and title of the one before."""
    import pandas as pd

    from rtca.notebook import live

    answers = {"A": 1.0, "B": 2.0}

    def frame(settings: Settings, sql: str) -> pd.DataFrame:
        product = sql.split("'")[1]
        if "volume" in sql and product == "B":
            raise ServiceError("pinot-broker", "query failed: a blip")
        return pd.DataFrame({"t": [1_700_000_000_000], "y": [answers[product]]})

    monkeypatch.setattr(live, "pinot_frame", frame)
    traces = [Trace("price", "SELECT price '{product}'", "t", "y"),
              Trace("volume", "SELECT volume '{product}'", "t", "y", row=2, kind="bar")]
    view = live_chart(Settings(), "mixed", traces, product_table=None, product="A")
    view.refresh()
    view.controls.product.options = ["A", "B"]
    view.controls.product.value = "B"
    with pytest.raises(ServiceError):
        view.refresh()
    assert [list(trace.y) for trace in view.figure.data] == [[1.0], [1.0]]


def test_the_background_loop_ends_when_its_cell_runs_again_or_its_widget_is_closed() -> None:
    """Running the cell that builds a view again (then `view.run()`, no `start()`) leaves the earlier figure out of
    the notebook, and a closed widget shows nothing: their loops must not query Pinot on, unseen."""

    async def scenario() -> tuple[bool, bool]:
        earlier = _view("Market", lambda v: 0)
        earlier.start()
        await asyncio.sleep(0.1)
        _view("Market", lambda v: 0).run(refreshes=1)  # the cell ran again
        closed = _view("Feed health", lambda v: 0)
        closed.start()
        await asyncio.sleep(0.1)
        closed.widget.close()
        await asyncio.sleep(0.2)
        running = (earlier.refreshing, closed.refreshing)
        earlier.stop()
        closed.stop()
        return running

    assert asyncio.run(scenario()) == (False, False)


def test_the_title_names_the_product_as_chosen_not_as_quoted_for_sql(monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    from rtca.notebook import live

    sent: list[str] = []
    monkeypatch.setattr(live, "_products_found", lambda *args, **kwargs: ([], True))
    monkeypatch.setattr(live, "pinot_frame", lambda settings, sql: sent.append(sql) or pd.DataFrame())
    view = live_chart(Settings(), "Market", [Trace("price", "WHERE product_id = '{product}'", "t", "y")],
                      product_table="prices", product="O'Brien-USD")
    view.refresh()
    assert sent == ["WHERE product_id = 'O''Brien-USD'"]
    assert view.figure.layout.title.text == "Market: O'Brien-USD (last 15 min)"


def test_a_window_with_more_rows_than_the_limit_shows_its_newest_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ORDER BY event_time LIMIT n` keeps the oldest n rows of the window: the chart would stop short of now."""
    import numpy as np
    import pandas as pd

    from rtca.notebook import live

    sent: list[str] = []

    def frame(settings: Settings, sql: str) -> pd.DataFrame:  # newest first, as asked
        sent.append(sql)
        times = [1_700_000_003_000, 1_700_000_002_000, 1_700_000_001_000]
        columns = ["price", "ewma_mean", "upper", "lower", "volume", "spread_bps", "imbalance", "buy_volume",
                   "sell_volume", "realized_vol", "value", "msg_rate", "new_reconnects", "new_missed_trades",
                   "lag_ms_p50", "lag_ms_max", "rate", "reconnects_new", "missed_new", "p50", "worst", "rule",
                   "message", "open", "high", "low", "close", "vwap"]
        return pd.DataFrame({"product_id": ["A"] * 3, "event_time": times, "minute": times, "second": times,
                             "bucket": times,
                             **{column: [3.0, 2.0, 1.0] for column in columns}})

    monkeypatch.setattr(live, "pinot_frame", frame)
    settings = Settings()
    for build in (live.live_market, live.live_book_and_flow, live.live_volatility, live.live_feed_health):
        view = build(settings)
        view.refresh()
        for trace in view.figure.data:
            assert list(np.diff(np.asarray(trace.x, dtype="datetime64[ms]").astype("int64"))) == [1000, 1000]
            assert list(trace.y) == [1.0, 2.0, 3.0]
    candles = live.live_candles(settings, size="1s")
    candles.refresh()
    assert [list(np.asarray(trace.x, dtype="datetime64[ms]").astype("int64")) for trace in candles.figure.data] == [
        [1_700_000_001_000, 1_700_000_002_000, 1_700_000_003_000]] * 3
    charted = [sql for sql in sent if "product_id, COUNT(*)" not in sql]
    assert len(charted) > 4 and all(" DESC LIMIT " in sql for sql in charted), charted


@pytest.mark.parametrize(("minutes", "interval"), [(15, 0.0), (15, -1.0), (0, 5.0)])
def test_a_window_or_interval_no_slider_can_hold_is_refused(minutes: int, interval: float) -> None:
    from rtca.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 1 minute"):
        Controls.create(["BTC-USD"], product=None, minutes=minutes, interval=interval)


def test_a_control_changed_after_the_refreshes_redraws_at_once() -> None:
    """After the notebook's `view.run()` no loop refreshes: choosing a product or a window must still redraw."""
    seen: list[tuple[str, int]] = []

    def update(view: LiveView) -> int:
        seen.append((view.controls.product.value, view.controls.minutes.value))
        return 1

    controls = Controls.create(["BTC-USD", "ETH-USD"], product=None, minutes=15, interval=0.05)
    view = LiveView(go.FigureWidget(), controls, update, kind="controls")
    view.run(refreshes=1)
    controls.product.value = "ETH-USD"
    controls.minutes.value = 5
    assert seen == [("BTC-USD", 15), ("ETH-USD", 15), ("ETH-USD", 5)] and view.refreshed == 3


def test_a_table_that_does_not_exist_says_how_to_create_it() -> None:
    """The stack is up, the tables are not applied yet: `rtca up` would not help."""
    from fake_http import SlowHandler, serving

    class Broker(SlowHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.answer(200, {"exceptions": [{"errorCode": 190, "message": "TableDoesNotExistError"}],
                              "numServersQueried": 0, "numServersResponded": 0})

    with serving(Broker) as url, pytest.raises(ServiceError, match="TableDoesNotExistError") as failure:
        pinot_frame(Settings(pinot={"broker_url_override": url}), "SELECT 1 FROM nope")  # type: ignore[arg-type]
    assert "rtca pinot apply" in str(failure.value.hint)


def test_feed_health_adds_up_ingests_but_not_one_ingests_two_ticks_in_a_second(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Two ingests write health (a background replay, a foreground run): their rates add up per second. One
    ingest's two ticks in a second (its last one after the flush) are one rate: Pinot takes their maximum per
    ingest (`url`), the view adds the ingests."""
    import pandas as pd

    from rtca.notebook import live

    sent: list[str] = []

    def frame(settings: Settings, sql: str) -> pd.DataFrame:
        sent.append(sql)
        seconds = [1_700_000_002_000, 1_700_000_001_000, 1_700_000_001_000]
        return pd.DataFrame({"second": seconds, "url": ["ws://a", "ws://a", "ws://b"], "rate": [5.0, 3.0, 4.0],
                             "reconnects_new": [0, 1, 1], "missed_new": [2, 0, 0], "p50": [1, 2, 3],
                             "worst": [4, 5, 6]})

    monkeypatch.setattr(live, "pinot_frame", frame)
    view = live.live_feed_health(Settings())
    view.refresh()
    traces = {trace.name: list(trace.y) for trace in view.figure.data}
    assert traces["messages / s"] == [7.0, 5.0] and traces["reconnects"] == [2, 0]
    assert traces["missed trades"] == [0, 2]
    ticks = next(sql for sql in sent if "MAX(msg_rate)" in sql)
    assert "GROUP BY DATETRUNC('SECOND', event_time), url" in ticks


def test_a_product_without_rows_says_so_and_names_products_that_have_some(monkeypatch: pytest.MonkeyPatch) -> None:
    """`-p product BTC-USD` on a replay of other products drew an empty chart and said nothing."""
    import pandas as pd

    from rtca.notebook import live

    rows = {"SKL-USD": 3, "BTC-USD": 0}
    monkeypatch.setattr(live, "_products_found", lambda *args, **kwargs: (["SKL-USD", "CRV-EUR"], True))
    monkeypatch.setattr(live, "pinot_frame", lambda settings, sql: pd.DataFrame(
        {"t": [1_700_000_000_000] * rows[sql.split("'")[1]], "y": [1.0] * rows[sql.split("'")[1]]}))
    view = live_chart(Settings(), "Market", [Trace("price", "WHERE product_id = '{product}'", "t", "y")],
                      product_table="prices", product="BTC-USD")
    assert view.run(refreshes=1) == 0
    assert "no rows for 'BTC-USD' in the last 15 min; products with data: SKL-USD, CRV-EUR" in \
        view.controls.status.value
    view.controls.product.value = "SKL-USD"
    assert view.last_rows == 3 and "no rows" not in view.controls.status.value


def test_a_product_chosen_while_a_background_refresh_runs_is_drawn_after_it() -> None:
    """The guard against the refresh's own dropdown changes also swallowed the user's: the dropdown said one
    product, the chart showed the other until the next interval (30 s in a workshop)."""
    import threading

    started, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def update(view: LiveView) -> int:
        seen.append(view.controls.product.value)
        if len(seen) == 1:
            started.set()
            release.wait(5)
        return 1

    controls = Controls.create(["A", "B"], product="A", minutes=15, interval=30.0)
    view = LiveView(go.FigureWidget(), controls, update, kind="race")

    async def scenario() -> None:
        view.start(refreshes=1)
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        controls.product.value = "B"  # the user, on the kernel's thread, while the refresh runs in another
        release.set()
        for _ in range(100):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.02)
        view.stop()

    asyncio.run(scenario())
    assert seen == ["A", "B"]


@pytest.mark.parametrize(("answer", "hint"), [
    ({"exceptions": [{"errorCode": 710, "message": "UnknownColumnError: nocol"}], "numServersQueried": 1,
      "numServersResponded": 1}, "Pinot refused this SQL"),
    ("<html><body>Superset</body></html>", "not as a Pinot broker"),
    ({"exceptions": [{"errorCode": 305, "message": "SegmentsUnavailable"}], "numServersQueried": 1,
      "numServersResponded": 1}, "Pinot could not answer"),
    ({"exceptions": [], "numServersQueried": 1, "numServersResponded": 0}, "Pinot could not answer"),
])  # fmt: skip
def test_a_failed_query_gets_the_hint_that_fits_it(answer: object, hint: str) -> None:
    """Every failure said "`rtca up` starts what is down", also for a broker that was up and refused the SQL."""
    from fake_http import SlowHandler, serving

    class Answer(SlowHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            if isinstance(answer, str):
                body = answer.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.answer(200, answer)

    with serving(Answer) as url, pytest.raises(ServiceError) as failure:
        pinot_frame(Settings(pinot={"broker_url_override": url}), "SELECT nocol FROM t")  # type: ignore[arg-type]
    said = str(failure.value.hint)
    assert hint in said and ("rtca up" in said) == (hint == "Pinot could not answer"), said


def test_a_series_of_one_row_is_drawn_as_a_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line of one point draws nothing: right after an ingest starts the chart said "1 rows" and showed none."""
    import pandas as pd

    from rtca.notebook import live

    rows = [1]
    monkeypatch.setattr(live, "pinot_frame", lambda settings, sql: pd.DataFrame(
        {"t": [1_700_000_000_000 + i for i in range(rows[0])], "y": [1.0] * rows[0]}))
    view = live_chart(Settings(), "one", [Trace("price", "SELECT 1", "t", "y")], product_table=None)
    view.refresh()
    assert view.figure.data[0].mode == "markers"
    rows[0] = 3
    view.refresh()
    assert view.figure.data[0].mode == "lines"


@pytest.mark.parametrize("build", ["live_volatility", "live_book_and_flow"])
def test_tables_of_one_minute_windows_show_the_windows_that_closed_in_the_last_minutes(
        monkeypatch: pytest.MonkeyPatch, build: str) -> None:  # fmt: skip
    """A window's row carries its start and comes when it closes: `minutes=1` read `ago('PT1M')` and showed none."""
    import pandas as pd

    from rtca.notebook import live

    sent: list[str] = []
    monkeypatch.setattr(live, "_products_found", lambda *args, **kwargs: (["A-USD"], True))
    monkeypatch.setattr(live, "pinot_frame", lambda settings, sql: sent.append(sql) or pd.DataFrame())
    getattr(live, build)(Settings(), minutes=1).refresh()
    windowed = [sql for sql in sent if Settings().tables.volatility in sql or Settings().tables.trade_flow in sql]
    assert windowed and all("ago('PT2M')" in sql for sql in windowed)
    assert all("ago('PT1M')" in sql for sql in sent if sql not in windowed)


def test_products_that_begin_to_have_rows_join_the_dropdown_and_the_choice_stays(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The dropdown was filled once, when the view was built: a product an ingest started later never showed."""
    import pandas as pd

    from rtca.notebook import live

    found = [["A-USD", "B-USD"]]
    monkeypatch.setattr(live, "_products_found", lambda *args, **kwargs: (found[0], True))
    monkeypatch.setattr(live, "pinot_frame", lambda settings, sql: pd.DataFrame({"t": [1], "y": [1.0]}))
    monkeypatch.setattr(live, "PRODUCTS_EVERY_S", 0.0)
    view = live_chart(Settings(), "Market", [Trace("price", "WHERE product_id = '{product}'", "t", "y")],
                      product_table="prices")
    view.controls.product.value = "B-USD"
    found[0] = ["C-USD", "B-USD", "A-USD"]  # a newcomer, and the ranking changed
    view.refresh()
    assert list(view.controls.product.options) == ["A-USD", "B-USD", "C-USD"]
    assert view.controls.product.value == "B-USD"


def test_the_minute_still_forming_is_drawn_faded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bar of the minute under way holds only its seconds so far: drawn like the others it read as a volume drop."""
    import time

    import pandas as pd

    from rtca.notebook import live

    now_minute = int(time.time() // 60 * 60_000)
    minutes = [now_minute - 120_000, now_minute - 60_000, now_minute]
    monkeypatch.setattr(live, "_products_found", lambda *args, **kwargs: (["A-USD"], True))
    monkeypatch.setattr(live, "pinot_frame", lambda settings, sql: pd.DataFrame(
        {"minute": minutes, "volume": [5.0, 6.0, 1.0], "event_time": minutes, "price": [1.0] * 3,
         "ewma_mean": [1.0] * 3, "upper": [1.0] * 3, "lower": [1.0] * 3}))
    view = live.live_market(Settings())
    view.refresh()
    volume = next(trace for trace in view.figure.data if trace.type == "bar")
    if int(time.time() // 60 * 60_000) == now_minute:  # the minute did not turn during the refresh
        assert list(volume.marker.opacity) == [1.0, 1.0, live.FORMING_OPACITY]
    assert "forming" in volume.name


def test_alerts_of_different_units_are_markers_on_their_rule_s_line_not_values_on_one_axis(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A price move in %, a volatility z-score and a spread in bps were bars on one value axis."""
    import pandas as pd

    from rtca.notebook import live

    alerts = pd.DataFrame({"event_time": [1_700_000_000_000, 1_700_000_060_000], "rule": ["wide_spread", "vol"],
                           "message": ["spread 70 bps", "z 4.1"]})
    monkeypatch.setattr(live, "_products_found", lambda *args, **kwargs: (["A-USD"], True))
    monkeypatch.setattr(live, "pinot_frame", lambda settings, sql: alerts if "rule" in sql else pd.DataFrame())
    view = live.live_volatility(Settings())
    view.refresh()
    marks = view.figure.data[1]
    assert marks.mode == "markers" and list(marks.y) == ["wide_spread", "vol"]
    assert list(marks.text) == ["spread 70 bps", "z 4.1"]


def test_the_candle_still_forming_is_marked_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import pandas as pd

    from rtca.notebook import live

    minute = int(time.time() // 60 * 60_000)
    monkeypatch.setattr(live, "pinot_frame", lambda settings, sql: pd.DataFrame(
        {"bucket": [minute - 120_000, minute - 60_000, minute], "close": [1.0, 2.0, 3.0]}))
    frame = live.candles(Settings(), "A-USD")
    if int(time.time() // 60 * 60_000) == minute:  # the minute did not turn meanwhile
        assert list(frame["complete"]) == [True, True, False]


def test_numbers_given_as_text_are_taken_and_anything_else_is_refused_before_a_query(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """papermill's `-r minutes 30` passes '30': `live_market(settings, interval='5')` failed in the controls with
    "'>' not supported between instances of 'str' and 'int'", after the product query had run."""
    import pandas as pd

    from rtca.errors import ConfigError
    from rtca.notebook import live

    asked: list[object] = []
    monkeypatch.setattr(live, "_products_found",
                        lambda *args, **kwargs: (asked.append(kwargs["minutes"]) or ["A-USD"], True))
    monkeypatch.setattr(live, "pinot_frame", lambda settings, sql: pd.DataFrame())
    view = live.live_market(Settings(), minutes="30", interval=" 5 ")  # type: ignore[arg-type]
    assert (view.controls.minutes.value, view.controls.interval.value, asked) == (30, 5.0, [30])
    assert live.live_market(Settings(), minutes=20.0).controls.minutes.value == 20  # -p minutes 20.0
    for given, said in [({"minutes": "abc"}, "parameter minutes: 'abc' is not a whole number at least 1"),
                        ({"minutes": 7.5}, "parameter minutes: 7.5 is not a whole number"),
                        ({"minutes": True}, "parameter minutes: True"),
                        ({"interval": "soon"}, "parameter interval: 'soon' is not a number above 0"),
                        ({"interval": "nan"}, "parameter interval: 'nan'"),
                        ({"product": 5}, "parameter product: 5 is not a product id")]:  # fmt: skip
        asked.clear()
        with pytest.raises(ConfigError, match=said) as refused:
            live.live_market(Settings(), **given)  # type: ignore[arg-type]
        assert f"-p {next(iter(given))} " in str(refused.value.hint) and asked == [], "refused before any query"
    with pytest.raises(ConfigError, match="parameter refreshes: 'x'"):
        view.run(refreshes="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="parameter minutes: 'an hour'"):
        live.candles(Settings(), "A-USD", minutes="an hour")  # type: ignore[arg-type]


#: A broker's answer to `SELEC 1` and to an unknown column, as Pinot 0.11 sent them (frames shortened): each
#: message is a Java stack trace, and each server of a query may send its own copy.
_PARSE_ERROR = {"errorCode": 150, "message": (
    "SQLParsingError:\norg.apache.pinot.sql.parsers.SqlCompilationException: Caught exception while parsing query: "
    "SELEC 1\n\tat org.apache.pinot.sql.parsers.CalciteSqlParser.compileToSqlNodeAndOptions(CalciteSqlParser.java:"
    "136)\n\tat org.apache.pinot.broker.api.resources.PinotClientRequest.executeSqlQuery(PinotClientRequest.java:"
    "212)\n...\nCaused by: org.apache.calcite.runtime.CalciteContextException: From line 1, column 1 to line 1, "
    "column 5: Non-query expression encountered in illegal context\n\tat java.base/jdk.internal.reflect.Native"
    "ConstructorAccessorImpl.newInstance0(Native Method)\n...\nCaused by: org.apache.calcite.runtime.Calcite"
    "Exception: Non-query expression encountered in illegal context\n\tat java.base/jdk.internal.reflect.Native"
    "ConstructorAccessorImpl.newInstance0(Native Method)\n")}  # fmt: skip
_COLUMN_ERROR = {"errorCode": 710, "message": (
    "UnknownColumnError:\norg.apache.pinot.spi.exception.BadQueryRequestException: Unknown columnName 'nocol' found "
    "in the query\n\tat org.apache.pinot.broker.requesthandler.BaseBrokerRequestHandler.getActualColumnName("
    "BaseBrokerRequestHandler.java:1794)\n")}  # fmt: skip


def test_pinot_s_error_is_its_code_and_first_line_not_a_java_stack() -> None:
    """The message was pinotdb's pretty-printed dict, cut at 300 characters in the middle of a stack frame."""
    from rtca.notebook.live import pinot_error

    assert pinot_error({"exceptions": [_COLUMN_ERROR, _COLUMN_ERROR], "numServersQueried": 2}) == (
        "Pinot error 710: UnknownColumnError: Unknown columnName 'nocol' found in the query")
    assert pinot_error({"exceptions": [_PARSE_ERROR]}) == (
        "Pinot error 150: SQLParsingError: Caught exception while parsing query: SELEC 1 (cause: Non-query "
        "expression encountered in illegal context)")
    unavailable = {"errorCode": 305, "message": "null:\n2 segments [t__0__1__20261130T1715Z, t__0__0__20261129T2225Z] "
                                                "unavailable"}  # fmt: skip
    assert pinot_error({"exceptions": [unavailable]}) == (
        "Pinot error 305: 2 segments [t__0__1__20261130T1715Z, t__0__0__20261129T2225Z] unavailable")
    assert pinot_error({"exceptions": [], "numServersQueried": 1}) is None and pinot_error("<html>") is None


@pytest.mark.stack
def test_a_failed_query_says_what_pinot_said_and_what_to_do_about_it(stack_up: Settings) -> None:
    """Against the real broker: an unknown column, a syntax error (its hint sent users to the schemas) and the
    controller's address taken for the broker's (it said `timed out: Out of -1, only -1 responded`)."""
    table = stack_up.tables.ticker
    with pytest.raises(ServiceError) as column:
        pinot_frame(stack_up, f"SELECT nocol FROM {table} LIMIT 1")
    said = str(column.value).splitlines()[0]
    assert said.endswith("Pinot error 710: UnknownColumnError: Unknown columnName 'nocol' found in the query"), said
    assert "schema.json" in str(column.value.hint)
    with pytest.raises(ServiceError) as parse:
        pinot_frame(stack_up, "SELEC 1")
    assert "Pinot error 150: SQLParsingError:" in str(parse.value) and "\tat" not in str(parse.value)
    assert "could not parse this SQL" in str(parse.value.hint) and "schema.json" not in str(parse.value.hint)
    controller = stack_up.model_copy(update={"pinot": stack_up.pinot.model_copy(
        update={"broker_url_override": stack_up.pinot.controller_url})})  # fmt: skip
    with pytest.raises(ServiceError) as other:
        pinot_frame(controller, "SELECT 1")
    said = str(other.value)
    assert "not as a Pinot broker" in str(other.value.hint) and "HTTP 404" in said, said
    assert "timed out" not in said and "Out of -1" not in said, said


def test_a_view_without_products_says_so_when_it_has_no_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Feed health with no ingest writing said `refresh 1: 0 rows in 117 ms` and nothing else: the note was only
    for views with a product."""
    import pandas as pd

    from rtca.notebook import live

    monkeypatch.setattr(live, "pinot_frame", lambda settings, sql: pd.DataFrame())
    view = live.live_feed_health(Settings(), minutes=5)
    assert view.run(refreshes=1) == 0
    assert "0 rows" in view.controls.status.value
    assert "(no rows in the last 5 min: is data flowing? `rtca status` shows the ingest)" in \
        view.controls.status.value


@pytest.mark.stack
def test_candles_of_a_product_without_trades_say_so_and_name_products_that_have_some(stack_up: Settings,
                                                                                   unique: str) -> None:
    """`live.candles(settings, "NOPE-USD")` returned an empty DataFrame and nothing else."""
    import warnings

    from rtca.notebook.live import candles

    traded = products(stack_up, stack_up.tables.matches, minutes=60)
    assert traded, "the replay's trades reach the matches table"
    with pytest.warns(UserWarning, match=f"candles: no rows for 'NOPE-{unique}' in the last 60 min; products "
                                         f"with data: {traded[0]}") as said:  # fmt: skip
        assert candles(stack_up, f"NOPE-{unique}").empty
    assert [w.category.__name__ for w in said] == ["NoRowsWarning"]
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        assert not candles(stack_up, traded[0]).empty
    assert not [w for w in quiet if w.category.__name__ == "NoRowsWarning"]


def test_candles_of_an_unknown_size_are_refused_before_any_query() -> None:
    """`candle_size='7m'` is named with the sizes there are, not a query error (nor a broker error) at refresh."""
    from rtca.errors import ConfigError
    from rtca.notebook.live import live_candles

    settings = Settings(pinot={"broker_port": closed_port()})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown candle size '7m'"):
        live_candles(settings, size="7m")


def test_candles_started_again_with_another_size_stop_the_earlier_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """The view's kind named its size: a cell run again with another size left the first view querying, unseen."""
    import pandas as pd

    from rtca.notebook import live

    monkeypatch.setattr(live, "pinot_frame", lambda settings, sql: pd.DataFrame())

    async def scenario() -> tuple[bool, bool]:
        minute, hour = (live.live_candles(Settings(), product="A", size=size, interval=0.05) for size in ("1m", "1h"))
        minute.start()
        await asyncio.sleep(0.1)
        hour.start()
        await asyncio.sleep(0.1)
        running = (minute.refreshing, hour.refreshing)
        hour.stop()
        return running

    assert asyncio.run(scenario()) == (False, True)


def test_an_empty_chart_names_only_products_with_rows_in_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingest stopped an hour ago: the dropdown falls back to products of any time, and the note called them
    "products with data" in the last 15 minutes, where they have none either."""
    import warnings

    import pandas as pd

    from rtca.notebook import live

    def frame(settings: Settings, sql: str) -> pd.DataFrame:
        if "GROUP BY product_id" in sql and "ago(" not in sql:  # products of any time
            return pd.DataFrame({"product_id": ["BTC-USD", "ETH-USD"], "n": [900, 500]})
        return pd.DataFrame()  # nothing in any window

    monkeypatch.setattr(live, "pinot_frame", frame)
    view = live.live_market(Settings(), minutes=15)
    assert list(view.controls.product.options) == ["BTC-USD", "ETH-USD"]
    view.refresh()
    assert "products with data" not in view.note and "is data flowing?" in view.note
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        live.candles(Settings(), "BTC-USD", minutes=15)
    assert [str(w.message) for w in caught] == [
        "candles: no rows in the last 15 min: is data flowing? `rtca status` shows the ingest"]


def test_candles_of_no_product_in_particular_are_the_most_traded_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """None meant "the most active product" everywhere but here, which refused it saying the table was empty."""
    import pandas as pd

    from rtca.errors import ConfigError
    from rtca.notebook import live

    sent: list[str] = []
    traded: list[str] = ["ETH-USD", "BTC-USD"]

    def frame(settings: Settings, sql: str) -> pd.DataFrame:
        sent.append(sql)
        if "GROUP BY product_id" in sql:
            return pd.DataFrame({"product_id": traded, "n": [9, 5][:len(traded)]})
        return pd.DataFrame({"bucket": [1_700_000_000_000], "close": [1.0]})

    monkeypatch.setattr(live, "pinot_frame", frame)
    assert len(live.candles(Settings(), None, minutes=15)) == 1
    assert "product_id = 'ETH-USD'" in sent[-1]
    traded.clear()
    with pytest.raises(ConfigError, match="no product to chart candles for"):
        live.candles(Settings(), None)

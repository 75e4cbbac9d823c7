"""Live plotly figures over Pinot for the exploratory notebooks.

A `LiveView` owns a `go.FigureWidget`, a few ipywidgets controls and one refresh function that queries Pinot and
updates the traces in place (no flicker, no new output per refresh). The loop is finite by default
(`refreshes=`), so papermill and nbval finish; workshops raise it or call `start()` to keep refreshing in the
background of the kernel while the controls stay responsive.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import ipywidgets as widgets
import pandas as pd
import pinotdb
import pinotdb.exceptions
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rtca.errors import ConfigError, RtcaError, ServiceError
from rtca.settings import Settings
from rtca.stack.remote import http_options


QUERY_TIMEOUT_S = 10.0
"""A query that takes longer fails the refresh (with a message) instead of hanging the cell."""


class _Percent:
    """pinotdb formats every query as a DB-API `%` template, after an escaping that turns `%%` into `%` and leaves
    `%(` as a placeholder (a product named `A%(x)s` is a KeyError, `'100%%'` is sent as `'100%'`): each `%` of the
    SQL is passed as a parameter (not quoted: it is no str), so the broker gets the SQL as written."""

    def __str__(self) -> str:
        return "%"


_PERCENT = {"percent": _Percent()}


def pinot_frame(settings: Settings, sql: str) -> pd.DataFrame:
    """Run SQL on the Pinot broker through pinotdb's DB-API and return a DataFrame (column names kept). Its HTTP
    session is the workbench's (basic auth and TLS trust of a secured Pinot, a timeout); a broker that does not
    answer is a `ServiceError` that says what to do, not a stack of httpx frames."""
    url = httpx.URL(settings.pinot.broker_url)
    with httpx.Client(timeout=QUERY_TIMEOUT_S, **http_options(settings, "pinot")) as session:
        connection = pinotdb.connect(host=url.host, port=url.port or (443 if url.scheme == "https" else 80),
                                     path=url.path.rstrip("/") + "/query/sql", scheme=url.scheme, session=session)
        cursor = None
        try:
            cursor = connection.cursor()
            cursor.execute(sql.replace("%", "%(percent)s"), _PERCENT)
            columns = [column[0] for column in cursor.description or []]
            return pd.DataFrame(cursor.fetchall(), columns=columns)
        except (httpx.HTTPError, pinotdb.exceptions.Error) as exc:
            raise _query_failed(settings, exc, getattr(cursor, "raw_query_response", None)) from None
        finally:
            connection.close()


_STACK_HINT = "`rtca status` shows the stack, `rtca up` starts what is down"
_ADDRESS_HINT = "`rtca config` shows the broker URL used (RTCA_PINOT__BROKER_PORT and the like move it)"
_NOT_A_BROKER = "the address answers, but not as a Pinot broker"
#: Pinot's error codes for a query its servers could not answer (not the query's fault): segments or servers
#: unavailable, servers not responding, execution timeout, broker timeout.
_SERVING_CODES = frozenset({240, 250, 305, 427, 450})
_SQL_PARSING_CODE = 150
_TABLE_MISSING_CODE = 190
_JAVA_CLASS = re.compile(r"^(?:[a-z_][\w$]*\.)+[A-Z][\w$]*: ")  # org.apache.pinot...SomeException:


def _java_message(line: str) -> str:
    return _JAVA_CLASS.sub("", line.strip().removeprefix("Caused by: "))


def pinot_error(payload: object) -> str | None:
    """Pinot's exceptions in a broker's answer, one line each: the error code, the first line of the message (its
    error name and what it says) and, when there is one, the innermost cause (where a SQL parse stopped); None
    without any. The whole message is a Java stack trace: pinotdb's pretty-printed dict of it, cut at 300
    characters, ended mid-frame (`'\\tat org.apache.pinot.broker...`)."""
    if not isinstance(payload, dict):
        return None
    said: list[str] = []
    for exception in payload.get("exceptions") or []:
        if not isinstance(exception, dict):
            continue
        lines = [line.strip() for line in str(exception.get("message", "")).splitlines()
                 if line.strip() and not line.strip().startswith(("at ", "..."))]  # fmt: skip
        first = lines[0] if lines else "(no message)"
        if first.endswith(":") and len(lines) > 1:  # "UnknownColumnError:", then the exception saying what
            first = f"{first} {_java_message(lines[1])}".removeprefix("null: ")  # an error without a name
        causes = [_java_message(line) for line in lines if line.startswith("Caused by: ")]
        if causes and causes[-1] not in first:
            first += f" (cause: {causes[-1][:200]})"
        line = f"Pinot error {exception.get('errorCode', '?')}: {first}"
        if line not in said:  # each server of the query sends its own copy
            said.append(line)
    return "; ".join(said) or None


def _error_codes(payload: object, text: str) -> set[int]:
    if isinstance(payload, dict):
        return {int(e["errorCode"]) for e in payload.get("exceptions") or []
                if isinstance(e, dict) and str(e.get("errorCode", "")).isdigit()}  # fmt: skip
    return {int(code) for code in re.findall(r"'errorCode': (\d+)", text)}


def _query_failed(settings: Settings, exc: Exception, answer: object) -> ServiceError:
    """The error of a failed query: Pinot's own message in a line when the broker sent one; for an address that
    is no broker, what did answer instead of pinotdb's words for it (`timed out: Out of -1, only -1 responded`:
    nothing timed out)."""
    payload = answer.get("response") if isinstance(answer, dict) else None
    hint = _query_hint(exc, payload)
    if hint.startswith(_NOT_A_BROKER) and isinstance(answer, dict):
        body = payload if isinstance(payload, str) else json.dumps(payload)
        said = f"the answer is no Pinot broker's: HTTP {answer.get('status_code')}: {' '.join(body.split())[:150]}"
    else:
        said = pinot_error(payload) or f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return ServiceError("pinot-broker", f"query failed at {settings.pinot.broker_url}: {said}", hint=hint)


def _query_hint(exc: Exception, payload: object = None) -> str:
    """What to do about a failed query: the table, the SQL, the stack or the broker's address."""
    text = str(exc)
    codes = _error_codes(payload, text)
    if _TABLE_MISSING_CODE in codes or "TableDoesNotExistError" in text:  # the broker answers, the table is not there
        return "the table does not exist yet: `rtca pinot apply` (or runbooks/20-pinot-tables) creates the tables"
    if isinstance(exc, httpx.TransportError):
        return f"no broker answers there: {_STACK_HINT}; {_ADDRESS_HINT}"
    if _SQL_PARSING_CODE in codes:
        return ("Pinot could not parse this SQL: its message says where (line, column); names that are SQL words "
                "take double quotes (\"value\"), text single quotes")
    if codes and not codes & _SERVING_CODES:  # the broker answered and refused the query itself
        return "Pinot refused this SQL: the columns of each table are in infra/pinot/<table>/schema.json"
    broker_like = isinstance(payload, dict) and ({"numServersQueried", "exceptions", "resultTable"} & set(payload))
    if (payload is not None and not broker_like) or "Out of -1" in text or "<html" in text.lower():
        return f"{_NOT_A_BROKER}: {_ADDRESS_HINT}"  # pinotdb's "Out of -1": an answer without a broker's fields
    return f"Pinot could not answer (its servers, or a broker that is starting): {_STACK_HINT}; {_ADDRESS_HINT}"


def check_parameters() -> None:
    """A notebook's first cell: papermill only warns about a parameter the notebook does not take (`-p prodcut
    BTC-USD` charted the default product, rc 0), so it is refused here, naming those the notebook takes; the
    workbench's errors then show as their message and hint, without a traceback through the library."""
    from rtca.runbook import check_parameters as refuse_unknown

    refuse_unknown("notebook", ConfigError)


def number_parameter(name: str, value: object, *, whole: bool, above: float = 0, at_least: float | None = None,
                     example: str) -> float:
    """A numeric parameter as a number: papermill's `-r NAME 30` passes the string '30' and `-p NAME abc` the
    string 'abc', which failed deep in a view (`int('abc')`, `'>' not supported between 'str' and 'int'`). A
    number, or a string of one, is taken; anything else is a `ConfigError` naming the parameter and the form."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    fits = (number is not None and math.isfinite(number) and (not whole or number.is_integer())
            and (number >= at_least if at_least is not None else number > above))  # fmt: skip
    if not fits or number is None:
        least = f"at least {at_least:g}" if at_least is not None else f"above {above:g}"
        raise ConfigError(f"parameter {name}: {value!r} is not {'a whole number' if whole else 'a number'} {least}",
                          hint=f"e.g. {name}={example} (papermill: -p {name} {example})")
    return int(number) if whole else number


def product_parameter(value: object) -> str | None:
    """The `product` parameter: None (or empty) for the most active one, else a product id as text."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"parameter product: {value!r} is not a product id",
                          hint="e.g. product='BTC-USD' (papermill: -p product BTC-USD), or None for the most active")
    return value.strip()


def to_datetime(values: pd.Series) -> pd.Series:
    """Pinot returns TIMESTAMP columns as text and time functions as epoch ms: accept both."""
    if pd.api.types.is_numeric_dtype(values):
        return pd.to_datetime(values, unit="ms")
    return pd.to_datetime(values)


def products(settings: Settings, table: str, *, limit: int = 50, minutes: int | None = None,
             rank_table: str | None = None) -> list[str]:
    """Products seen in `table`, most active first (for the product dropdown): those of the last `minutes` when
    any are (the chart shows that window: the busiest product of last week's data would show an empty chart),
    else all. With `rank_table` (the trades), "most active" is its row count: a table of one record per product
    and second (book) or minute (volatility) ranks every product alike, an arbitrary one first."""
    return _products_found(settings, table, limit=limit, minutes=minutes, rank_table=rank_table)[0]


def _products_found(settings: Settings, table: str, *, limit: int = 50, minutes: int | None = None,
                    rank_table: str | None = None) -> tuple[list[str], bool]:
    """`products`, and whether they are those of the last `minutes` (else of any time)."""
    recent = active_products(settings, table, minutes, limit=limit) if minutes else []
    found, window = (recent, minutes) if recent else (active_products(settings, table, None, limit=limit), None)
    if rank_table and found:
        ranked = active_products(settings, rank_table, window, limit=limit)
        found = [p for p in ranked if p in found] + [p for p in found if p not in ranked]
    return found, bool(recent)


def active_products(settings: Settings, table: str, minutes: int | None, *, limit: int = 50) -> list[str]:
    """Products with rows in `table` in the last `minutes` (None: ever), most rows first."""
    where = f"WHERE event_time > ago('PT{int(minutes)}M')" if minutes else ""
    frame = pinot_frame(settings, f"SELECT product_id, COUNT(*) AS n FROM {table} {where} GROUP BY product_id "
                                  f"ORDER BY COUNT(*) DESC, product_id LIMIT {limit}")
    return [str(p) for p in frame["product_id"]] if not frame.empty else []


@dataclass
class Controls:
    product: widgets.Dropdown
    minutes: widgets.IntSlider
    interval: widgets.FloatSlider
    status: widgets.Label

    @classmethod
    def create(cls, options: Sequence[str], *, product: str | None, minutes: int, interval: float) -> Controls:
        # the product asked for stays chosen even without rows yet (its chart is empty until they come), and
        # values beyond the sliders' usual range widen it rather than being cut to it; values no slider can hold
        # are refused (a negative interval fails `run()` after a refresh, 0 queries back to back, 0 minutes shows 1)
        if not interval > 0 or not minutes >= 1:
            raise ConfigError(f"minutes={minutes!r}, interval={interval!r}: the window is at least 1 minute and "
                              f"refreshes are some seconds apart", hint="e.g. minutes=15, interval=5.0")
        choices = list(options) if not product or product in options else [product, *options]
        return cls(
            product=widgets.Dropdown(options=choices, value=product or (choices[0] if choices else None),
                                     description="product"),
            # the view redraws on a change (`LiveView._on_control`): once, when the slider is let go, not once per
            # minute it passes while dragged (each a synchronous refresh: every query of the view on the kernel)
            minutes=widgets.IntSlider(value=minutes, min=1, max=max(240, minutes), description="minutes",
                                      continuous_update=False),
            interval=widgets.FloatSlider(value=interval, min=min(1.0, interval), max=max(60.0, interval), step=1,
                                         description="refresh s"),
            status=widgets.Label(value=""),
        )

    def box(self) -> widgets.HBox:
        return widgets.HBox([self.product, self.minutes, self.interval, self.status])


_BACKGROUND: dict[str, LiveView] = {}
"""The view of each kind refreshing in the background: running a notebook cell again builds a new view, and the
earlier one's loop would otherwise go on querying Pinot, unseen, for the rest of the kernel's life."""


class LiveView:
    """A figure plus controls, refreshed from Pinot by `update(view) -> rows shown`; `kind` names what it shows
    (one background loop per kind)."""

    def __init__(self, figure: go.FigureWidget, controls: Controls,
                 update: Callable[[LiveView], int], *, kind: str = "view") -> None:
        self.figure = figure
        self.controls = controls
        self.kind = kind
        self._update = update
        self.refreshed = 0
        self.last_rows = 0
        #: What the last refresh has to say beside its row count (set by `update`, e.g. a product without rows).
        self.note = ""
        self._task: asyncio.Task[None] | None = None
        self._refreshing_in: int | None = None  # the thread a refresh runs in (a background one: an executor's)
        self._again = False  # a control changed while that refresh ran: draw again once it is done
        self._lock = threading.Lock()
        self.widget = widgets.VBox([controls.box(), figure])
        earlier = _BACKGROUND.get(kind)
        if earlier is not None:  # the cell that built it ran again: its figure left the notebook, its loop ends
            earlier.stop()
        # a product or window chosen in the controls is drawn at once, not at a next refresh that never comes
        # once `run()` is over and no `start()` loop runs
        controls.product.observe(self._on_control, names="value")
        controls.minutes.observe(self._on_control, names="value")

    def _on_control(self, change: object) -> None:
        with self._lock:
            refreshing_in = self._refreshing_in
            if refreshing_in == threading.get_ident():  # the refresh itself filled the dropdown (an empty table)
                return
            if refreshing_in is not None:  # a background refresh runs: it draws the new choice when it is done
                self._again = True
                return
        try:
            self.refresh()
        except Exception as exc:  # an observer's exception would only reach the kernel log
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        reason = str(exc) if isinstance(exc, RtcaError) else f"{type(exc).__name__}: {exc}"
        self.controls.status.value = f"refresh failed ({time.strftime('%H:%M:%S')}): {reason}"[:300]

    @property
    def closed(self) -> bool:
        """Whether `view.widget` or `view.figure` was closed: nothing would show a refresh, the loop ends."""
        return self.widget.comm is None or self.figure.comm is None

    def refresh(self) -> int:
        """Query once and redraw; returns the number of rows drawn (tests and runbooks check it). A control changed
        while a background refresh ran is drawn right after it."""
        again = True
        while again:
            started = time.perf_counter()
            with self._lock:
                self._refreshing_in, self._again = threading.get_ident(), False
            try:
                with self.figure.batch_update():
                    self.last_rows = self._update(self)
            finally:
                with self._lock:
                    self._refreshing_in, again = None, self._again
            self.refreshed += 1
            self.controls.status.value = (f"refresh {self.refreshed}: {self.last_rows} rows in "
                                          f"{(time.perf_counter() - started) * 1000:.0f} ms"
                                          + (f" ({self.note})" if self.note else ""))  # fmt: skip
        return self.last_rows

    def run(self, refreshes: int = 3) -> int:
        """Refresh `refreshes` times, `interval` seconds apart (blocking: for papermill and nbval)."""
        refreshes = int(number_parameter("refreshes", refreshes, whole=True, at_least=1, example="3"))
        for index in range(refreshes):
            self.refresh()
            if index + 1 < refreshes:
                time.sleep(self.controls.interval.value)
        return self.last_rows

    def start(self, refreshes: int | None = None) -> None:
        """Keep refreshing in the kernel's event loop (controls stay live); `stop()` ends it. An earlier view of
        the same kind that still refreshes is stopped first."""

        async def loop() -> None:
            count = 0
            while (refreshes is None or count < refreshes) and not self.closed:
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.refresh)
                except Exception as exc:  # a broker blip or odd rows: say so in the status, try again next time
                    self._failed(exc)
                count += 1
                await asyncio.sleep(self.controls.interval.value)

        earlier = _BACKGROUND.get(self.kind)
        if earlier is not None and earlier is not self:
            earlier.stop()
        self.stop()
        self._task = asyncio.ensure_future(loop())
        _BACKGROUND[self.kind] = self

    @property
    def refreshing(self) -> bool:
        """Whether a background loop runs (until its refreshes are done, or `stop()`)."""
        return self._task is not None and not self._task.done()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if _BACKGROUND.get(self.kind) is self:
            del _BACKGROUND[self.kind]


@dataclass(frozen=True)
class Trace:
    """One trace of a live figure: a SQL query (placeholders {product}, {minutes}, {since}, {windows_since} for
    tables of one-minute windows) and its columns. A query with a LIMIT orders newest first (`ORDER BY ... DESC`): a
    window with more rows than the limit then shows its newest ones, not a chart that stops short of now; the rows
    are drawn in `x` order."""

    name: str
    sql: str
    x: str
    y: str
    row: int = 1
    #: line | bar | band (filled to the trace before it) | events (a marker per row at y = a category, e.g. an
    #: alert's rule, with the `text` column on hover: values of different units never share an axis) | candles
    #: (a candlestick of the columns open, high, low and close; `y` names the close)
    kind: str = "line"
    #: Rows that share an x (one per ingest) are added up before drawing.
    sum_by_x: bool = False
    #: The hover text column of "events".
    text: str | None = None
    #: Bars of one-minute buckets: the minute still forming (it holds only the seconds so far) is drawn faded.
    forming_minute: bool = False


PRODUCTS_EVERY_S = 60.0
"""How often a view looks for products that began to have rows since it was built (added to its dropdown)."""
FORMING_OPACITY = 0.35


def _forming_opacity(times: pd.Series, now_ms: float) -> list[float]:
    """Per bar: faded for the minute that contains `now_ms` (or a later one, a clock ahead), else opaque."""
    minute_start = pd.Timestamp(now_ms // 60_000 * 60_000, unit="ms")
    return [FORMING_OPACITY if t >= minute_start else 1.0 for t in times]


def _more_products(dropdown: widgets.Dropdown, found: Sequence[str]) -> None:
    """Add the products found that the dropdown lacks at its end (its order and choice stay as they were: a
    dropdown reordering itself under the user's pointer every minute would be worse than an unranked newcomer)."""
    known = list(dropdown.options)
    new = [p for p in found if p not in known]
    if not new:
        return
    chosen = dropdown.value
    dropdown.options = [*known, *new]  # ipywidgets selects the first option on a change of options
    if dropdown.value == dropdown.options[0] and chosen in dropdown.options:  # not a choice the user made since
        dropdown.value = chosen


def live_chart(settings: Settings, title: str, traces: Sequence[Trace], *, product_table: str | None,
               product: str | None = None, minutes: int = 15, interval: float = 5.0,
               rank_table: str | None = None, kind: str | None = None) -> LiveView:
    """A FigureWidget with one subplot row per distinct `Trace.row`, refreshed from Pinot.

    With `product_table`, a product dropdown (filled from that table, most traded first with `rank_table`) fills
    `{product}` in every query. `minutes` and `interval` may be strings of numbers (papermill's `-r`). Starting a
    view stops the one of its `kind` (default: the title) started before.
    """
    minutes = int(number_parameter("minutes", minutes, whole=True, at_least=1, example="15"))
    interval = number_parameter("interval", interval, whole=False, example="5.0")
    product = product_parameter(product)
    options, recent = (_products_found(settings, product_table, minutes=minutes, rank_table=rank_table)
                       if product_table else ([], False))  # fmt: skip
    controls = Controls.create(options, product=product, minutes=minutes, interval=interval)
    controls.product.layout.display = None if product_table else "none"
    rows = max(t.row for t in traces)
    figure = go.FigureWidget(make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                                           row_heights=[0.6] + [0.4 / (rows - 1)] * (rows - 1) if rows > 1
                                           else None))
    for trace in traces:
        if trace.kind == "bar":
            figure.add_bar(name=trace.name, row=trace.row, col=1)
        elif trace.kind == "candles":
            figure.add_candlestick(name=trace.name, row=trace.row, col=1)
            figure.update_xaxes(rangeslider_visible=False)  # a candlestick's own slider would squeeze the rows
        elif trace.kind == "events":
            figure.add_scatter(name=trace.name, mode="markers", row=trace.row, col=1, marker={"size": 10},
                               hovertemplate="%{x}<br>%{y}: %{text}<extra></extra>")
        else:
            band = trace.kind == "band"
            figure.add_scatter(name=trace.name, mode="lines", row=trace.row, col=1,
                               fill="tonexty" if band else None, line={"width": 0} if band else None,
                               fillcolor="rgba(99,110,250,0.2)" if band else None)
    figure.update_layout(height=260 + 200 * rows, margin={"l": 40, "r": 10, "t": 40, "b": 30},
                         legend={"orientation": "h"})

    looked_for_products = time.monotonic()

    def update(view: LiveView) -> int:
        nonlocal looked_for_products, recent
        dropdown = view.controls.product
        if product_table and (not dropdown.options or time.monotonic() - looked_for_products >= PRODUCTS_EVERY_S):
            looked_for_products = time.monotonic()
            found, recent = _products_found(settings, product_table, minutes=int(view.controls.minutes.value),
                                            rank_table=rank_table)  # fmt: skip
            if found and not dropdown.options:  # an empty table when the view was built
                dropdown.options = found
                dropdown.value = product if product in found else found[0]
            else:  # products whose rows began after the view was built (a new ingest, another source)
                _more_products(dropdown, found)
        chosen = str(view.controls.product.value or "")
        window = int(view.controls.minutes.value)
        since = f"event_time > ago('PT{window}M')"
        # rows of one-minute windows carry the window's start and come once it has closed: "the last N minutes"
        # are then the N windows that closed in them (from N + 1 minutes ago), else a 1-minute view shows none
        windows_since = f"event_time > ago('PT{window + 1}M')"
        values = {"product": chosen.replace("'", "''"), "minutes": window, "since": since,  # quoted for SQL only
                  "windows_since": windows_since}  # fmt: skip
        frames: dict[str, pd.DataFrame] = {}  # traces that share a query run it once per refresh
        for trace in traces:  # every query before any trace changes: one that fails leaves the figure as it was,
            sql = trace.sql.format(**values)  # not half of it on the product just chosen and half on the one before
            if sql not in frames:
                frames[sql] = pinot_frame(settings, sql)
        shown = sum(len(frame) for frame in frames.values())
        for trace, data in zip(traces, view.figure.data, strict=True):
            frame = frames[trace.sql.format(**values)]  # the window's newest rows (DESC LIMIT), drawn oldest first
            if trace.sum_by_x and not frame.empty:
                frame = frame.groupby(trace.x, as_index=False)[trace.y].sum()
            frame = frame.sort_values(trace.x, kind="stable") if not frame.empty else frame
            times = to_datetime(frame[trace.x]) if not frame.empty else []
            data.x = times
            if trace.kind == "candles":  # a candlestick has no y: its four prices
                data.open, data.high, data.low, data.close = (
                    frame[c] if not frame.empty else [] for c in ("open", "high", "low", trace.y))
            else:
                data.y = frame[trace.y] if not frame.empty else []
            if trace.kind == "line":  # a line of one point draws nothing (right after an ingest starts, say)
                data.mode = "lines" if len(frame) > 1 else "markers"
            if trace.text:
                data.text = frame[trace.text] if not frame.empty else []
            if trace.forming_minute:
                data.marker.opacity = _forming_opacity(times, time.time() * 1000) if not frame.empty else 1.0
        view.figure.layout.title = f"{title}{': ' + chosen if product_table else ''} (last {window} min)"
        # the dropdown lists products of any time when none had rows in the window: none to name then
        view.note = "" if shown else _no_rows_note(chosen, window, view.controls.product.options if recent else [])
        return shown

    return LiveView(figure, controls, update, kind=kind or title)


def _no_rows_note(product: str, minutes: int, options: Sequence[str]) -> str:
    """Why a product's chart is empty, and which products do have data (a product the feed does not carry, or a
    typo, would otherwise show an empty chart and nothing else)."""
    others = [p for p in options if p != product][:5]
    if not others:
        return f"no rows in the last {minutes} min: is data flowing? `rtca status` shows the ingest"
    return f"no rows for {product!r} in the last {minutes} min; products with data: {', '.join(others)}"


class NoRowsWarning(UserWarning):
    """A query of the notebooks found no rows: a DataFrame shown empty says neither why nor what has data."""


def live_market(settings: Settings, *, product: str | None = None, minutes: int = 15,
                interval: float = 5.0) -> LiveView:
    """Price with its EWMA band (mean ± 2 std) from the statistics table, and traded volume per minute."""
    stats, matches = settings.tables.ticker_stats, settings.tables.matches
    band = (f"SELECT event_time, price, ewma_mean, ewma_mean + 2 * ewma_std AS upper, "
            f"ewma_mean - 2 * ewma_std AS lower FROM {stats} WHERE product_id = '{{product}}' AND {{since}} "
            f"AND ewma_std IS NOT NULL "  # null while the statistics warm up
            f"ORDER BY event_time DESC LIMIT 100000")
    volume = (f"SELECT DATETRUNC('MINUTE', event_time) AS minute, SUM(size) AS volume FROM {matches} "
              f"WHERE product_id = '{{product}}' AND {{since}} GROUP BY DATETRUNC('MINUTE', event_time) "
              f"ORDER BY DATETRUNC('MINUTE', event_time) DESC LIMIT 10000")
    return live_chart(settings, "Market", [
        Trace("EWMA + 2σ", band, "event_time", "upper"),
        Trace("EWMA - 2σ", band, "event_time", "lower", kind="band"),
        Trace("EWMA", band, "event_time", "ewma_mean"),
        Trace("price", band, "event_time", "price"),
        Trace("volume / min (this minute faded: forming)", volume, "minute", "volume", row=2, kind="bar",
              forming_minute=True),
    ], product_table=stats, product=product, minutes=minutes, interval=interval,
       rank_table=settings.tables.matches)


def live_book_and_flow(settings: Settings, *, product: str | None = None, minutes: int = 15,
                       interval: float = 5.0) -> LiveView:
    """Spread and depth imbalance from the order-book table; taker buy and sell volume from trade flow."""
    book, flow = settings.tables.book, settings.tables.trade_flow
    book_sql = (f"SELECT event_time, spread_bps, imbalance FROM {book} WHERE product_id = '{{product}}' "
                f"AND {{since}} ORDER BY event_time DESC LIMIT 100000")
    flow_sql = (f"SELECT event_time, buy_volume, sell_volume, imbalance FROM {flow} WHERE product_id = "
                f"'{{product}}' AND {{windows_since}} ORDER BY event_time DESC LIMIT 100000")
    return live_chart(settings, "Order book and trade flow", [
        Trace("spread (bps)", book_sql, "event_time", "spread_bps"),
        Trace("book imbalance", book_sql, "event_time", "imbalance", row=2),
        Trace("taker buy volume", flow_sql, "event_time", "buy_volume", row=3, kind="bar"),
        Trace("taker sell volume", flow_sql, "event_time", "sell_volume", row=3, kind="bar"),
    ], product_table=book, product=product, minutes=minutes, interval=interval,
       rank_table=settings.tables.matches)


def live_volatility(settings: Settings, *, product: str | None = None, minutes: int = 60,
                    interval: float = 5.0) -> LiveView:
    """Realised volatility per closed window, and the alerts that fired for the product: one marker per alert on
    its rule's line (their values are %, z-scores, bps or counts: one value axis would compare them), the message
    on hover."""
    vol, alerts = settings.tables.volatility, settings.tables.alerts
    vol_sql = (f"SELECT event_time, realized_vol FROM {vol} WHERE product_id = '{{product}}' AND {{windows_since}} "
               f"AND realized_vol IS NOT NULL ORDER BY event_time DESC LIMIT 100000")  # null: under 2 returns
    return live_chart(settings, "Volatility and alerts", [
        Trace("realised volatility", vol_sql, "event_time", "realized_vol"),
        Trace("alerts", f"SELECT event_time, rule, message FROM {alerts} WHERE product_id = '{{product}}' "
                        f"AND {{since}} ORDER BY event_time DESC LIMIT 10000", "event_time", "rule", row=2,
              kind="events", text="message"),
    ], product_table=vol, product=product, minutes=minutes, interval=interval,
       rank_table=settings.tables.matches)


def live_feed_health(settings: Settings, *, minutes: int = 15, interval: float = 5.0) -> LiveView:
    """The ingest's own per-second health: message rate, exchange-to-receive lag, and the reconnects and missed
    trades of each second (the ticks' increments, which stay right across ingest restarts; the running counters
    start again at 0). Per second of all the ingests writing health (a background replay and a foreground
    `rtca ingest run`, say): rates and counts add up, the lags are the worst ingest's; one tick per row would
    draw their ticks as one line jumping between them."""
    health = settings.tables.feed_health
    second = "DATETRUNC('SECOND', event_time)"  # aliases differ from columns: Pinot 0.11 substitutes them in WHERE
    # per ingest (url) first: one ingest's two ticks in one second (the last one, after its flush, or a tick late
    # by a few ms) are one rate, not two to add; the increments are disjoint and add up
    ticks = (f"SELECT {second} AS second, url, MAX(msg_rate) AS rate, SUM(new_reconnects) AS reconnects_new, "
             f"SUM(new_missed_trades) AS missed_new FROM {health} WHERE kind = 'tick' AND {{since}} "
             f"GROUP BY {second}, url ORDER BY {second} DESC LIMIT 100000")
    lags = (f"SELECT {second} AS second, MAX(lag_ms_p50) AS p50, MAX(lag_ms_max) AS worst "
            f"FROM {health} WHERE kind = 'tick' AND {{since}} AND lag_ms_p50 IS NOT NULL "  # null: no timed frame
            f"GROUP BY {second} ORDER BY {second} DESC LIMIT 100000")
    return live_chart(settings, "Feed health", [
        Trace("messages / s", ticks, "second", "rate", sum_by_x=True),
        Trace("lag p50 (ms)", lags, "second", "p50", row=2),
        Trace("lag max (ms)", lags, "second", "worst", row=2),
        Trace("reconnects", ticks, "second", "reconnects_new", row=3, kind="bar", sum_by_x=True),
        Trace("missed trades", ticks, "second", "missed_new", row=3, kind="bar", sum_by_x=True),
    ], product_table=None, minutes=minutes, interval=interval)


_CANDLE_SPANS = {"1s": pd.Timedelta(seconds=1), "1m": pd.Timedelta(minutes=1), "1h": pd.Timedelta(hours=1),
                 "1d": pd.Timedelta(days=1)}


def live_candles(settings: Settings, *, product: str | None = None, minutes: int = 15, size: str = "1m",
                 interval: float = 5.0) -> LiveView:
    """Candles of `size` (`rtca.pinot.queries.candles_template`: SQL over the matches table, no topic of its own)
    as a candlestick with the VWAP as a line, and the volume of each candle below; one query per refresh."""
    from rtca.pinot.queries import candles_template

    sql = candles_template(settings, size)  # an unknown size is refused here, before any query
    matches = settings.tables.matches
    return live_chart(settings, f"Candles ({size})", [
        Trace("OHLC", sql, "bucket", "close", kind="candles"),
        Trace("VWAP", sql, "bucket", "vwap"),
        Trace("volume" + (" (this minute faded: forming)" if size == "1m" else ""), sql, "bucket", "volume", row=2,
              kind="bar", forming_minute=size == "1m"),
    ], product_table=matches, product=product, minutes=minutes, interval=interval,  # one kind whatever the size: a
        kind="Candles")  # cell run again with another size replaces the view it started  # fmt: skip


def candles(settings: Settings, product: str | None, *, minutes: int = 60, size: str = "1m") -> pd.DataFrame:
    """OHLCV and VWAP candles (`rtca.pinot.queries.candles_sql`), oldest first, `bucket` as a time (UTC), not the
    epoch milliseconds DATETRUNC returns; `complete` is False for the candle still forming (its volume and close
    are so far). No rows is a `NoRowsWarning` naming products that have some. `product` None: the most traded one
    of the window (as in the live views)."""
    from rtca.pinot.queries import candles_sql

    minutes = int(number_parameter("minutes", minutes, whole=True, at_least=1, example="60"))
    product = product_parameter(product) or next(iter(products(settings, settings.tables.matches, minutes=minutes)),
                                                 "")  # none: candles_sql says the table has no rows yet  # fmt: skip
    frame = pinot_frame(settings, candles_sql(settings, product, minutes=minutes, size=size))
    if not frame.empty:
        frame = frame.sort_values("bucket", ignore_index=True)  # asked newest first (the limit keeps the newest)
        frame["bucket"] = to_datetime(frame["bucket"])
        now = pd.Timestamp(time.time_ns(), unit="ns")  # UTC, naive like the buckets
        frame["complete"] = frame["bucket"] + _CANDLE_SPANS[size] <= now
    else:  # a product the feed does not carry, a typo or no trades in the window: say so, and which have some
        found = active_products(settings, settings.tables.matches, minutes)
        warnings.warn(NoRowsWarning(f"candles: {_no_rows_note(str(product), minutes, found)}"), stacklevel=2)
    return frame


def latest_alerts(settings: Settings, *, limit: int = 20) -> pd.DataFrame:
    """The newest alerts of every product (`rtca.pinot.queries.latest_alerts_sql`), newest first."""
    from rtca.pinot.queries import latest_alerts_sql

    return _with_times(pinot_frame(settings, latest_alerts_sql(settings, limit=limit)))


def feed_ticks(settings: Settings, *, limit: int = 5) -> pd.DataFrame:
    """The ingest's newest health ticks (`rtca.pinot.queries.feed_ticks_sql`): connected, reconnects, silence and
    the last error, newest first."""
    from rtca.pinot.queries import feed_ticks_sql

    return _with_times(pinot_frame(settings, feed_ticks_sql(settings, limit=limit)))


def gaps(settings: Settings, *, limit: int = 20) -> pd.DataFrame:
    """The newest gaps in the trade ids (`rtca.pinot.queries.gaps_sql`), newest first: no rows, no trade lost."""
    from rtca.pinot.queries import gaps_sql

    return _with_times(pinot_frame(settings, gaps_sql(settings, limit=limit)))


def _with_times(frame: pd.DataFrame) -> pd.DataFrame:
    """`event_time` as a time (Pinot returns a TIMESTAMP as text)."""
    if not frame.empty and "event_time" in frame:
        frame["event_time"] = to_datetime(frame["event_time"])
    return frame


def show(view: LiveView) -> None:
    """Display the controls and the figure (keeps notebook cells to one line)."""
    from IPython.display import display

    display(view.widget)

"""Every dashboard of the bundle in a real browser (headless Chromium from Debian's packages, driven by Selenium).

Superset renders charts in the browser from the saved form data, a path the chart-data endpoint does not cover
(the frontend builds its own query, formats the time axis, draws ECharts): an epoch-millisecond time column, for
one, passes the endpoint and breaks here. So this test logs in, opens each dashboard with live data behind it,
waits until no chart is loading, asserts that every chart drew something and none shows an error or Superset's
"row limit reached", and saves a screenshot per dashboard under `<run dir>/screenshots/`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtca.settings import Settings
from rtca.stack.secrets import superset_secrets
from rtca.superset.bundle import chart_uuids_of, load_bundle, of_kind

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.stack,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
                       reason="needs Debian's chromium and chromium-driver: "
                              "apt-get install -y chromium chromium-driver"),
]

#: What a chart draws: ECharts (canvas), a table, a big number; what marks an error or a chart still loading.
DRAWN = "canvas, table, .header-line, [data-test='big-number-header']"
ERROR = ("[data-test='error-message'], [data-test='alert'], .alert-danger, .ant-alert-error, "
         "[data-test='error-tooltip']")
LOADING = "[data-test='loading-indicator'], .loading"
#: Superset's "row limit reached" beside a chart's title (when its query returned row_limit rows): rows left out.
ROW_LIMIT_REACHED = "[data-test='slice-header'] .anticon-warning"


@pytest.fixture(scope="module")
def browser(stack_up: Settings) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="rtca-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1600,1300", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        _login(driver, stack_up)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _login(driver: object, settings: Settings) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{settings.superset.url}/login/")  # type: ignore[attr-defined]
    WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.ID, "username")))
    driver.find_element(By.ID, "username").send_keys(settings.superset.admin_user)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "password").send_keys(  # type: ignore[attr-defined]
        superset_secrets(settings).admin_password + "\n")
    from selenium.common.exceptions import TimeoutException

    for _ in range(3):  # on a loaded machine the Enter can come before the page's script listens: submit again
        try:
            WebDriverWait(driver, 40).until(lambda d: "/login" not in d.current_url)
            return
        except TimeoutException:
            for button in driver.find_elements(By.CSS_SELECTOR, "button[type='submit']"):  # type: ignore[attr-defined]
                button.click()
                break
    raise AssertionError(f"Superset's login did not go through: still at {driver.current_url}")  # type: ignore[attr-defined]


def _chart_states(driver: object) -> list[dict[str, object]]:
    """Per chart holder on the page: its title, whether it drew, loads, or shows an error (and the error text)."""
    script = f"""
      return Array.from(document.querySelectorAll('[data-test="dashboard-component-chart-holder"]')).map(h => {{
        const title = h.querySelector('[data-test="editable-title"], .header-title');
        const error = h.querySelector("{ERROR}");
        return {{title: title ? title.innerText : '?',
                 drawn: !!h.querySelector("{DRAWN}"),
                 row_limit_reached: !!h.querySelector("{ROW_LIMIT_REACHED}"),
                 loading: !!h.querySelector("{LOADING}"),
                 error: error ? error.innerText.slice(0, 300) : null,
                 text: h.innerText.slice(0, 120)}};
      }});"""
    return list(driver.execute_script(script))  # type: ignore[attr-defined]


def test_every_dashboard_renders_its_charts(stack_up: Settings, browser: object) -> None:
    from live_data import seed_live_data

    print(seed_live_data(stack_up))
    files = load_bundle(stack_up)
    shots = stack_up.run_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for dashboard in of_kind(files, "dashboard").values():
        slug, expected = dashboard["slug"], len(set(chart_uuids_of(dashboard)))
        browser.get(f"{stack_up.superset.url}/superset/dashboard/{slug}/")  # type: ignore[attr-defined]
        deadline = time.monotonic() + 90
        states: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            time.sleep(2)
            states = _chart_states(browser)
            settled = all(s["drawn"] or s["error"] for s in states) and not any(s["loading"] for s in states)
            if len(states) == expected and settled:
                break
        time.sleep(1.5)  # ECharts animates its first frame: let it finish for the screenshot
        states = _chart_states(browser)
        shot = shots / f"{slug}.png"
        browser.save_screenshot(str(shot))  # type: ignore[attr-defined]
        print(f"{slug}: {len(states)}/{expected} charts, drawn {sum(bool(s['drawn']) for s in states)}, "
              f"errors {sum(bool(s['error']) for s in states)} -> {shot}")
        if len(states) != expected:
            failures.append(f"{slug}: {len(states)} charts on the page, the bundle places {expected}")
        failures += [f"{slug}: {s['title']}: error: {s['error']}" for s in states if s["error"]]
        failures += [f"{slug}: {s['title']}: drew nothing ({s['text']!r})" for s in states
                     if not s["drawn"] and not s["error"]]
        failures += [f"{slug}: {s['title']}: Superset's row limit reached" for s in states if s["row_limit_reached"]]
    assert not failures, "\n".join(failures)


#: Records every chart-data request the page makes (its body, when it was sent and answered) and Superset's answer
#: (each query's SQL), installed in every new document before Superset's own scripts: what the frontend sends, and
#: what Superset sent to Pinot.
_RECORD_CHART_DATA = r"""
window.__rtcaChartData = [];
const rtcaFetch = window.fetch;
window.fetch = async function (input, init) {
  const url = typeof input === 'string' ? input : input.url;
  const started = Date.now();
  const response = await rtcaFetch.apply(this, arguments);
  if (url.includes('/api/v1/chart/data')) {
    const entry = {body: init && init.body ? String(init.body) : null, started, at: Date.now(), sql: null};
    window.__rtcaChartData.push(entry);
    response.clone().json().then(j => {
      entry.rows = (j.result || []).map(r => r.rowcount);
      entry.sql = (j.result || []).map(r => r.query || '');
    }).catch(() => {});
  }
  return response;
};
"""


def _chart_queries(driver: object, since: float) -> dict[int, list[tuple[str | None, str]]]:
    """Chart id -> (time_range, SQL) of each query the page sent since `since` (ms) and has an answer for."""
    import orjson

    out: dict[int, list[tuple[str | None, str]]] = {}
    for entry in driver.execute_script("return window.__rtcaChartData || []"):  # type: ignore[attr-defined]
        # sent since: an auto-refresh in flight when the filter changed answers after `since` with the old filter
        if entry["started"] < since or not entry["body"] or entry["sql"] is None:
            continue
        body = orjson.loads(entry["body"])
        chart_id = body.get("form_data", {}).get("slice_id")
        if chart_id is None:  # a filter's options (the Product filter's values)
            continue
        for query, sql in zip(body["queries"], entry["sql"], strict=False):
            out.setdefault(int(chart_id), []).append((query.get("time_range"), " ".join(sql.split())))
    return out


def _window(sql: str) -> tuple[str, str]:
    import re

    found = re.search(r"event_time >= '([^']+)' AND event_time < '([^']+)'", sql)
    assert found, f"no time window in {sql!r}"
    return found.group(1), found.group(2)


def _wait_for(driver: object, since: float, charts: set[int], timeout: float = 90) -> dict[int, list]:
    deadline = time.monotonic() + timeout
    while True:
        queries = _chart_queries(driver, since)
        if charts <= set(queries) or time.monotonic() > deadline:
            return queries
        time.sleep(1)


def test_the_time_range_filter_reaches_the_queries_and_clearing_it_restores_them(stack_up: Settings,
                                                                                 browser: object) -> None:
    """Market overview's Time range filter, in the browser: on first load every chart queries its own window; "Last
    day" reaches every chart in its scope (the request's time_range, the SQL's window: yesterday's midnight to
    today's) and not Latest ticker per product; Clear all brings the charts' own windows back."""
    from datetime import datetime, timedelta, timezone

    from selenium.webdriver.common.by import By

    from rtca.superset.bundle import existing_uuids
    from rtca.superset.client import SupersetClient

    files = load_bundle(stack_up)
    dashboard = files["dashboards/market_overview.yaml"]
    (time_filter,) = [n for n in dashboard["metadata"]["native_filter_configuration"]
                      if n["filterType"] == "filter_time"]
    charts = {c["uuid"]: c for c in of_kind(files, "chart").values()}
    with SupersetClient.from_settings(stack_up) as client:
        ids = existing_uuids(client, "chart")
    stable = {item["meta"]["chartId"]: item["meta"]["uuid"] for item in dashboard["position"].values()
              if isinstance(item, dict) and item.get("type") == "CHART"}
    on_it = {ids[uuid]: charts[uuid] for uuid in stable.values()}
    excluded = {ids[stable[i]] for i in time_filter["scope"]["excluded"]}
    assert excluded and excluded < set(on_it)
    in_scope = set(on_it) - excluded

    def own_windows(queries: dict[int, list], charts_: set[int]) -> list[str]:
        wrong = []
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        for chart_id in charts_:
            for time_range, sql in queries.get(chart_id, []):
                end = datetime.fromisoformat(_window(sql)[1])
                if time_range is not None or abs((now - end).total_seconds()) > 180:
                    wrong.append(f"{on_it[chart_id]['slice_name']}: time_range {time_range!r}, window "
                                 f"{_window(sql)} (not its own, ending about now)")
        return wrong

    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",  # type: ignore[attr-defined]
                            {"source": _RECORD_CHART_DATA})
    browser.get(f"{stack_up.superset.url}/superset/dashboard/{dashboard['slug']}/")  # type: ignore[attr-defined]
    first = _wait_for(browser, 0, set(on_it))
    assert set(first) >= set(on_it), f"charts that sent no query: {set(on_it) - set(first)}"
    assert own_windows(first, set(on_it)) == []
    trigger = browser.find_element(By.CSS_SELECTOR, "[data-test='time-range-trigger']")  # type: ignore[attr-defined]
    assert trigger.text.strip() == "No filter", "the Time range filter does not start empty"

    # choose Last > Last day in the filter's popover, then apply the filter bar
    trigger.click()
    _click(browser, ".time-range-popover [data-test='Range type']")
    _click(browser, ".ant-select-item-option", "Last")
    _click(browser, ".time-range-popover .ant-radio-wrapper", "Last day")
    _click(browser, "[data-test='date-filter-control__apply-button']")
    since = browser.execute_script("return Date.now()")  # type: ignore[attr-defined]
    _click(browser, "[data-test='filter-bar__apply-button']")
    chosen = _wait_for(browser, since, in_scope)
    assert set(chosen) >= in_scope, f"charts in scope that did not query again: {in_scope - set(chosen)}"
    for chart_id in in_scope:
        for time_range, sql in chosen[chart_id]:
            start, end = _window(sql)
            assert time_range == "Last day", f"{on_it[chart_id]['slice_name']}: time_range {time_range!r}"
            assert start.endswith("00:00:00.000000") and end.endswith("00:00:00.000000"), (start, end)
            assert datetime.fromisoformat(end) - datetime.fromisoformat(start) == timedelta(days=1), (start, end)
    # the auto-refresh (10 s) queries every chart again: the excluded one keeps its own window
    refreshed = _wait_for(browser, since, in_scope | excluded, timeout=30)
    assert own_windows(refreshed, excluded) == []

    since = browser.execute_script("return Date.now()")  # type: ignore[attr-defined]
    _click(browser, "button", "Clear all")
    apply = browser.find_element(By.CSS_SELECTOR,  # type: ignore[attr-defined]
                                 "[data-test='filter-bar__apply-button']")
    if apply.is_enabled():
        apply.click()
    cleared = _wait_for(browser, since, in_scope)
    assert set(cleared) >= in_scope, f"charts in scope that did not query again: {in_scope - set(cleared)}"
    assert own_windows(cleared, in_scope) == []
    assert browser.find_element(By.CSS_SELECTOR,  # type: ignore[attr-defined]
                                "[data-test='time-range-trigger']").text.strip() == "No filter"


def _click(driver: object, css: str, text: str | None = None, timeout: float = 20) -> None:
    """Click the first element matching `css` (with exactly `text`, if given), waiting for it to appear."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in driver.find_elements(By.CSS_SELECTOR, css)  # type: ignore[attr-defined]
                 if e.is_displayed() and (text is None or e.text.strip() == text)]
        if found:
            found[0].click()
            time.sleep(0.5)
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing to click: {css} {text or ''}")
        time.sleep(0.5)


def _open_recording(driver: object, settings: Settings, slug: str) -> None:
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",  # type: ignore[attr-defined]
                           {"source": _RECORD_CHART_DATA})
    driver.get(f"{settings.superset.url}/superset/dashboard/{slug}/")  # type: ignore[attr-defined]


def _chart_ids(settings: Settings, names: list[str]) -> dict[str, int]:
    from rtca.superset.bundle import existing_uuids
    from rtca.superset.client import SupersetClient

    files = load_bundle(settings)
    with SupersetClient.from_settings(settings) as client:
        ids = existing_uuids(client, "chart")
    return {name: ids[files[name]["uuid"]] for name in names}


def _holder_of(driver: object, title: str, timeout: float = 90) -> None:
    """Wait until the chart titled `title` drew (and nothing on the page loads)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {s["title"]: s for s in _chart_states(driver)}
        state = states.get(title)
        if state and state["drawn"] and not any(s["loading"] for s in states.values()):
            time.sleep(1.5)  # ECharts animates its first frame
            return
        time.sleep(1)
    raise AssertionError(f"{title!r} did not draw: {states.get(title)}")


def test_the_candles_table_shows_its_whole_window_without_the_row_limit_warning(stack_up: Settings,
                                                                               browser: object) -> None:
    """Superset warns "row limit reached" beside a chart whose query returned row_limit rows (it showed with 100
    rows: 10 products' 10 newest minutes). The table's query returns every product-minute of its window (counted
    in Pinot over the same window), the header has no warning, and the table pages them (10 a page)."""
    import re

    import orjson
    from live_data import seed_live_data
    from selenium.webdriver.common.by import By

    from rtca.pinot.client import PinotClient

    seed_live_data(stack_up)
    chart = load_bundle(stack_up)["charts/1_minute_candles.yaml"]
    (chart_id,) = _chart_ids(stack_up, ["charts/1_minute_candles.yaml"]).values()
    _open_recording(browser, stack_up, "market-overview")
    _holder_of(browser, chart["slice_name"])
    answers = [e for e in browser.execute_script("return window.__rtcaChartData")  # type: ignore[attr-defined]
               if e["sql"] and e["body"] and orjson.loads(e["body"]).get("form_data", {}).get("slice_id") == chart_id]
    assert answers, "no chart-data answer for the candles table"
    sql, rows = " ".join(answers[-1]["sql"][0].split()), answers[-1]["rows"][0]
    start, end = _window(sql)
    table = re.search(r"FROM (\S+)", sql).group(1)  # type: ignore[union-attr]
    with PinotClient(stack_up) as pinot:
        ((products,),) = pinot.query(f"SELECT COUNT(DISTINCT product_id) FROM {table} "
                                     f"WHERE event_time >= '{start}' AND event_time < '{end}'")
        groups = len(pinot.query(f"SELECT COUNT(*) FROM {table} WHERE event_time >= '{start}' AND event_time < "
                                 f"'{end}' GROUP BY product_id, DATETRUNC('MINUTE', event_ms) LIMIT 1000000"))
    # every product-minute of the window (a product's minute that closed since the page's query may be missing)
    assert groups - products <= rows <= groups and rows < chart["params"]["row_limit"], (rows, groups, products)
    # and any hour of these products would fit: Superset warns at rowcount >= row_limit
    assert products * 60 < chart["params"]["row_limit"], f"{products} products' hour would reach the row limit"
    holder = [h for h in browser.find_elements(  # type: ignore[attr-defined]
        By.CSS_SELECTOR, "[data-test='dashboard-component-chart-holder']") if chart["slice_name"] in h.text][0]
    assert not holder.find_elements(By.CSS_SELECTOR, ROW_LIMIT_REACHED), "the candles show the row limit warning"
    shown = holder.find_elements(By.CSS_SELECTOR, "table tbody tr")
    assert 0 < len(shown) <= chart["params"]["page_length"], len(shown)
    if rows > chart["params"]["page_length"]:
        assert holder.find_elements(By.CSS_SELECTOR, ".pagination, .ant-pagination, .dt-pagination"), \
            "more rows than a page and no pages"


def test_a_refresh_round_queries_every_chart_at_once(stack_up: Settings, browser: object) -> None:
    """Superset 6.1 spread a round of the auto-refresh over 5 s (stagger_time's default, above 0.2 x 10 s) and starts
    the next round refresh_frequency after the round's last answer: each chart was queried every 15.2-17.7 s on a 10 s
    dashboard. On the dashboard with the most charts, over three rounds after the first load (the page's own requests,
    recorded in the browser), a round's requests start within 0.3 x refresh_frequency of each other: 0.5 x staggered,
    0.01-0.13 x at once. How long a round's answers take (0.5-1.5 s; 5-6 s with the load average above 7) and so how
    often a chart is queried depends on the machine: printed, not asserted."""
    import orjson

    files = load_bundle(stack_up)
    dashboard = max(of_kind(files, "dashboard").values(), key=lambda d: len(set(chart_uuids_of(d))))
    interval = dashboard["metadata"]["refresh_frequency"] * 1000
    charts = len(set(chart_uuids_of(dashboard)))
    assert charts >= 3, "rounds are told apart by the gaps between them: too few charts to tell a staggered round"
    _open_recording(browser, stack_up, dashboard["slug"])
    deadline = time.monotonic() + 120
    rounds: list[list[tuple[float, float, int]]] = []
    while time.monotonic() < deadline and len(rounds) < 4:
        time.sleep(2)
        requests = sorted((e["started"], e["at"], orjson.loads(e["body"])["form_data"]["slice_id"])
                          for e in browser.execute_script("return window.__rtcaChartData")  # type: ignore[attr-defined]
                          if e["body"] and orjson.loads(e["body"]).get("form_data", {}).get("slice_id") is not None)
        rounds = []  # requests sent more than 0.4 x refresh_frequency apart are of different rounds
        for request in requests:
            if not rounds or request[0] - rounds[-1][-1][0] > 0.4 * interval:
                rounds.append([])
            rounds[-1].append(request)
        if rounds and len({chart_id for *_, chart_id in rounds[-1]}) < charts:
            rounds.pop()  # a round still going out
    refreshes = rounds[1:]  # the first is the page's load
    spreads = [(r[-1][0] - r[0][0]) / interval for r in refreshes]
    answered = [max(at for _, at, _ in r) - r[0][0] for r in refreshes]
    periods = [b[0][0] - a[0][0] for a, b in zip(refreshes, refreshes[1:], strict=False)]
    print(f"{dashboard['slug']}: {charts} charts, refresh {interval} ms; per round: requests "
          f"{[len(r) for r in refreshes]}, spread / interval {[round(s, 3) for s in spreads]}, all answered after "
          f"{[round(a) for a in answered]} ms, rounds {[round(p) for p in periods]} ms apart")
    assert len(refreshes) >= 3, f"{len(refreshes)} auto-refresh rounds in 2 minutes: {rounds}"
    assert all({chart_id for *_, chart_id in r} == {chart_id for *_, chart_id in rounds[0]} for r in refreshes)
    assert max(spreads) <= 0.3, f"a round's requests spread over {max(spreads):.2f} x the refresh interval"


#: Per row of the table in a chart holder: how far (px) it reaches below the visible part of the elements around it
#: that clip (overflow other than visible), up to the holder; and every element of the chart that scrolls vertically.
_ROWS_OUT_OF_VIEW = r"""
const holder = arguments[0];
const rows = Array.from(holder.querySelectorAll('table tbody tr')).map(row => {
  const bottom = row.getBoundingClientRect().bottom;
  let below = 0;
  for (let e = row.parentElement; e && e !== holder.parentElement; e = e.parentElement) {
    if (e === holder || getComputedStyle(e).overflowY !== 'visible') {
      below = Math.max(below, bottom - (e.getBoundingClientRect().top + e.clientTop + e.clientHeight));
    }
  }
  return Math.round(below);
});
const scrolling = Array.from(holder.querySelectorAll('*')).filter(
  e => /auto|scroll/.test(getComputedStyle(e).overflowY) && e.scrollHeight > e.clientHeight + 1)
  .map(e => `${e.tagName.toLowerCase()}: ${e.scrollHeight} px in ${e.clientHeight}`);
return [rows, scrolling];
"""

#: The paged tables and their dashboards.
PAGED_TABLES = {"charts/1_minute_candles.yaml": "market-overview", "charts/latest_alerts.yaml": "volatility-alerts"}
#: The table each of them reads, and the product of the rows this test adds to it.
PAGED_TABLE_KEYS = {"charts/1_minute_candles.yaml": "trade_flow", "charts/latest_alerts.yaml": "alerts"}
PAGE_PRODUCT = "ZZPAGE-USD"


def _fill_a_page(settings: Settings, key: str, rows: int) -> None:
    """`rows` records of a product of this test's own, one per closed minute of the last hour, in the table `key`
    (through its topic, as the functions write them): the session's seeding closes a few product-minutes and raises a
    few alerts (4 of each on a fresh stack), short of a page."""
    import orjson
    import pulsar
    from waiting import wait_for

    from rtca.pinot.client import PinotClient

    minute = int(time.time() // 60) * 60_000
    base = {"trade_flow": {"window_ms": 60_000, "buy_volume": 1.0, "sell_volume": 1.0, "buy_count": 1,
                           "sell_count": 1, "open_price": 100.0, "high_price": 101.0, "low_price": 99.0,
                           "last_price": 100.5},
            "alerts": {"rule": "page_test", "severity": "warning", "message": "a row of a full page", "value": 1.0,
                       "threshold": 0.5}}[key]
    client = pulsar.Client(settings.pulsar.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    try:
        producer = client.create_producer(settings.topic(getattr(settings.topics, key)))
        for i in range(1, rows + 1):
            event_ms = minute - i * 60_000
            record = {"product_id": PAGE_PRODUCT, "event_ms": event_ms, "received_ms": event_ms, **base}
            if key == "alerts":
                record["alert_id"] = f"page-test-{event_ms}"
            producer.send(orjson.dumps(record), partition_key=PAGE_PRODUCT)
    finally:
        client.close()
    table = getattr(settings.tables, key)
    where = f"WHERE product_id = '{PAGE_PRODUCT}' AND event_ms >= {minute - rows * 60_000}"
    with PinotClient(settings) as pinot:
        wait_for(lambda: pinot.count(table, where) >= rows, timeout=120,
                 what=f"{rows} rows of {PAGE_PRODUCT} in {table}")


@pytest.mark.parametrize("name", sorted(PAGED_TABLES))
def test_a_table_shows_its_whole_page_without_scrolling_inside_the_chart(stack_up: Settings, browser: object,
                                                                          name: str) -> None:
    """The candles and Latest alerts tables page their rows (10 a page) in a dashboard cell that was 400 px tall:
    about 6.5 rows showed and the table scrolled inside the chart for the rest of the page. Every row of a full page
    is within the chart's visible area and nothing in the chart scrolls vertically."""
    import orjson
    from live_data import seed_live_data
    from selenium.webdriver.common.by import By

    seed_live_data(stack_up)
    chart = load_bundle(stack_up)[name]
    _fill_a_page(stack_up, PAGED_TABLE_KEYS[name], chart["params"]["page_length"])
    (chart_id,) = _chart_ids(stack_up, [name]).values()
    slug = PAGED_TABLES[name]
    _open_recording(browser, stack_up, slug)
    _holder_of(browser, chart["slice_name"])
    answers = [e for e in browser.execute_script("return window.__rtcaChartData")  # type: ignore[attr-defined]
               if e["sql"] and e["body"] and orjson.loads(e["body"]).get("form_data", {}).get("slice_id") == chart_id]
    assert answers, f"no chart-data answer for {chart['slice_name']}"
    holder = [h for h in browser.find_elements(  # type: ignore[attr-defined]
        By.CSS_SELECTOR, "[data-test='dashboard-component-chart-holder']") if chart["slice_name"] in h.text][0]
    page = chart["params"]["page_length"]
    rows, scrolling = browser.execute_script(_ROWS_OUT_OF_VIEW, holder)  # type: ignore[attr-defined]
    browser.save_screenshot(str(stack_up.run_dir / "screenshots" / f"{slug}-page.png"))  # type: ignore[attr-defined]
    print(f"{chart['slice_name']}: {answers[-1]['rows'][0]} rows, {len(rows)} on the page, px below the visible "
          f"area per row {rows}, scrolling {scrolling}")
    assert len(rows) == min(page, answers[-1]["rows"][0]), "not a whole page of rows"
    assert len(rows) == page, f"{chart['slice_name']}: fewer rows than a page, though {page} were added"
    hidden = [i + 1 for i, below in enumerate(rows) if below > 1]
    assert not hidden, f"{chart['slice_name']}: rows {hidden} of {page} are out of view (px below: {rows})"
    assert not scrolling, f"{chart['slice_name']}: scrolls inside the chart: {scrolling}"


#: The widest block of one colour the chart drew, 12 pixels tall at least (a bar), and the canvas' width: pixels that
#: are not background, each of the same colour as the 11 below it, side by side. Lines (steep ones too), points, text
#: and the grid draw no such block wider than a few pixels; a legend's bar symbol is about 25.
_SOLID_WIDTH = r"""
const canvas = arguments[0];
const w = canvas.width, h = canvas.height, tall = 12;
const d = canvas.getContext('2d').getImageData(0, 0, w, h).data;
const at = (x, y) => (y * w + x) * 4;
const drawn = i => d[i + 3] > 128 && Math.min(d[i], d[i + 1], d[i + 2]) < 200;
const same = (i, j) => Math.abs(d[i] - d[j]) + Math.abs(d[i + 1] - d[j + 1]) + Math.abs(d[i + 2] - d[j + 2]) < 24;
let best = 0;
for (let y = 0; y + tall <= h; y++) {
  let run = 0;
  for (let x = 0; x < w; x++) {
    const i = at(x, y);
    let block = drawn(i) && (run === 0 || same(i, at(x - 1, y)));
    for (let k = 1; block && k < tall; k++) block = same(i, at(x, y + k));
    run = block ? run + 1 : 0;
    best = Math.max(best, run);
  }
}
return [best, w];
"""

#: Dashboards and their per-minute counts of events that come now and then (the seeding brings its dead letters in
#: one burst, its alerts in a minute or two).
SPARSE_COUNT_CHARTS = {"feed-health": "Dead letters per minute by reason", "volatility-alerts": "Alerts per minute"}


@pytest.mark.parametrize("slug", sorted(SPARSE_COUNT_CHARTS))
def test_a_minute_of_dead_letters_or_alerts_is_not_drawn_across_the_chart(stack_up: Settings, browser: object,
                                                                          slug: str) -> None:
    """A bar of one minute alone spanned the whole chart (ECharts sizes bars on a time axis by the smallest gap
    between their times, a lone one by the whole axis). The dashboard opens with its Time range filter on the
    seeding's first minutes (the `native_filters` URL parameter), where these charts have a minute or two: they draw
    points, and no block wider than a tenth of the chart."""
    from datetime import datetime, timedelta, timezone
    from urllib.parse import quote

    from live_data import seed_live_data
    from selenium.webdriver.common.by import By

    started = datetime.fromtimestamp(seed_live_data(stack_up).started_ms / 1000, timezone.utc)
    start = started.replace(second=0, microsecond=0, tzinfo=None)
    window = f"{start:%Y-%m-%dT%H:%M:%S} : {start + timedelta(minutes=3):%Y-%m-%dT%H:%M:%S}"
    dashboard = next(d for d in of_kind(load_bundle(stack_up), "dashboard").values() if d["slug"] == slug)
    (time_filter,) = [n["id"] for n in dashboard["metadata"]["native_filter_configuration"]
                      if n["filterType"] == "filter_time"]
    rison = (f"({time_filter}:(extraFormData:(time_range:'{window}'),filterState:(value:'{window}'),"
             f"id:{time_filter},ownState:()))")
    title = SPARSE_COUNT_CHARTS[slug]
    browser.get(f"{stack_up.superset.url}/superset/dashboard/{slug}/"  # type: ignore[attr-defined]
                f"?native_filters={quote(rison)}")
    _holder_of(browser, title)
    widths = {}
    for holder in browser.find_elements(  # type: ignore[attr-defined]
            By.CSS_SELECTOR, "[data-test='dashboard-component-chart-holder']"):
        name = holder.find_element(By.CSS_SELECTOR, ".header-title").text
        for canvas in holder.find_elements(By.CSS_SELECTOR, "canvas")[:1]:
            widths[name] = browser.execute_script(_SOLID_WIDTH, canvas)  # type: ignore[attr-defined]
    browser.save_screenshot(str(stack_up.run_dir / "screenshots" / f"{slug}-seeding.png"))  # type: ignore[attr-defined]
    print(f"{slug} over {window}: widest block / canvas width per chart: {widths}")
    best, width = widths[title]
    assert best < width / 10, f"{title}: a block {best} of {width} pixels wide"

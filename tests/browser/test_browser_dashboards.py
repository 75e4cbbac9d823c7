"""Every dashboard of the bundle in a real browser (headless Chromium from Debian's packages, driven by Selenium).

Superset renders charts in the browser from the saved form data, a path the chart-data endpoint does not cover
(the frontend builds its own query, formats the time axis, draws ECharts): an epoch-millisecond time column, for
one, passes the endpoint and breaks here. So this test logs in, opens each dashboard with live data behind it,
waits until no chart is loading, asserts that every chart drew something and none shows an error, and saves a
screenshot per dashboard under `<run dir>/screenshots/`.
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
    assert not failures, "\n".join(failures)

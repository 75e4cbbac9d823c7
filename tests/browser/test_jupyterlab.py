"""JupyterLab in headless Chromium: run the live-market notebook and find the rendered plotly FigureWidget."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rtca.settings import PROJECT_ROOT, Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.stack,
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="Debian's chromium and chromium-driver are not installed"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def jupyterlab(stack_up: Settings, tmp_path: Path) -> Iterator[str]:
    """A JupyterLab server over a copy of notebooks/ (its autosave must not touch the repository's files)."""
    from live_data import seed_live_data

    seed_live_data(stack_up)  # the notebook charts the last minutes of data: make sure there are some
    shutil.copytree(PROJECT_ROOT / "notebooks", tmp_path / "notebooks")
    port, token = free_port(), secrets.token_hex(16)
    log = (stack_up.logs_dir / "jupyterlab-test.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip", "127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{base}/api/status", params={"token": token}, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        server.terminate()
        pytest.fail("JupyterLab did not answer (see .run/logs/jupyterlab-test.log)")
    yield f"{base}/lab/tree/notebooks/01-live-market.ipynb?token={token}"
    server.terminate()
    server.wait(timeout=30)
    log.close()


def run_all_cells(driver: Any, wait: Any) -> None:
    """Run > Run All Cells, through the menus as a user would."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver.find_element(By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][.//div[text()='Run']]").click()
    wait.until(ec.element_to_be_clickable(
        (By.XPATH, "//li[contains(@class,'lm-Menu-item')][.//div[text()='Run All Cells']]"))).click()


def not_started(driver: Any) -> bool:
    """No code cell has run or is running ("[ ]:" everywhere) and the kernel is idle: a Run All that was dropped."""
    from selenium.webdriver.common.by import By

    prompts = [e.text.strip() for e in driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]
    idle = driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")
    return bool(prompts) and all(prompt in ("[ ]:", "") for prompt in prompts) and bool(idle)


def test_live_market_notebook_renders_plotly_in_jupyterlab(jupyterlab: str, stack_up: Settings) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    shots = stack_up.run_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(jupyterlab)
        wait = WebDriverWait(driver, 120)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")))  # kernel started
        run_all_cells(driver, wait)
        asked = [time.monotonic()]

        def first_plot(d: Any) -> Any:
            """The first plotly figure drawn, else False. Run All can be dropped while the kernel's session is still
            being set up (as on a loaded machine): a "Select Kernel" dialog on the way is answered with its default,
            the notebook's own kernel, and Run All asked again; so is Run All when, 20 s after it, no cell has run
            or started (every prompt still "[ ]:") and the kernel is idle."""
            dialogs = [e for e in d.find_elements(By.CSS_SELECTOR, ".jp-Dialog") if "Select Kernel" in e.text]
            if dialogs:
                dialogs[0].find_element(By.CSS_SELECTOR, ".jp-Dialog-button.jp-mod-accept").click()
                wait.until(ec.presence_of_element_located(
                    (By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")))
                run_all_cells(d, wait)
                asked.append(time.monotonic())
            elif time.monotonic() - asked[-1] > 20 and not_started(d):
                run_all_cells(d, wait)
                asked.append(time.monotonic())
            plots = d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .js-plotly-plot")
            return plots[0] if plots else False

        plot = WebDriverWait(driver, 180, ignored_exceptions=(StaleElementReferenceException,)).until(first_plot)
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .scatterlayer"))
        # every cell ran, not only the one that displays the figure: `view.run()` takes some 10 s, then the candles
        # (an error in either would otherwise come after the checks below)
        WebDriverWait(driver, 180).until(lambda d: d.find_elements(
            By.CSS_SELECTOR, ".jp-Notebook .jp-Cell:last-child .jp-OutputArea-output"))
        points = driver.execute_script(
            "return Array.from(document.querySelectorAll('.jp-OutputArea .js-plotly-plot'))"
            ".map(g => (g.data || []).map(t => (t.x || []).length))")
        driver.execute_script("arguments[0].scrollIntoView();", plot)
        time.sleep(2)
        driver.save_screenshot(str(shots / "jupyterlab-01-live-market.png"))
        errors = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        tracebacks = [e.text for e in errors if "Traceback" in e.text or "Error" in e.text]
        assert not tracebacks, tracebacks
        assert plot.size["height"] > 200
        assert points and any(n > 0 for n in points[0]), points  # seeded data drawn, not axes around empty traces
    except Exception:
        driver.save_screenshot(str(shots / "jupyterlab-01-live-market-FAILED.png"))
        raise
    finally:
        driver.quit()

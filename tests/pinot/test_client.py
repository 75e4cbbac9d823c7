"""PinotClient's clean-up against a controller that answers late (a loaded Pinot dropping a table's segments)."""

from __future__ import annotations

import httpx
import pytest
from fake_http import SlowHandler, serving

from rtca.pinot.client import PinotClient
from rtca.settings import load_settings


class SlowController(SlowHandler):
    """DELETE /tables/NAME drops the table (after `delay` the first `slow` times); then it is a 404."""

    tables = {"t"}
    deletes: list[str] = []

    def do_DELETE(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        SlowController.deletes.append(path)
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/tables/"):
            known = name in SlowController.tables
            SlowController.tables.discard(name)
            self.answer(200 if known else 404, {"status": f"{name} deleted"} if known else {"code": 404})
        else:
            self.answer(200, {"status": f"schema {name} deleted"})


def client(url: str) -> PinotClient:
    settings = load_settings(pinot={"controller_url_override": url, "broker_url_override": url})
    return PinotClient(settings, timeout=0.3)


def test_a_table_delete_that_times_out_is_asked_again(default_env: None) -> None:
    SlowController.tables, SlowController.deletes, SlowController.slow = {"t"}, [], 1
    with serving(SlowController) as url, client(url) as pinot:
        pinot.delete_table("t")
    assert SlowController.deletes == ["/tables/t", "/tables/t", "/schemas/t"]
    assert SlowController.tables == set()


def test_a_controller_that_never_answers_in_time_is_an_error(default_env: None) -> None:
    SlowController.tables, SlowController.deletes, SlowController.slow = {"t"}, [], 100
    try:
        with serving(SlowController) as url, client(url) as pinot, pytest.raises(httpx.TimeoutException):
            pinot.delete_table("t", attempts=2)
    finally:
        SlowController.slow = 0
    assert SlowController.deletes == ["/tables/t", "/tables/t"]

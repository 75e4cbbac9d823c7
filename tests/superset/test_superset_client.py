"""SupersetClient's errors say what Superset said (a fake Superset: no stack needed)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from rtca.errors import DeployError
from rtca.superset import client as client_module
from rtca.superset.client import SupersetClient

VALIDATION = "Error importing chart: charts/spread_bps.yaml: {'viz_type': ['Field may not be null.']}"


def _superset(request: httpx.Request) -> httpx.Response:
    """Superset 6's answers: a failed command is its HTML error page (500) when the client accepts text/html, which
    werkzeug grants to `*/*` too; the JSON errors (422) otherwise. A wrong password is a 401."""
    if request.url.path == "/api/v1/security/login":
        if b'"password":"right"' not in request.content.replace(b" ", b""):
            return httpx.Response(401, json={"message": "Not authorized"})
        return httpx.Response(200, json={"access_token": "t", "refresh_token": "r"})
    if request.url.path == "/api/v1/security/csrf_token/":
        return httpx.Response(200, json={"result": "c"})
    accept = request.headers.get("accept", "*/*")
    if "text/html" in accept or "*/*" in accept:
        return httpx.Response(500, text="<!doctype html><html><head><style>body {color: #1985a0}</style></head>",
                              headers={"content-type": "text/html"})
    return httpx.Response(422, json={"errors": [{"message": VALIDATION, "error_type": "GENERIC_COMMAND_ERROR"}]})


@pytest.fixture
def fake_superset(monkeypatch: pytest.MonkeyPatch) -> None:
    real = httpx.Client

    def client(**kwargs: Any) -> httpx.Client:
        return real(transport=httpx.MockTransport(_superset), **kwargs)

    monkeypatch.setattr(client_module.httpx, "Client", client)


def test_a_rejected_import_says_why(fake_superset: None) -> None:
    with SupersetClient("http://superset.test", "admin", "right") as client, pytest.raises(DeployError) as error:
        client.import_bundle("chart", {"charts/spread_bps.yaml": {"viz_type": None}})
    assert "Field may not be null" in str(error.value)
    assert "<!doctype" not in str(error.value)


def test_a_wrong_password_names_the_user_and_where_the_password_comes_from(fake_superset: None) -> None:
    with pytest.raises(DeployError) as error:
        SupersetClient("http://superset.test", "admin", "wrong")
    assert "'admin'" in str(error.value) and "SUPERSET_ADMIN_PASSWORD" in str(error.value)

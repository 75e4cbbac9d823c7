from __future__ import annotations

import json

import pytest

from rtca.cli import main
from rtca.settings import Settings


def test_environment_overrides_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTCA_PULSAR__WEB_PORT", "18080")
    monkeypatch.setenv("RTCA_TOPICS__RAW", "my-raw")
    settings = Settings()
    assert settings.pulsar.admin_url == "http://127.0.0.1:18080"
    assert settings.topic(settings.topics.raw) == "persistent://feeds/realtime/my-raw"


def test_config_prints_json_with_urls_and_masked_secrets(monkeypatch: pytest.MonkeyPatch, default_env: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RTCA_SUPERSET__ADMIN_PASSWORD", "not-to-be-printed")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["urls"]["pinot_broker"] == "http://127.0.0.1:8099"
    assert data["full_topics"]["raw"].startswith("persistent://feeds/realtime/")
    assert data["tables"]["ticker"] == "coinbase_ticker"
    assert "not-to-be-printed" not in out


def test_services_listen_on_loopback_by_default(default_env: None) -> None:
    settings = Settings()
    assert {settings.pulsar.host, settings.pinot.host, settings.superset.host} == {"127.0.0.1"}

from __future__ import annotations

import json
import os

import pytest

from rtca.cli import main
from rtca.errors import ConfigError
from rtca.runbook import RunbookCheckFailed
from rtca.runbook import settings as runbook_settings
from rtca.settings import Settings, load_settings, name_list, setting_exists


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


def test_setting_exists_tells_a_typo_from_a_setting() -> None:
    assert setting_exists("RTCA_PINOT__BROKER_PORT") and setting_exists("RTCA_RUN_DIR")
    assert not setting_exists("RTCA_PINOT_BROKER_PORT") and not setting_exists("RTCA_PINOT__BROKER_PORT__X")


def test_a_variable_that_names_no_setting_is_warned_about_once_by_the_library_too(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """A notebook calls `load_settings()`, not the CLI: its typo must not be ignored without a word either."""
    import rtca.settings

    monkeypatch.setattr(rtca.settings, "_WARNED", set())
    monkeypatch.setenv("RTCA_PINOT_BROKER_PORT", "18099")
    load_settings()
    load_settings()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "names no setting" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: RTCA_PINOT_BROKER_PORT")


def test_an_unknown_variable_inside_a_section_is_one_error_naming_the_section_s_settings(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """It was warned about as "ignored", then refused by the section with pydantic's "Extra inputs are not
    permitted": two messages that contradict each other."""
    monkeypatch.setenv("RTCA_PINOT__BROKER_PROT", "18099")
    with pytest.raises(ConfigError, match="RTCA_PINOT__BROKER_PROT names no setting of the pinot section") as failed:
        load_settings()
    assert "RTCA_PINOT__BROKER_PORT" in (failed.value.hint or "")
    assert "ignored" not in capsys.readouterr().err


def test_a_refused_value_names_its_variable_or_the_parameter_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runbook's `backend` parameter was reported as an invalid RTCA_* environment variable."""
    monkeypatch.setenv("RTCA_PINOT__BROKER_PORT", "abc")
    with pytest.raises(ConfigError, match=r"pinot.broker_port \(RTCA_PINOT__BROKER_PORT\)"):
        load_settings()
    monkeypatch.delenv("RTCA_PINOT__BROKER_PORT")
    with pytest.raises(ConfigError, match=r"backend \(given as a parameter\)"):
        load_settings(backend="nope")


def test_a_runbook_without_a_backend_parameter_takes_rtca_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """`papermill runbooks/90-teardown.ipynb ...` in a job for an external cluster (RTCA_BACKEND=external) took the
    parameter's default, local: its teardown would have stopped a local stack on that machine."""
    monkeypatch.setenv("RTCA_BACKEND", "external")
    assert runbook_settings(None, {}).backend == "external"
    assert runbook_settings("local", {}).backend == "local"  # a parameter given says what it says
    monkeypatch.delenv("RTCA_BACKEND")
    assert runbook_settings(None, {}).backend == "local"


def test_a_runbook_env_typo_is_refused_not_ignored() -> None:
    with pytest.raises(RunbookCheckFailed, match="RTCA_PINOT_BROKER_PORT' names no setting"):
        runbook_settings("local", {"RTCA_PINOT_BROKER_PORT": "18099"})


@pytest.mark.parametrize(("env", "named"), [
    ({"RTCA_PINOT__BROKER_PORT": "abc"}, "pinot.broker_port"),
    ({"RTCA_PINOT__BROKER_PORT": "70000"}, "pinot.broker_port"),  # would wrap around to port 4464
    ({"RTCA_SUPERSET__PORT": "0"}, "superset.port"),
])  # fmt: skip
def test_a_runbook_env_value_of_the_wrong_type_or_range_is_named_and_not_kept(env: dict[str, str], named: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    key = next(iter(env))
    monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match=f"invalid settings: .*{named}"):
        runbook_settings("local", env)
    assert key not in os.environ  # the next cell's settings are not broken by it


def test_a_section_given_as_json_that_does_not_parse_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTCA_PINOT", "{bad")
    with pytest.raises(ConfigError, match="invalid settings"):
        load_settings()


def test_name_lists_from_papermill_strings() -> None:
    assert name_list("router") == ["router"] and name_list("ticker, matches") == ["ticker", "matches"]
    assert name_list(["a", "b"]) == ["a", "b"] and name_list(None) is None
    # a YAML list given through `-p` arrives as its text: taken apart at the commas it gave '[a' and 'b]'
    assert name_list("[SKL-USD, 'YFI-BTC']") == name_list(' ["SKL-USD","YFI-BTC"] ') == ["SKL-USD", "YFI-BTC"]


def test_the_exchange_url_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from rtca.feed.protocol import COINBASE_WS_URL

    assert load_settings().feed.coinbase_url == COINBASE_WS_URL == "wss://ws-feed.exchange.coinbase.com"
    monkeypatch.setenv("RTCA_FEED__COINBASE_URL", "wss://ws-feed-public.sandbox.exchange.coinbase.com/")
    assert load_settings().feed.coinbase_url == "wss://ws-feed-public.sandbox.exchange.coinbase.com"
    monkeypatch.setenv("RTCA_FEED__COINBASE_URL", "https://ws-feed.exchange.coinbase.com")
    with pytest.raises(ConfigError, match="feed.coinbase_url"):
        load_settings()


@pytest.mark.parametrize("given", [5, 1.5, {"a": 1}])
def test_names_that_are_not_names_are_refused_in_one_line(given: object) -> None:
    """`-p tables 5` ended in a TypeError from deep inside."""
    from rtca.errors import ConfigError

    with pytest.raises(ConfigError, match="expected names"):
        name_list(given)  # type: ignore[arg-type]


def test_the_superset_database_uuid_is_checked_and_written_one_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid one failed later with a bare ValueError; an upper-case default renamed every Superset object."""
    from rtca.errors import ConfigError

    monkeypatch.setenv("RTCA_SUPERSET__DATABASE_UUID", "5B1C7A4E-2F7D-4C59-9A51-7D0F1D2C3A10")
    assert load_settings().superset.database_uuid == "5b1c7a4e-2f7d-4c59-9a51-7d0f1d2c3a10"
    monkeypatch.setenv("RTCA_SUPERSET__DATABASE_UUID", "not-a-uuid")
    with pytest.raises(ConfigError, match="database_uuid"):
        load_settings()

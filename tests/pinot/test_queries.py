"""The notebooks' shared SQL: bad arguments are clear errors."""

from __future__ import annotations

import pytest

from rtca.errors import ConfigError
from rtca.pinot.queries import candles_sql
from rtca.settings import Settings


def test_an_unknown_candle_size_is_a_config_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="unknown candle size '7m'"):
        candles_sql(settings, "BTC-USD", size="7m")


def test_candles_without_a_product_say_why(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="no product"):
        candles_sql(settings, None)  # type: ignore[arg-type]


def test_a_candle_window_is_whole_minutes(settings: Settings) -> None:
    """A slider or parameter giving 7.5 made `ago('PT7.5M')`, which Pinot refuses."""
    assert "ago('PT7M')" in candles_sql(settings, "BTC-USD", minutes=7.5)  # type: ignore[arg-type]
    for minutes in (0, -5, float("nan")):
        with pytest.raises(ConfigError, match="candles over"):
            candles_sql(settings, "BTC-USD", minutes=minutes)  # type: ignore[arg-type]

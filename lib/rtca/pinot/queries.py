"""SQL the exploratory notebooks (and their tests) share, so each metric is defined once there. The dashboards'
SQL is Superset's own, from the chart definitions under `infra/superset/charts`."""

from __future__ import annotations

from rtca.errors import ConfigError
from rtca.settings import Settings

#: Pinot DATETRUNC units for the candle sizes we offer.
CANDLE_UNITS = {"1s": "SECOND", "1m": "MINUTE", "1h": "HOUR", "1d": "DAY"}


def candles_sql(settings: Settings, product: str, *, minutes: int = 60, size: str = "1m") -> str:
    """OHLCV and VWAP candles per `size` over the matches table (trades), oldest first.

    Open and close are the first and last trade by event time in the bucket; VWAP = sum(price * size) / volume.
    """
    if not product:
        raise ConfigError("no product to chart candles for", hint="the matches table has no rows yet: start the "
                                                                  "ingest (runbooks/40-ingest) and rerun the cell")
    if not minutes >= 1:  # Pinot's ago() takes whole minutes: PT7.5M is a query error
        raise ConfigError(f"candles over {minutes!r} minutes", hint="a window of at least 1 minute")
    minutes = int(minutes)
    unit = CANDLE_UNITS.get(size)
    if unit is None:
        raise ConfigError(f"unknown candle size {size!r}", hint=f"one of: {', '.join(CANDLE_UNITS)}")
    product_id = product.replace("'", "''")
    bucket = f"DATETRUNC('{unit}', event_time)"
    return (
        f"SELECT {bucket} AS bucket, FIRSTWITHTIME(price, event_ms, 'DOUBLE') AS \"open\", MAX(price) AS high, "
        f"MIN(price) AS low, LASTWITHTIME(price, event_ms, 'DOUBLE') AS \"close\", SUM(size) AS volume, "
        f"SUM(price * size) / SUM(size) AS vwap, COUNT(*) AS trades "
        f"FROM {settings.tables.matches} WHERE product_id = '{product_id}' AND event_time > ago('PT{minutes}M') "
        f"GROUP BY {bucket} ORDER BY {bucket} LIMIT 100000"
    )

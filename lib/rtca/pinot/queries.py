"""SQL the exploratory notebooks (and their tests) share, so each metric is defined once there. The dashboards'
SQL is Superset's own, from the chart definitions under `infra/superset/charts`."""

from __future__ import annotations

from rtca.errors import ConfigError
from rtca.settings import Settings

#: Pinot DATETRUNC units for the candle sizes we offer.
CANDLE_UNITS = {"1s": "SECOND", "1m": "MINUTE", "1h": "HOUR", "1d": "DAY"}


def candles_template(settings: Settings, size: str = "1m") -> str:
    """The candles SQL with `{product}` (quoted for SQL) and `{minutes}` left to fill: `candles_sql` fills them for
    one query, a live view at each refresh with its controls' product and window. The window starts at the candle
    boundary at or before `minutes` ago, so that its oldest candle is whole too (a 15-minute window of hourly candles
    is the hour it began in and the next, not a quarter of one). Newest first: a window of more candles than the
    limit (a day of 1-second ones) shows its newest, not a chart that stops short of now.

    Open and close are the bucket's first and last trade by event time; the trades of one taker order share a
    millisecond, and of such a tie Pinot takes any one (not the lowest trade id: ids are the exchange's order within
    one feed, but a restarted replay or simulator sends lower ids at later times). VWAP = sum(price * size) / volume.
    """
    unit = CANDLE_UNITS.get(size)
    if unit is None:
        raise ConfigError(f"unknown candle size {size!r}", hint=f"one of: {', '.join(CANDLE_UNITS)}")
    bucket = f"DATETRUNC('{unit}', event_time)"
    return (
        f"SELECT {bucket} AS bucket, FIRSTWITHTIME(price, event_ms, 'DOUBLE') AS \"open\", MAX(price) AS high, "
        f"MIN(price) AS low, LASTWITHTIME(price, event_ms, 'DOUBLE') AS \"close\", SUM(size) AS volume, "
        f"SUM(price * size) / SUM(size) AS vwap, COUNT(*) AS trades "
        f"FROM {settings.tables.matches} WHERE product_id = '{{product}}' "
        f"AND event_time >= DATETRUNC('{unit}', ago('PT{{minutes}}M')) "
        f"GROUP BY {bucket} ORDER BY {bucket} DESC LIMIT 100000"
    )


def candles_sql(settings: Settings, product: str, *, minutes: int = 60, size: str = "1m") -> str:
    """OHLCV and VWAP candles per `size` over the matches table (trades) of the last `minutes`, newest first."""
    if not product:
        raise ConfigError("no product to chart candles for", hint="the matches table has no rows yet: start the "
                                                                  "ingest (runbooks/40-ingest) and rerun the cell")
    if not minutes >= 1:  # Pinot's ago() takes whole minutes: PT7.5M is a query error
        raise ConfigError(f"candles over {minutes!r} minutes", hint="a window of at least 1 minute")
    return candles_template(settings, size).format(product=product.replace("'", "''"), minutes=int(minutes))


def latest_alerts_sql(settings: Settings, *, limit: int = 20) -> str:
    """The newest alerts of every product and rule: what fired, on which value, against which threshold."""
    return (f"SELECT event_time, product_id, rule, \"value\", threshold FROM {settings.tables.alerts} "
            f"ORDER BY event_time DESC LIMIT {int(limit)}")


def feed_ticks_sql(settings: Settings, *, limit: int = 5) -> str:
    """The ingest's newest health ticks: connected or not, reconnects, silence and why the connection last dropped
    (ordered by the tick's own clock, `ts_ms`: a tick carries no exchange time)."""
    return (f"SELECT event_time, source, url, connected, reconnects, silence_ms, last_error "
            f"FROM {settings.tables.feed_health} WHERE kind = 'tick' ORDER BY ts_ms DESC LIMIT {int(limit)}")


def gaps_sql(settings: Settings, *, limit: int = 20) -> str:
    """The newest gaps in the trade ids: the product and the ids the feed skipped (trades lost)."""
    return (f"SELECT event_time, product_id, first_missing, last_missing, missed FROM {settings.tables.feed_health} "
            f"WHERE kind = 'gap' ORDER BY event_time DESC LIMIT {int(limit)}")

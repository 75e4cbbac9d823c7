"""Alert rules (``infra/alerts.yaml``) evaluated continuously over typed and derived records.

`AlertEngine.evaluate(record, source)` dispatches on the topic the record came from (`SOURCES`: ticker, book,
volatility, feed health; the alerts function maps its input topics to them) and returns the alert records to publish:
``product_id``, ``event_ms``, ``received_ms``, ``alert_id``, ``rule``, ``severity``, ``message``, ``value``,
``threshold`` (the ``coinbase_alerts`` columns).

Firing: a rule fires when its value is strictly over ``threshold``; it then stays silent while the condition
persists and re-arms only once the value is at or below ``clear`` (default = threshold; a lower ``clear`` is a
hysteresis margin). State is per (rule, key): key = product, or the feed source for ``feed_stalled``.
``missed_trades`` is an event rule: each gap record whose ``missed`` is over the threshold fires once; the gap
reported last, seen again (same first missing id: a second ingest of the same feed), is not reported again. Ingest's
detector reports each missing range once, in increasing order, except after it started again from lower ids
(`rtca.feed.gaps`: the exchange restarted them, or one bogus id had put it far ahead): such a gap is new, even if it
lies inside an earlier one.

Without a source (a caller that has the record alone), the record's shape decides: feed-health ``kind`` tick/gap,
volatility ``realized_vol``, book ``spread_bps``, ticker ``price``. A topic's records are never told apart by their
fields: the router passes a frame's unknown fields through, so a ticker may carry any of those names.

Rule kinds and their value: see ``infra/alerts.yaml``.

State is per key (`key_of`): `state_of(key)` gives everything the rules keep for one key as JSON-ready data (armed
flags, the prices of the price-move window, the volatility history, the last reported gap) and `resume(key, state)`
takes it back, so the alerts function can rebuild the engine after a restart (`rtca.functions.alerts`). `changed`
tells whether the last `evaluate` changed any state (a record that changes none need not be remembered).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtca.analytics.checks import (
    MAX_PRODUCT_ID,
    MAX_VALUE,
    event_time,
    latest_time_ms,
    long_field,
    number,
    optional_long,
    product_id,
)

KINDS = ("price_move", "vol_zscore", "spread_bps", "feed_stalled", "missed_trades")
SOURCES = ("ticker", "book", "volatility", "feed_health")
"""What an input record is, by the topic it came from."""


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    threshold: float
    clear: float | None = None
    severity: str = "warning"
    window_s: float = 60.0
    history: int = 30
    min_history: int = 10

    def __post_init__(self) -> None:
        # Checked here, at deploy (`rtca.functions.deploy.alert_rules`) and at start: a value that parses but is not
        # usable would otherwise fail (or silence) the rule on every record, each blamed on the record.
        for name in ("threshold", "window_s", *(("clear",) if self.clear is not None else ())):
            value = getattr(self, name)
            if type(value) not in (int, float) or not math.isfinite(value):
                raise ValueError(f"rule {self.name!r}: {name} must be a finite number, not {value!r}")
        if self.window_s <= 0:
            raise ValueError(f"rule {self.name!r}: window_s must be > 0, not {self.window_s!r}")
        for name in ("history", "min_history"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"rule {self.name!r}: {name} must be a whole number >= 1, not {value!r}")
        if self.kind not in KINDS:
            raise ValueError(f"rule {self.name!r}: unknown kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.clear is not None and self.clear > self.threshold:
            raise ValueError(f"rule {self.name!r}: clear {self.clear} is above threshold {self.threshold}")
        if self.kind == "vol_zscore" and not 2 <= self.min_history <= self.history:
            raise ValueError(f"rule {self.name!r}: need 2 <= min_history <= history")

    @property
    def clear_level(self) -> float:
        return self.threshold if self.clear is None else self.clear

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"rule {data.get('name')!r}: unknown keys {sorted(unknown)}")
        for name in ("threshold", "clear", "window_s"):
            if known.get(name) is not None:
                known[name] = float(known[name])
        return cls(**known)


def parse_rules(rules: Iterable[Mapping[str, Any]]) -> list[Rule]:
    parsed = [Rule.from_dict(r) for r in rules]
    names = [r.name for r in parsed]
    if len(set(names)) != len(names):
        raise ValueError("alert rule names must be unique")
    return parsed


def load_rules(path: Path | str) -> list[Rule]:
    """The rules of an alerts YAML file (``rules:`` list)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return parse_rules(data.get("rules") or [])


def alert_record(rule: str, severity: str, product: str, event_ms: int | None, received_ms: int | None,
                 value: float, threshold: float, message: str) -> dict[str, Any]:  # fmt: skip
    return {
        "product_id": product, "event_ms": event_ms, "received_ms": received_ms,
        "alert_id": f"{rule}:{product}:{event_ms}", "rule": rule, "severity": severity, "message": message,
        "value": value, "threshold": threshold,
    }  # fmt: skip


def book_problem_alert(problem: Mapping[str, Any]) -> dict[str, Any]:
    """An alert record for a `rtca.analytics.book` problem record (crossed book, update before snapshot)."""
    return alert_record(f"book_{problem['problem']}", "warning", problem["product_id"], problem.get("event_ms"),
                        problem.get("received_ms"), 1.0, 0.0, problem.get("detail", ""))  # fmt: skip


def _price_point(event_ms: Any, price: Any) -> tuple[int, float]:
    """A (time, price) of a price-move window read back from a checkpoint; ValueError for what no ticker the
    function took could have left there (a price of 0 divided every later move by zero)."""
    point = (int(event_ms), float(price))
    if not (0 <= point[0] <= latest_time_ms() and 0 < point[1] < MAX_VALUE):
        raise ValueError(f"not a price in time: {str([event_ms, price])[:60]}")
    return point


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {str(value)[:40]}")
    return number


def _times(record: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """A record's ``event_ms`` and ``received_ms`` as its alerts carry them (`optional_long`)."""
    return optional_long(record, "event_ms"), optional_long(record, "received_ms")


@dataclass
class AlertEngine:
    rules: list[Rule]
    armed: dict[tuple[str, str], bool] = field(default_factory=dict)
    _prices: dict[tuple[str, str], deque[tuple[int, float]]] = field(default_factory=dict)
    _vols: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    #: The first missing trade id of the last gap reported, per (rule, product).
    _gaps: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Whether the last `evaluate` changed any state.
    changed: bool = False

    def _by_kind(self, kind: str) -> list[Rule]:
        return [r for r in self.rules if r.kind == kind]

    @staticmethod
    def source_of(record: Mapping[str, Any]) -> str | None:
        """What a record is by its shape, for callers that do not know its topic."""
        if record.get("kind") in ("tick", "gap"):
            return "feed_health"
        if "realized_vol" in record:
            return "volatility"
        if "spread_bps" in record:
            return "book"
        if "price" in record and "product_id" in record:
            return "ticker"
        return None

    @classmethod
    def key_of(cls, record: Mapping[str, Any], source: str | None = None) -> str | None:
        """The key whose state `record` can change: the feed source for a feed-health tick, else the product
        (`rtca.analytics.checks.product_id`: KeyError / TypeError / ValueError for a record without a usable one)."""
        source = source or cls.source_of(record)
        if source == "feed_health" and record.get("kind") == "tick":
            feed = record.get("source") or "feed"
            if type(feed) is not str or len(feed) > MAX_PRODUCT_ID:
                raise ValueError(f"source: expected a feed name of at most {MAX_PRODUCT_ID} characters")  # a key
            return feed  # kept for good, in memory and checkpoints, like a product id
        return product_id(record)

    def state_of(self, key: str) -> dict[str, Any]:
        """Everything the rules keep for `key` (JSON-ready): armed flags, price windows, volatility histories,
        last reported gaps, each by rule name."""
        state: dict[str, Any] = {"armed": {}, "prices": {}, "vols": {}, "gaps": {}}
        for rule in self.rules:
            k = (rule.name, key)
            if k in self.armed:
                state["armed"][rule.name] = self.armed[k]
            if k in self._prices:
                state["prices"][rule.name] = [list(p) for p in self._prices[k]]
            if k in self._vols:
                state["vols"][rule.name] = list(self._vols[k])
            if k in self._gaps:
                state["gaps"][rule.name] = self._gaps[k]
        return state

    def resume(self, key: str, state: Mapping[str, Any]) -> None:
        """Take `key`'s state from `state_of` (rules it does not name start afresh; unknown rule names are
        ignored). All or nothing: a state that does not parse raises (TypeError, ValueError...) with `key`'s
        state as it was, never half replaced (armed flags taken, the prices lost)."""
        armed, prices, vols, gaps = (state.get(part, {}) for part in ("armed", "prices", "vols", "gaps"))
        parsed = {
            rule.name: (
                bool(armed[rule.name]) if rule.name in armed else None,
                deque(_price_point(t, p) for t, p in prices[rule.name]) if rule.name in prices else None,
                deque((_finite(v) for v in vols[rule.name]), maxlen=rule.history) if rule.name in vols else None,
                int(gaps[rule.name]) if rule.name in gaps else None,
            )
            for rule in self.rules
        }
        tables: tuple[dict[tuple[str, str], Any], ...] = (self.armed, self._prices, self._vols, self._gaps)
        for name, values in parsed.items():
            for table, value in zip(tables, values):
                if value is None:
                    table.pop((name, key), None)
                else:
                    table[(name, key)] = value

    def evaluate(self, record: Mapping[str, Any], source: str | None = None) -> list[dict[str, Any]]:
        """The alerts one record of `source` (`SOURCES`; None: by its shape) raises, usually none; sets `changed`."""
        self.changed = False
        source = source or self.source_of(record)
        if source == "feed_health":
            kind = record.get("kind")
            if kind == "tick":
                return self._feed_stalled(record)
            return self._missed_trades(record) if kind == "gap" else []
        if source == "volatility":
            return self._vol_zscore(record)
        if source == "book":
            return self._spread(record)
        if source == "ticker" and "price" in record:
            return self._price_move(record)
        return []

    # --- hysteresis ------------------------------------------------------------------------------------------------
    def _check(self, rule: Rule, key: str, value: float | None, event_ms: Any, received_ms: Any,
               message: str) -> list[dict[str, Any]]:  # fmt: skip
        if value is None or not math.isfinite(value):
            return []
        state_key = (rule.name, key)
        armed = self.armed.get(state_key, True)
        if armed and value > rule.threshold:
            # `key` goes in as a value, never into the template: a product id may hold braces
            alert = alert_record(rule.name, rule.severity, key, event_ms, received_ms, value, rule.threshold,
                                 message.format(key=key, value=value, threshold=rule.threshold))  # fmt: skip
            self.armed[state_key] = False
            self.changed = True
            return [alert]
        if not armed and value <= rule.clear_level:
            self.armed[state_key] = True
            self.changed = True
        return []

    # --- the rules -------------------------------------------------------------------------------------------------
    def _price_move(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        product = product_id(record)
        try:  # one price far ahead would pin the window: every later price would be skipped as older than it
            event_ms, price = event_time(record), number(record["price"], "price", positive=True)
            received_ms = optional_long(record, "received_ms")
        except (KeyError, TypeError, ValueError):
            return out  # outside the record contract: the statistics and volatility functions dead-letter it
        for rule in self._by_kind("price_move"):
            prices = self._prices.setdefault((rule.name, product), deque())
            if prices and event_ms < prices[-1][0] - rule.window_s * 1000:
                continue  # older than the window of the newest price: it would compare prices a window apart
            # kept in event-time order (a late price goes to its place), so the window's oldest are at the left
            at = len(prices)
            while at and prices[at - 1][0] > event_ms:
                at -= 1
            prices.insert(at, (event_ms, price))
            self.changed = True
            horizon = prices[-1][0] - rule.window_s * 1000
            while prices and prices[0][0] < horizon:
                prices.popleft()
            low = min(p for _, p in prices)
            high = max(p for _, p in prices)
            value = max((price - low) / low, (high - price) / high) * 100.0  # differences: exact at round moves
            out += self._check(rule, product, value, event_ms, received_ms,
                               f"{{key}} moved {{value:.3f}}% within {rule.window_s:g}s (over {{threshold:g}}%)")
        return out

    def _vol_zscore(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        product, vol = product_id(record), record.get("realized_vol")
        event_ms, received_ms = _times(record)
        if vol is None or not math.isfinite(vol):
            return out
        for rule in self._by_kind("vol_zscore"):
            history = self._vols.setdefault((rule.name, product), deque(maxlen=rule.history))
            if len(history) >= rule.min_history:
                n = len(history)
                mean = sum(history) / n
                # d * d, not d ** 2: a float power raises OverflowError (a huge value would poison the history)
                std = math.sqrt(sum((v - mean) * (v - mean) for v in history) / (n - 1))
                if 0 < std < math.inf:
                    out += self._check(rule, product, (vol - mean) / std, event_ms, received_ms,
                                       "{key} realized vol z-score {value:.2f} (over {threshold:g})")
            history.append(float(vol))
            self.changed = True
        return out

    def _spread(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        if record.get("valid") is False:
            return []
        out: list[dict[str, Any]] = []
        product = product_id(record)
        event_ms, received_ms = _times(record)
        for rule in self._by_kind("spread_bps"):
            out += self._check(rule, product, record.get("spread_bps"), event_ms, received_ms,
                               "{key} spread {value:.1f} bps (over {threshold:g})")
        return out

    def _feed_stalled(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        silence_ms = record.get("silence_ms")
        if silence_ms is None:
            return []  # no frame yet: nothing to measure
        out: list[dict[str, Any]] = []
        source, ts_ms = self.key_of(record, "feed_health"), optional_long(record, "ts_ms")
        for rule in self._by_kind("feed_stalled"):
            out += self._check(rule, source, silence_ms / 1000.0, ts_ms, ts_ms,
                               "feed {key} silent for {value:.1f} s (over {threshold:g} s)")
        return out

    def _missed_trades(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        product, ts_ms = product_id(record), optional_long(record, "ts_ms")
        missed, first, last = (long_field(record, name) for name in ("missed", "first_missing", "last_missing"))
        for rule in self._by_kind("missed_trades"):
            key = (rule.name, product)
            if missed <= rule.threshold or first == self._gaps.get(key):
                continue
            self._gaps[key] = first
            self.changed = True
            alert = alert_record(rule.name, rule.severity, product, ts_ms, ts_ms,
                                 float(missed), rule.threshold,
                                 f"{product}: {missed} missed trades ({first}..{last})")  # fmt: skip
            alert["alert_id"] = f"{rule.name}:{product}:{first}"
            out.append(alert)
        return out

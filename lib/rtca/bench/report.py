"""What every benchmark reports, and how: percentiles, figures against a same-run reference, JSON files, the table.

Pure (no stack): the unit tests in `tests/bench/` cover it. A benchmark returns a `BenchResult`: its figures, each
with the reference it is compared with (measured in the same run, on the same machine, at the same load), the
ratio between them and, where the issue sets one, the goal on that ratio. Absolute numbers are context only: the
machines here are shared and noisy, so nothing is judged on an absolute timing.

Files: `<run dir>/bench/<bench>-<UTC time>.json` per benchmark and `<run dir>/bench/latest.json` with every result
of the last `rtca bench` invocation (schema `SCHEMA`).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

SCHEMA = "rtca-bench/1"

Op = Literal["<=", ">="]


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default method)."""
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    position = (len(data) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    """p50 / p99 / max (and count, min, mean) of a sample, e.g. latencies in ms."""

    count: int
    p50: float
    p99: float
    max: float
    min: float
    mean: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        data = [float(v) for v in values]
        if not data:
            raise ValueError("summary of no values")
        return cls(len(data), percentile(data, 50), percentile(data, 99), max(data), min(data),
                   sum(data) / len(data))

    def text(self, unit: str = "ms") -> str:
        return f"p50 {_num(self.p50)} / p99 {_num(self.p99)} / max {_num(self.max)} {unit} (n={self.count:,})"


@dataclass(frozen=True)
class Goal:
    """A goal on a figure's ratio to its reference, e.g. `Goal("<=", 1.5)`: at most 1.5 times the reference."""

    op: Op
    threshold: float

    def met(self, ratio: float | None) -> bool | None:
        if ratio is None or math.isnan(ratio):
            return None
        return ratio <= self.threshold if self.op == "<=" else ratio >= self.threshold

    def text(self, unit: str = "x") -> str:
        if unit == "%":
            return f"{self.op} {self.threshold:.0%}"
        return f"{self.op} {_num(self.threshold)}{unit}"


@dataclass(frozen=True)
class Figure:
    """One measured figure, its same-run reference and the ratio value / reference.

    `ratio_unit` is how the ratio reads: "x" (times the reference) or "%" (share of the reference). `value` and
    `reference_value` are absolute context in `unit`. `inverse` makes the ratio reference / value (for latencies
    where "better" means smaller: the query benchmark's "4x better than untuned" is untuned p99 / tuned p99).
    `paired_ratio`, when given, is the ratio instead: e.g. the median of per-round ratios of a benchmark that
    measures both sides in each round, which the load's swings between rounds disturb less than a ratio of medians.
    `unmet_because`, when given, says which condition of the goal the run did not hold (e.g. the rate it asks for):
    the goal is then not met, whatever the ratio.
    """

    bench: str
    name: str
    value: float | None
    unit: str
    reference: str = ""
    reference_value: float | None = None
    goal: Goal | None = None
    ratio_unit: Literal["x", "%"] = "x"
    inverse: bool = False
    note: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    paired_ratio: float | None = None
    unmet_because: str = ""

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        a, b = (self.reference_value, self.value) if self.inverse else (self.value, self.reference_value)
        if a is None or b is None or b == 0:
            return None
        return a / b

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return False if self.unmet_because else self.goal.met(self.ratio)

    def to_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench, "name": self.name, "value": self.value, "unit": self.unit,
            "reference": self.reference, "reference_value": self.reference_value, "ratio": self.ratio,
            "ratio_unit": self.ratio_unit, "inverse": self.inverse,
            "goal": None if self.goal is None else {"op": self.goal.op, "threshold": self.goal.threshold},
            "met": self.met, "note": self.note, "detail": dict(self.detail), "paired_ratio": self.paired_ratio,
            "unmet_because": self.unmet_because,
        }  # fmt: skip


@dataclass
class BenchResult:
    """One benchmark's run: its figures, parameters and raw details, the machine and its load around the run."""

    bench: str
    started: str
    finished: str = ""
    seconds: float = 0.0
    quick: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "bench": self.bench, "started": self.started, "finished": self.finished,
            "seconds": round(self.seconds, 3), "quick": self.quick, "parameters": self.parameters,
            "machine": self.machine, "figures": [f.to_json() for f in self.figures], "details": self.details,
            "error": self.error,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BenchResult:
        figures = []
        for f in data.get("figures") or []:
            goal = f.get("goal")
            figures.append(Figure(
                bench=f["bench"], name=f["name"], value=f.get("value"), unit=f.get("unit", ""),
                reference=f.get("reference", ""), reference_value=f.get("reference_value"),
                goal=Goal(goal["op"], float(goal["threshold"])) if goal else None,
                ratio_unit=f.get("ratio_unit", "x"), inverse=bool(f.get("inverse")), note=f.get("note", ""),
                detail=f.get("detail") or {}, paired_ratio=f.get("paired_ratio"),
                unmet_because=f.get("unmet_because", ""),
            ))  # fmt: skip
        return cls(bench=data["bench"], started=data.get("started", ""), finished=data.get("finished", ""),
                   seconds=float(data.get("seconds") or 0), quick=bool(data.get("quick")),
                   parameters=dict(data.get("parameters") or {}), figures=figures,
                   details=dict(data.get("details") or {}), machine=dict(data.get("machine") or {}),
                   error=data.get("error"))  # fmt: skip


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def machine_info() -> dict[str, Any]:
    """What the figures ran on, with the load at this moment (1, 5, 15 minutes)."""
    import psutil

    load = os.getloadavg()
    memory = psutil.virtual_memory()
    return {
        "nproc": os.cpu_count(), "ram_gb": round(memory.total / 1024**3, 1),
        "available_gb": round(memory.available / 1024**3, 1), "load": [round(x, 2) for x in load],
        "platform": platform.platform(), "python": platform.python_version(),
    }  # fmt: skip


def cpu_times() -> dict[str, float]:
    """The machine's cumulative CPU seconds by state, to tell later how busy a benchmark's interval was."""
    import psutil

    return {k: float(v) for k, v in psutil.cpu_times()._asdict().items()}


def cpu_shares(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Shares of all CPU time between two `cpu_times()`: busy (neither idle nor waiting), iowait, and steal, the
    time the hypervisor gave this virtual machine's CPUs to another guest: on a shared machine, a benchmark's
    processes can be short of CPU while our own processes add up to less than every core."""
    delta = {k: max(0.0, after.get(k, 0.0) - before.get(k, 0.0)) for k in before}
    # guest time is already counted in user time on Linux
    total = sum(v for k, v in delta.items() if k not in ("guest", "guest_nice"))
    if total <= 0:
        return {}
    idle, iowait, steal = delta.get("idle", 0.0), delta.get("iowait", 0.0), delta.get("steal", 0.0)
    return {"busy": round((total - idle - iowait - steal) / total, 3), "iowait": round(iowait / total, 3),
            "steal": round(steal / total, 3)}


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_default, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def write_results(out_dir: Path, results: Sequence[BenchResult]) -> list[Path]:
    """One file per result (`<bench>-<UTC time>.json`) and `latest.json` with them all; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for result in results:
        stamp = (result.started or now_iso()).replace(":", "").replace("-", "")
        path = out_dir / f"{result.bench}-{stamp}.json"
        path.write_bytes(dumps(result.to_json()))
        written.append(path)
    latest = out_dir / "latest.json"
    latest.write_bytes(dumps({"schema": SCHEMA, "written": now_iso(), "results": [r.to_json() for r in results]}))
    written.append(latest)
    return written


def read_results(path: Path) -> list[BenchResult]:
    data = orjson.loads(path.read_bytes())
    items = data["results"] if "results" in data else [data]
    return [BenchResult.from_json(item) for item in items]


# --- the table -------------------------------------------------------------------------------------------------------
def _num(value: float | None) -> str:
    """Compact human number: 12,345 / 123 / 12.3 / 1.23 / 0.0123."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{value:.0%}"
    return f"{_num(value)} {unit}".strip()


def format_ratio(figure: Figure) -> str:
    ratio = figure.ratio
    if ratio is None:
        return "-"
    return f"{ratio:.0%}" if figure.ratio_unit == "%" else f"{_num(ratio)}x"


def _verdict(figure: Figure) -> str:
    verdict = {True: "yes", False: "NO", None: ""}[figure.met]
    return f"{verdict} *" if figure.note or figure.unmet_because else verdict


def notes(results: Sequence[BenchResult]) -> list[str]:
    """`* bench, figure: why the goal is not met; note` for every figure marked with `*` in the table."""
    lines = []
    for f in (f for r in results for f in r.figures):
        said = "; ".join(text for text in (f.unmet_because and f"not met: {f.unmet_because}", f.note) if text)
        if said:
            lines.append(f"* {f.bench}, {f.name}: {said}")
    return lines


COLUMNS = ("bench", "figure", "value", "reference (same run)", "ratio", "goal", "met")


def table_rows(results: Sequence[BenchResult]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for result in results:
        if result.error and not result.figures:
            rows.append((result.bench, "FAILED", result.error.splitlines()[0][:80], "", "", "", ""))
            continue
        for f in result.figures:
            reference = f.reference
            if f.reference_value is not None:
                reference = f"{reference} {format_value(f.reference_value, f.unit)}".strip()
            goal = f.goal.text(f.ratio_unit) if f.goal else ""
            rows.append((f.bench, f.name, format_value(f.value, f.unit), reference, format_ratio(f), goal,
                         _verdict(f)))
        if result.error:
            rows.append((result.bench, "FAILED (partly)", result.error.splitlines()[0][:80], "", "", "", ""))
    return rows


def format_table(results: Sequence[BenchResult], *, markdown: bool = False) -> str:
    """The results as a fixed-width text table (or a Markdown table), one row per figure."""
    rows = table_rows(results)
    if markdown:
        escape = str.maketrans({"|": "/"})
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
        lines += ["| " + " | ".join(cell.translate(escape) for cell in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in rows)) if rows else len(COLUMNS[i]) for i in
              range(len(COLUMNS))]  # fmt: skip
    right = {2, 4}  # numbers: value, ratio

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(COLUMNS), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(s.rstrip() for s in out)


def format_machine(machine: Mapping[str, Any]) -> str:
    load = machine.get("load") or []
    load_text = " / ".join(f"{x:.2f}" for x in load) if load else "?"
    return (f"{machine.get('nproc', '?')} CPUs, {machine.get('ram_gb', '?')} GB RAM "
            f"({machine.get('available_gb', '?')} GB available), load {load_text} (1 / 5 / 15 min)")

"""The benchmarks' pure parts: percentiles, summaries, figures and goals, result JSON, the table (no stack)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rtca.bench.report import (
    SCHEMA,
    BenchResult,
    Figure,
    Goal,
    Summary,
    cpu_shares,
    cpu_times,
    format_machine,
    format_table,
    format_value,
    percentile,
    read_results,
    write_results,
)


def test_percentile_interpolates_like_numpy() -> None:
    values = [15, 20, 35, 40, 50]
    assert percentile(values, 0) == 15
    assert percentile(values, 100) == 50
    assert percentile(values, 50) == 35
    assert percentile(values, 40) == pytest.approx(29.0)  # numpy.percentile(values, 40) == 29.0
    assert percentile(values, 99) == pytest.approx(49.6)
    assert percentile([7.0], 99) == 7.0
    assert percentile(reversed(range(101)), 99) == pytest.approx(99.0)  # order does not matter


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_refuses_a_q_outside_0_100(q: float) -> None:
    with pytest.raises(ValueError):
        percentile([1, 2], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary() -> None:
    s = Summary.of(range(1, 1001))
    assert (s.count, s.min, s.max) == (1000, 1, 1000)
    assert s.p50 == pytest.approx(500.5)
    assert s.p99 == pytest.approx(990.01)
    assert s.mean == pytest.approx(500.5)
    assert "p99 990" in s.text()


def test_goal() -> None:
    assert Goal("<=", 1.5).met(1.5) is True
    assert Goal("<=", 1.5).met(1.51) is False
    assert Goal(">=", 0.7).met(0.69) is False
    assert Goal(">=", 0.7).met(None) is None
    assert Goal(">=", 0.7).met(math.nan) is None
    assert Goal(">=", 0.7).text("%") == ">= 70%"
    assert Goal("<=", 1.5).text() == "<= 1.50x"


def test_figure_ratio_direction_and_goal() -> None:
    latency = Figure("freshness", "ticker p99", 300.0, "ms", reference="direct p99", reference_value=200.0,
                     goal=Goal("<=", 1.5))
    assert latency.ratio == pytest.approx(1.5) and latency.met is True
    # "4x better than untuned": untuned / tuned
    query = Figure("queries", "q p99", 25.0, "ms", reference="untuned p99", reference_value=110.0,
                   goal=Goal(">=", 4.0), inverse=True)
    assert query.ratio == pytest.approx(4.4) and query.met is True
    assert Figure("x", "no reference", 3.0, "ms").ratio is None
    assert Figure("x", "zero reference", 3.0, "ms", reference_value=0.0).ratio is None
    assert Figure("x", "no value", None, "ms", reference_value=1.0, goal=Goal("<=", 1)).met is None


def _result() -> BenchResult:
    result = BenchResult("freshness", started="2026-11-28T23:00:00Z", finished="2026-11-28T23:05:00Z",
                         seconds=300.0, quick=True, parameters={"rate": 1000})
    result.add(Figure("freshness", "ticker p99", 310.0, "ms", reference="direct p99", reference_value=242.0,
                      goal=Goal("<=", 1.5), detail={"p50": 5.0}))
    result.add(Figure("freshness", "ingest rate", 990.0, "msg/s", reference="asked", reference_value=1000.0,
                      ratio_unit="%"))
    result.machine = {"nproc": 2, "ram_gb": 23.5, "available_gb": 20.1, "load": [2.5, 3.0, 3.5]}
    return result


def test_result_json_round_trip(tmp_path: Path) -> None:
    result = _result()
    failed = BenchResult("capacity", started="2026-11-28T23:06:00Z", error="RuntimeError: boom")
    written = write_results(tmp_path, [result, failed])
    assert [p.name for p in written] == ["freshness-20261128T230000Z.json", "capacity-20261128T230600Z.json",
                                         "latest.json"]
    one = json.loads(written[0].read_text())
    assert one["schema"] == SCHEMA and one["bench"] == "freshness" and one["quick"] is True
    figure = one["figures"][0]
    assert figure["ratio"] == pytest.approx(310 / 242)
    assert figure["goal"] == {"op": "<=", "threshold": 1.5} and figure["met"] is True
    assert figure["detail"] == {"p50": 5.0}
    latest = json.loads(written[-1].read_text())
    assert [r["bench"] for r in latest["results"]] == ["freshness", "capacity"]
    assert latest["results"][1]["error"] == "RuntimeError: boom"
    back = read_results(written[-1])
    assert back[0].to_json() == result.to_json()
    assert back[1].error == "RuntimeError: boom"
    assert read_results(written[0])[0].figures[0].met is True


def test_table_has_one_row_per_figure_with_ratio_and_goal() -> None:
    failed = BenchResult("capacity", started="", error="RuntimeError: boom\nmore")
    text = format_table([_result(), failed])
    lines = text.splitlines()
    assert lines[0].split() == ["bench", "figure", "value", "reference", "(same", "run)", "ratio", "goal", "met"]
    assert set(lines[1]) <= {"-", " "}
    row = next(line for line in lines if "ticker p99" in line)
    assert "310 ms" in row and "direct p99 242 ms" in row and "1.28x" in row and "<= 1.50x" in row
    assert row.rstrip().endswith("yes")
    assert "99%" in next(line for line in lines if "ingest rate" in line)
    assert "FAILED" in lines[-1] and "RuntimeError: boom" in lines[-1] and "more" not in text
    # columns line up: every row as wide as the header's separator at most
    assert max(len(line) for line in lines) <= len(lines[1])


def test_markdown_table() -> None:
    text = format_table([_result()], markdown=True)
    lines = text.splitlines()
    assert lines[0].startswith("| bench | figure |") and lines[1].startswith("| --- |")
    assert len(lines) == 4 and all(line.count("|") == 8 for line in lines)


def test_values_and_machine_formatting() -> None:
    assert format_value(12345.6, "msg/s") == "12,346 msg/s"
    assert format_value(242.0, "ms") == "242 ms"
    assert format_value(5.04, "ms") == "5.04 ms"
    assert format_value(0.0123, "s") == "0.0123 s"
    assert format_value(0.97, "%") == "97%"
    assert format_value(None, "ms") == "-"
    text = format_machine({"nproc": 2, "ram_gb": 23.5, "available_gb": 20.1, "load": [2.5, 3.0, 3.5]})
    assert text == "2 CPUs, 23.5 GB RAM (20.1 GB available), load 2.50 / 3.00 / 3.50 (1 / 5 / 15 min)"


def test_a_paired_ratio_is_the_figure_and_decides_the_goal() -> None:
    """Medians 2,517 vs 2,703 msg/s read 93%, but the rounds' own ratios had a median of 89%: the table says 89%."""
    figure = Figure("functions", "router", 2517.0, "msg/s", reference_value=2703.0, goal=Goal(">=", 0.9),
                    ratio_unit="%", paired_ratio=0.89)
    assert figure.ratio == 0.89 and figure.met is False
    again = BenchResult.from_json({"bench": "functions", "figures": [figure.to_json()]}).figures[0]
    assert again.ratio == 0.89 and again.met is False
    assert Figure("functions", "router", 2517.0, "msg/s", reference_value=2703.0, goal=Goal(">=", 0.9),
                  ratio_unit="%").met is True


def test_cpu_shares_split_all_cores_time_into_busy_iowait_and_steal() -> None:
    before = {"user": 100.0, "system": 50.0, "idle": 800.0, "iowait": 10.0, "steal": 40.0, "guest": 5.0}
    after = {"user": 160.0, "system": 70.0, "idle": 880.0, "iowait": 20.0, "steal": 70.0, "guest": 9.0}
    # 200 s of CPU time in all: 80 busy, 80 idle, 10 iowait, 30 stolen (guest time is inside user time)
    assert cpu_shares(before, after) == {"busy": 0.4, "iowait": 0.05, "steal": 0.15}
    assert cpu_shares(after, after) == {}


def test_cpu_times_are_cumulative_seconds_this_machine_counts() -> None:
    first = cpu_times()
    assert first["idle"] > 0 and "user" in first
    shares = cpu_shares(first, cpu_times() | {"idle": first["idle"] + 1.0})
    assert 0.0 <= shares["busy"] <= 1.0 and 0.0 <= shares["steal"] <= 1.0


def test_a_goal_whose_conditions_the_run_did_not_hold_is_not_met_whatever_the_ratio() -> None:
    from rtca.bench.report import notes, table_rows

    held = Figure("freshness", "ticker p99", 100.0, "ms", reference="direct p99", reference_value=100.0,
                  goal=Goal("<=", 1.5))  # fmt: skip
    behind = Figure("freshness", "stats p99", 100.0, "ms", reference="direct p99", reference_value=100.0,
                    goal=Goal("<=", 1.5), unmet_because="ingest held 562 of the 1,000 msg/s asked")  # fmt: skip
    assert held.met is True and behind.met is False and behind.ratio == 1.0
    result = BenchResult("freshness", started="", figures=[held, behind])
    rows = {row[1]: row for row in table_rows([result])}
    assert rows["ticker p99"][-1] == "yes" and rows["stats p99"][-1] == "NO *"
    assert notes([result]) == ["* freshness, stats p99: not met: ingest held 562 of the 1,000 msg/s asked"]
    again = BenchResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again.figures[1].met is False

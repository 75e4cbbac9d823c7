"""`rtca bench [NAME...] [--quick]`: run benchmarks, print one table, write the JSON results under the run directory.

Every figure is a ratio against a reference measured in the same run (absolute numbers beside it), never a
pass/fail timing. A benchmark that fails is reported as FAILED in the table (its error in the JSON) and the others
still run. See docs/performance.md for what each benchmark measures and the latest figures.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rtca.bench.report import (
    BenchResult,
    Figure,
    cpu_shares,
    cpu_times,
    format_machine,
    format_table,
    machine_info,
    notes,
    now_iso,
    write_results,
)
from rtca.settings import Settings

Say = Callable[[str], None]

#: name -> (what it measures, needs the shared stack)
BENCHES: dict[str, tuple[str, bool]] = {
    "kernel": ("ticker-statistics kernel vs the seed's pandas-per-message code", False),
    "functions": ("router and statistics functions end to end vs an identity function deployed as they are", True),
    "ingest": ("simulator at max rate -> raw topic vs Pulsar's own producers", True),
    "freshness": ("exchange time -> visible in Pinot, through the functions vs a direct table", True),
    "capacity": ("highest sustained simulator rate of the whole pipeline vs the identity function", True),
    "queries": ("dashboard queries on 1M rows: tuned tables vs untuned copies", True),
    "startup": ("warm rtca up / rtca runbooks to healthy, peak memory (own run dir and ports)", False),
}
#: What `rtca bench` runs without names; `startup` stops and starts a stack of its own (minutes, heavy), so it
#: runs when named (`make bench` names it).
DEFAULT = ("kernel", "functions", "ingest", "freshness", "capacity", "queries")


def _kernel(settings: Settings, quick: bool, keep: bool, say: Say) -> BenchResult:
    from rtca.bench import stats_kernel
    from rtca.bench.report import Goal

    result = BenchResult("kernel", started="", quick=quick)
    messages = 2000 if quick else 5000
    figures = stats_kernel.main(["--messages", str(messages)])
    result.parameters = {"messages": messages}
    result.add(Figure("kernel", "TickerStats.update", figures["kernel_rate"], "msg/s",
                      reference="seed's pandas per message", reference_value=figures["seed_rate"],
                      goal=Goal(">=", 30)))  # fmt: skip
    result.details = dict(figures)
    return result


def _functions(settings: Settings, quick: bool, keep: bool, say: Say, out_dir: Path | None = None) -> BenchResult:
    from rtca.bench import functions_e2e
    from rtca.bench.report import Goal

    result = BenchResult("functions", started="", quick=quick)
    args = ["--messages", "3000", "--rounds", "2"] if quick else []
    if out_dir is not None:
        args += ["--out", str(out_dir)]
    if keep:
        args.append("--keep")
    figures = functions_e2e.main(args)
    result.parameters = {"args": args}
    for name, kind in functions_e2e.PAIRS:
        result.add(Figure("functions", f"{name} end to end (median rate)", figures[f"{name}_{kind}_median"], "msg/s",
                          reference=f"identity on {kind} (deployed as ours)",
                          reference_value=figures[f"publishing_{kind}_median"], goal=Goal(">=", 0.9),
                          ratio_unit="%", paired_ratio=figures[f"{name}_ratio"],
                          note=f"ratio: median of round ratios ({figures[f'{name}_ratio_min']:.0%}-"
                               f"{figures[f'{name}_ratio_max']:.0%})"))  # fmt: skip
    for name, kind in functions_e2e.PAIRS:
        result.add(Figure("functions", f"{name} vs the runtime's own identity (context)",
                          figures[f"{name}_{kind}_median"], "msg/s", reference=f"runtime's identity on {kind}",
                          reference_value=figures[f"identity_{kind}_median"], ratio_unit="%",
                          paired_ratio=figures[f"{name}_identity_ratio"],
                          note="ATLEAST_ONCE, the runtime publishes and acknowledges: slower than ours"))  # fmt: skip
    result.details = dict(figures)
    return result


def _runner(name: str, out_dir: Path, options: Mapping[str, Any]) -> Callable[[Settings, bool, bool, Say],
                                                                              BenchResult]:  # fmt: skip
    if name == "kernel":
        return _kernel
    if name == "functions":
        return lambda settings, quick, keep, say: _functions(settings, quick, keep, say, out_dir)
    module = __import__(f"rtca.bench.{name}", fromlist=["run"])
    extra = dict(options.get(name) or {})

    def run(settings: Settings, quick: bool, keep: bool, say: Say) -> BenchResult:
        return module.run(settings, quick=quick, keep=keep, say=say, **extra)  # type: ignore[no-any-return]

    return run


def run_suite(settings: Settings, names: Sequence[str] = DEFAULT, *, quick: bool = False, keep: bool = False,
              say: Say = print, out_dir: Path | None = None,
              options: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[list[BenchResult], list[Path]]:
    """Run the named benchmarks in order; returns the results and the JSON files written. `options` holds extra
    keyword arguments per benchmark (e.g. {"queries": {"candidates": ["timesorted"]}})."""
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        from rtca.errors import ConfigError

        raise ConfigError(f"unknown benchmark(s): {', '.join(unknown)}", hint=f"one of {', '.join(BENCHES)}")
    results: list[BenchResult] = []
    out_dir = out_dir or settings.run_dir / "bench"
    # ingest's own warnings (e.g. the trades a simulator made before it was subscribed) are counted in its
    # report, which the results keep; they would only interleave with the progress lines here
    logging.getLogger("rtca.feed").setLevel(logging.ERROR)
    for name in names:
        machine = machine_info()
        say(f"== {name}: {BENCHES[name][0]}{' (quick)' if quick else ''}; machine: {format_machine(machine)}")
        started, begin, cpu_before = now_iso(), time.monotonic(), cpu_times()
        try:
            result = _runner(name, out_dir, options or {})(settings, quick, keep, say)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one failed benchmark must not lose the others' figures
            result = BenchResult(name, started=started, quick=quick, error=f"{type(exc).__name__}: {exc}")
            result.details["traceback"] = traceback.format_exc()
            say(f"  FAILED: {result.error}")
        result.started = started
        result.finished = now_iso()
        result.seconds = time.monotonic() - begin
        after = machine_info()
        result.machine = {**machine, "load_before": machine["load"], "load_after": after["load"],
                          "cpu_during": cpu_shares(cpu_before, cpu_times())}
        result.quick = quick
        results.append(result)
        say(f"  ({result.seconds:.0f} s)")
        written = write_results(out_dir, results)  # after each, so an interrupted run keeps what it measured
    say("")
    say(format_table(results))
    for line in notes(results):
        say(line)
    return results, written if results else []


def summary_lines(results: Sequence[BenchResult]) -> list[str]:
    """The machine and its load (1 min) before and after each benchmark, for the report under the table."""
    if not results:
        return []
    lines = [f"machine: {format_machine(results[0].machine)}"]
    loads = [f"{r.bench} {r.machine['load_before'][0]:.1f} -> {r.machine['load_after'][0]:.1f}"
             for r in results if r.machine.get("load_before") and r.machine.get("load_after")]  # fmt: skip
    if loads:
        lines.append("load (1 min) before -> after: " + ", ".join(loads))
    shares = [f"{r.bench} busy {cpu['busy']:.0%}, stolen {cpu['steal']:.0%}"
              for r in results if (cpu := r.machine.get("cpu_during"))]  # fmt: skip
    if shares:
        lines.append("CPU time during (all cores; stolen = given to other guests by the hypervisor): "
                     + ", ".join(shares))
    return lines

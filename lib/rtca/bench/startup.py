"""Start-up and memory benchmark: warm `rtca up` and warm `rtca runbooks` to all-healthy, peak memory per service.

It never touches the stack in the project's run directory: it runs a second stack of its own, in its own run
directory (`<run dir>/bench/startup-stack`, or `run(run_dir=...)`) with every port moved by an offset (+20000: Pulsar
26650/28080/23181, Pinot 22191/29000/28099/28098/28097/28090, Superset 28088), through the `rtca` command with
`RTCA_RUN_DIR` and `RTCA_*__*_PORT` in its environment. Steps:

1. once, if that run directory is new: `rtca runbooks` (cold: Superset's database, the Pinot cluster, functions,
   tables, dashboards are created), then `rtca down`; the cold times are kept as context;
2. warm `rtca up` (the stack only) to all-healthy, then `rtca down`;
3. warm `rtca runbooks` (what `make up` runs: stack, functions, tables, dashboards, the replay) to its end (each
   runbook checks health), then `rtca down`, timed as context (no budget: the issue sets none).

While each runs, the resident memory of every service's process tree is sampled every 0.5 s (Pulsar's function
instances, Python children of the Pulsar JVM, counted apart as `functions`); the peak per service and the peak of
their sum are reported. The issue sets budgets rather than same-run references here: stack <= 60 s, everything
<= 120 s, <= 4 GB in all; the ratio column is the share of the budget, and the machine's load is recorded with
it. Run it on a quiet machine (`rtca bench startup`): it starts five JVMs and Superset.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from rtca.bench.report import BenchResult, Figure, Goal
from rtca.errors import ConfigError
from rtca.settings import Settings

Say = Any
PORT_OFFSET = 20_000
STACK_BUDGET_S = 60.0
ALL_BUDGET_S = 120.0
MEMORY_BUDGET_MB = 4096.0
SECTIONS = ("pulsar", "pinot", "superset")


def port_fields(settings: Settings) -> dict[str, int]:
    """Every port setting as its environment variable name -> value (`RTCA_PULSAR__BROKER_PORT` -> 6650, ...)."""
    ports = {}
    for section in SECTIONS:
        for name, value in getattr(settings, section).model_dump().items():
            if (name == "port" or name.endswith("_port")) and isinstance(value, int):
                ports[f"RTCA_{section.upper()}__{name.upper()}"] = value
    return ports


def bench_environment(settings: Settings, run_dir: Path, offset: int = PORT_OFFSET) -> dict[str, str]:
    """The RTCA_* variables of the benchmark's own stack: its run directory and every port moved by `offset`."""
    if offset <= 0:
        raise ConfigError("the start-up benchmark needs a positive port offset")
    if run_dir.resolve() == settings.run_dir.resolve():
        raise ConfigError(f"the start-up benchmark must not use the project's run directory ({run_dir})",
                          hint="give it a directory of its own")  # fmt: skip
    env = {"RTCA_RUN_DIR": str(run_dir), "RTCA_BACKEND": "local"}
    for name, port in port_fields(settings).items():
        moved = port + offset
        if not 0 < moved < 65536:
            raise ConfigError(f"{name} {port} + {offset} is not a port")
        env[name] = str(moved)
    return env


def bench_settings(env: Mapping[str, str]) -> Settings:
    """Settings as the benchmark's `rtca` processes see them (the environment overrides on top of ours)."""
    saved = {k: os.environ.get(k) for k in env}
    try:
        os.environ.update(env)
        from rtca.settings import load_settings

        return load_settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class MemorySampler:
    """Peak resident memory per service (process tree, function instances apart) and of the whole stack."""

    settings: Settings
    interval: float = 0.5
    peaks_mb: dict[str, float] = field(default_factory=dict)
    peak_total_mb: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> dict[str, float]:
        from rtca.stack.local import AUXILIARY_NAMES, SERVICE_NAMES
        from rtca.stack.process import Supervisor, function_instance

        supervisor = Supervisor(self.settings)
        now: dict[str, float] = {}
        for name in (*SERVICE_NAMES, *AUXILIARY_NAMES):
            for member in supervisor.process_tree(name):
                bucket = "functions" if function_instance(member) is not None else name
                try:
                    now[bucket] = now.get(bucket, 0.0) + member.memory_info().rss / 1024**2
                    times = member.cpu_times()
                    self.cpu_seconds[f"{bucket}:{member.pid}"] = times.user + times.system
                except psutil.Error:
                    continue
        for bucket, mb in now.items():
            self.peaks_mb[bucket] = max(self.peaks_mb.get(bucket, 0.0), mb)
        self.peak_total_mb = max(self.peak_total_mb, sum(now.values()))
        return now

    def start(self) -> MemorySampler:
        def run() -> None:
            while not self._stop.is_set():
                self.sample()
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, name="bench-memory", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def cpu_by_service(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, seconds in self.cpu_seconds.items():
            bucket = key.split(":", 1)[0]
            out[bucket] = round(out.get(bucket, 0.0) + seconds, 1)
        return out


@dataclass
class Step:
    command: str
    seconds: float
    returncode: int
    peaks_mb: dict[str, float]
    peak_total_mb: float
    cpu_seconds: dict[str, float]
    output_tail: str

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command, "seconds": round(self.seconds, 1), "returncode": self.returncode,
                "peaks_mb": {k: round(v) for k, v in self.peaks_mb.items()},
                "peak_total_mb": round(self.peak_total_mb), "cpu_seconds": self.cpu_seconds,
                "output_tail": self.output_tail}  # fmt: skip


def rtca(env: Mapping[str, str], *args: str, settings: Settings, timeout: float = 1800.0,
         sample: bool = True) -> Step:  # fmt: skip
    """Run `rtca ARGS` with the benchmark's environment, timing it and sampling memory while it runs (and right
    after: a service is healthy when the command returns)."""
    sampler = MemorySampler(settings)
    if sample:
        sampler.start()
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "rtca.cli", *args], env={**os.environ, **env}, timeout=timeout,
                          capture_output=True, text=True, check=False)  # fmt: skip
    seconds = time.monotonic() - began
    if sample:
        sampler.sample()
        sampler.stop()
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
    return Step(" ".join(args), seconds, done.returncode, dict(sampler.peaks_mb), sampler.peak_total_mb,
                sampler.cpu_by_service(), tail)


def _check(step: Step) -> Step:
    if step.returncode != 0:
        raise RuntimeError(f"`rtca {step.command}` failed (exit {step.returncode}):\n{step.output_tail}")
    return step


def run(settings: Settings, *, quick: bool = False, keep: bool = False, say: Say = print,
        run_dir: Path | None = None, offset: int = PORT_OFFSET) -> BenchResult:  # fmt: skip
    from rtca.stack.process import port_open

    result = BenchResult("startup", started="", quick=quick)
    run_dir = run_dir or settings.run_dir / "bench" / "startup-stack"
    env = bench_environment(settings, run_dir, offset)
    own = bench_settings(env)
    result.parameters = {"run_dir": str(run_dir), "port_offset": offset}
    marker = run_dir / ".bench-initialised"
    steps: dict[str, Step] = {}
    # a stack left running by an earlier run of this benchmark is ours to stop; any other user of a port is not
    _check(rtca(env, "down", settings=own, sample=False))
    busy = [f"{name}={value}" for name, value in env.items() if name.endswith("PORT") and
            port_open(own.pulsar.host, int(value))]  # fmt: skip
    if busy:
        raise ConfigError(f"ports of the start-up benchmark's stack are in use: {', '.join(busy)}",
                          hint="choose another offset (rtca.bench.startup.run(offset=...))")  # fmt: skip
    try:
        if not marker.exists():
            say(f"  first use of {run_dir}: a cold `rtca runbooks` and `rtca down` first (not timed) ...")
            steps["cold runbooks"] = _check(rtca(env, "runbooks", settings=own))
            _check(rtca(env, "down", settings=own, sample=False))
            marker.write_text("initialised by the start-up benchmark\n")
        say("  warm `rtca up` (stack only) ...")
        steps["up"] = _check(rtca(env, "up", settings=own))
        say(f"    {steps['up'].seconds:.0f} s, peak {steps['up'].peak_total_mb:,.0f} MB")
        _check(rtca(env, "down", settings=own, sample=False))
        say("  warm `rtca runbooks` (everything `make up` does) ...")
        steps["runbooks"] = _check(rtca(env, "runbooks", settings=own))
        say(f"    {steps['runbooks'].seconds:.0f} s, peak {steps['runbooks'].peak_total_mb:,.0f} MB")
        if not keep:
            say("  `rtca down` of everything ...")
            steps["down"] = _check(rtca(env, "down", settings=own, sample=False))
            say(f"    {steps['down'].seconds:.0f} s")
    finally:
        if not keep and "down" not in steps:
            rtca(env, "down", settings=own, sample=False)
    result.details = {name: step.to_json() for name, step in steps.items()}
    up, everything = steps["up"], steps["runbooks"]
    result.add(Figure("startup", "warm rtca up (stack) to all-healthy", up.seconds, "s", reference="budget",
                      reference_value=STACK_BUDGET_S, goal=Goal("<=", 1.0), ratio_unit="%",
                      detail={"cpu_seconds": up.cpu_seconds}))  # fmt: skip
    result.add(Figure("startup", "warm rtca runbooks (make up) to the end", everything.seconds, "s",
                      reference="budget", reference_value=ALL_BUDGET_S, goal=Goal("<=", 1.0), ratio_unit="%",
                      detail={"cpu_seconds": everything.cpu_seconds}))  # fmt: skip
    if "down" in steps:
        result.add(Figure("startup", "rtca down after make up, all stopped (context)", steps["down"].seconds, "s",
                          reference="warm rtca up", reference_value=up.seconds, ratio_unit="%"))  # fmt: skip
    peaks = {**up.peaks_mb}
    for name, mb in everything.peaks_mb.items():
        peaks[name] = max(peaks.get(name, 0.0), mb)
    total = max(up.peak_total_mb, everything.peak_total_mb)
    result.add(Figure("startup", "peak resident memory, all services", total, "MB", reference="budget",
                      reference_value=MEMORY_BUDGET_MB, goal=Goal("<=", 1.0), ratio_unit="%"))  # fmt: skip
    for name, mb in sorted(peaks.items(), key=lambda item: -item[1]):
        result.add(Figure("startup", f"peak resident memory: {name}", mb, "MB", reference="all services",
                          reference_value=total, ratio_unit="%"))  # fmt: skip
    return result

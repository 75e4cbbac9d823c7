"""Ingest benchmark: the simulator at maximum rate -> ingest -> raw topic, against Pulsar's own producers.

Each round, on topics of the benchmark's own:

1. the project's simulator (its own process, `--rate max`) -> websocket -> the project's ingest -> raw topic, for
   N frames; the rate is frames received / seconds until the last one was acknowledged (`IngestReport.rate`);
2. the same N raw records (captured as ingest published them: value, key, properties) sent again by a bare
   producer of the same Python client with ingest's batching settings: the client's own limit;
3. `pulsar-perf produce` (Pulsar's own load generator, Java client) with the same payloads (`--payload-file`,
   one frame per line), unthrottled for 25 s (quick) or 45 s: Pulsar's own producer rate on this machine, read as
   the median of its 10-second interval rates after the first (the JVM warms up in the first); once per run.

Ratios: ingest / pulsar-perf (the headline) and ingest / bare Python producer, each of the median rates over the
rounds (the median of the rounds' own ratios is in the figure's detail), best absolute rates beside them. Also, for context, the rate at which the simulator alone generates frames in
this process: when it is not much above the ingest rate, the simulator is what limits the ingest figure.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from rtca.bench.pipeline import (
    BenchScope,
    Payload,
    Say,
    SimulatorProcess,
    product_names,
    produce_all,
    quiet_client,
    run_tapped_ingest,
)
from rtca.bench.report import BenchResult, Figure
from rtca.feed.simulator import SimulatedMarket
from rtca.feed.sinks import Record
from rtca.settings import Settings

_AGGREGATED = re.compile(r"Aggregated throughput stats --- (\d+) records sent --- ([\d.]+) msg/s")
_INTERVAL = re.compile(r"Throughput produced:\s+(\d+) msg ---\s+([\d.]+) msg/s")


def perf_rate(output: str) -> tuple[float, str]:
    """pulsar-perf's steady rate from its output: the median of its 10-second interval rates after the first (the
    JVM warms up in the first), else its aggregate over the whole run."""
    intervals = [float(rate) for _, rate in _INTERVAL.findall(output)]
    aggregate = _AGGREGATED.findall(output)
    total = f"{aggregate[-1][0]} records sent, aggregate {float(aggregate[-1][1]):,.0f} msg/s" if aggregate else ""
    if len(intervals) >= 2:
        steady = statistics.median(intervals[1:])
        return steady, f"median of {len(intervals) - 1} 10-s intervals after warm-up; {total}".rstrip("; ")
    if aggregate:
        return float(aggregate[-1][1]), total
    raise ValueError("no throughput lines")


def pulsar_perf(settings: Settings, topic: str, payloads: list[Payload], seconds: int,
                timeout: float = 600.0) -> tuple[float, str]:  # fmt: skip
    """Run `pulsar-perf produce` with these payloads for `seconds`, unthrottled: (steady msg/s, how it was read)."""
    from rtca.stack.artifacts import pulsar_home

    perf = pulsar_home(settings) / "bin" / "pulsar-perf"
    with tempfile.TemporaryDirectory(prefix="rtca-bench-perf-") as tmp:
        payload_file = Path(tmp) / "payloads.txt"
        payload_file.write_bytes(b"\n".join(data for data, _, _ in payloads if b"\n" not in data) + b"\n")
        env = {**os.environ, "PULSAR_MEM": "-Xms64m -Xmx512m", "PULSAR_LOG_DIR": tmp,
               "PULSAR_GC": "-XX:+UseSerialGC"}  # fmt: skip
        argv = [str(perf), "produce", "-u", settings.pulsar.service_url, "-r", "10000000", "-time", str(seconds),
                "-f", str(payload_file), "-b", "5", "-o", "20000", "-i", "5", topic]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    output = done.stdout + done.stderr
    try:
        return perf_rate(output)
    except ValueError:
        tail = "\n".join(output.strip().splitlines()[-5:])
        raise RuntimeError(f"pulsar-perf reported no throughput (exit {done.returncode}): {tail}") from None


def generation_rate(products: list[str], frames: int) -> float:
    """Frames per second the simulated market generates (no network), in this process."""
    market = SimulatedMarket(products, seed=7, start_us=int(time.time() * 1e6))
    produced, started = 0, time.perf_counter()
    while produced < frames:
        produced += len(market.step(int(time.time() * 1e6)))
    return produced / (time.perf_counter() - started)


def run(settings: Settings, *, quick: bool = False, keep: bool = False, say: Say = print,
        messages: int | None = None, rounds: int | None = None, products: int = 20) -> BenchResult:  # fmt: skip
    result = BenchResult("ingest", started="", quick=quick)
    messages = messages or (20_000 if quick else 100_000)
    rounds = rounds or (2 if quick else 3)
    names = product_names(products)
    result.parameters = {"messages": messages, "rounds": rounds, "products": products}
    ingest_rates: list[float] = []
    python_rates: list[float] = []
    ratios_python: list[float] = []
    rounds_detail: list[dict[str, Any]] = []
    perf_value: float | None = None
    perf_note = ""
    with BenchScope(settings, keep=keep, say=say) as scope, quiet_client(settings) as client:
        result.details["scope"] = scope.tag
        say(f"  simulator alone: generating {min(messages, 20_000):,} frames ...")
        sim_rate = generation_rate(names, min(messages, 20_000))
        payloads: list[Payload] = []
        for round_no in range(1, rounds + 1):
            captured: list[Payload] = []

            def tap(record: Record, captured: list[Payload] = captured) -> None:
                captured.append((record.value, record.properties, record.key))

            with SimulatorProcess(rate=None, products=names, seed=round_no) as sim:
                report = run_tapped_ingest(settings, sim.url, products=names, raw_topic=scope.topic("raw"),
                                           health_topic=scope.topic("feed_health"), on_record=tap,
                                           max_messages=messages, duration=600)  # fmt: skip
            if not report.ok:
                raise RuntimeError(f"ingest lost records: {report}")
            seconds = produce_all(client, scope.topic(f"python-producer-{round_no}"), captured)
            python_rate = len(captured) / seconds
            ingest_rates.append(report.rate)
            python_rates.append(python_rate)
            ratios_python.append(report.rate / python_rate)
            rounds_detail.append({"ingest_msg_s": report.rate, "ingest_received": report.received,
                                  "ingest_seconds": report.seconds, "python_producer_msg_s": python_rate})
            say(f"  round {round_no}: ingest {report.rate:,.0f} msg/s, bare Python producer {python_rate:,.0f} msg/s")
            payloads = captured
        perf_seconds = 25 if quick else 45
        say(f"  pulsar-perf produce: {perf_seconds} s unthrottled with the same payloads ...")
        try:
            perf_value, perf_note = pulsar_perf(settings, scope.topic("pulsar-perf"), payloads, perf_seconds)
            say(f"  pulsar-perf {perf_value:,.0f} msg/s ({perf_note})")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            perf_note = f"pulsar-perf failed: {exc}"
            say(f"  {perf_note}")
    ingest_best = max(ingest_rates)
    ingest_median = statistics.median(ingest_rates)
    result.add(Figure("ingest", "simulator -> ingest -> raw topic (median of rounds)", ingest_median, "msg/s",
                      reference="pulsar-perf produce, same payloads", reference_value=perf_value, ratio_unit="%",
                      note=perf_note, detail={"best": ingest_best}))  # fmt: skip
    result.add(Figure("ingest", "ingest vs the bare Python producer (same client)", ingest_median, "msg/s",
                      reference="Python producer, same records", reference_value=statistics.median(python_rates),
                      ratio_unit="%", detail={"median_of_round_ratios": statistics.median(ratios_python)}))
    result.add(Figure("ingest", "simulator frame generation alone (context)", sim_rate, "msg/s",
                      reference="ingest", reference_value=ingest_median, ratio_unit="x",
                      note="if close to 1x, the simulator limits the ingest figure"))  # fmt: skip
    result.details.update({"rounds": rounds_detail, "pulsar_perf": perf_note})
    return result

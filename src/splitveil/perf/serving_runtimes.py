"""Cloud runtimes side by side: the same load against servers of one bundle, one per ``--runtime``.

All the servers run at once, and the measured runs alternate (each concurrency, each runtime in
turn, for several rounds), so that a machine whose load drifts during the benchmark (other jobs on
its cores) weighs on every runtime alike. Each figure is the median over the rounds; throughput's
lowest and highest are kept too, to show the spread.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from splitveil.serve.process import ServerProcess

#: What one measured run reports (``_Runner.load_with_cpu``'s summary): latency, throughput, server CPU.
Measure = Callable[[ServerProcess, int], dict[str, Any]]
_MEDIANS = ("p50_ms", "p99_ms", "throughput", "server_cpu_us_per_request", "server_cores_busy")


def compare_runtimes(
    bundle: str | Path,
    runtimes: Sequence[str],
    *,
    extra: Sequence[str],
    concurrency: Sequence[int],
    rounds: int,
    measure: Measure,
) -> list[dict[str, Any]]:
    """One row per runtime and concurrency: the medians over ``rounds`` of ``measure`` against a server
    started from ``bundle`` with ``extra`` arguments and ``--runtime RUNTIME``."""
    if rounds < 1:
        raise ValueError(f"comparing runtimes needs at least one round, got {rounds}")
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {(r, c): [] for r in runtimes for c in concurrency}
    with ExitStack() as servers:
        started = {
            runtime: servers.enter_context(ServerProcess(bundle, extra=[*extra, "--runtime", runtime]))
            for runtime in runtimes
        }
        for _ in range(rounds):
            for clients in concurrency:
                for runtime in runtimes:
                    runs[runtime, clients].append(measure(started[runtime], clients))
    return [_row(runtime, clients, runs[runtime, clients]) for runtime in runtimes for clients in concurrency]


def _row(runtime: str, clients: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    throughputs = [run["throughput"] for run in runs]
    return {
        "runtime": runtime,
        "concurrency": clients,
        "rounds": len(runs),
        "requests": sum(run["requests"] for run in runs),
        "errors": sum(run["errors"] for run in runs),
        **{name: statistics.median(run[name] for run in runs) for name in _MEDIANS},
        "throughput_min": min(throughputs),
        "throughput_max": max(throughputs),
    }


def runtimes_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a markdown table: per concurrency, each runtime's figures and their ratio to the first's."""
    runtimes = list(dict.fromkeys(row["runtime"] for row in rows))
    first, others = runtimes[0], runtimes[1:]
    by_key = {(row["runtime"], row["concurrency"]): row for row in rows}
    header = ["clients"]
    header += [f"{r} p50 ms" for r in runtimes] + [f"p50 {r}/{first}" for r in others]
    header += [f"{r} requests/s" for r in runtimes] + [f"requests/s {r}/{first}" for r in others]
    header += [f"{r} server µs/request" for r in runtimes] + ["errors"]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for clients in dict.fromkeys(row["concurrency"] for row in rows):
        line = [by_key[r, clients] for r in runtimes]
        base = line[0]
        cells = [str(clients)]
        cells += [f"{row['p50_ms']:.2f}" for row in line]
        cells += [f"{row['p50_ms'] / base['p50_ms']:.2f}×" for row in line[1:]]
        cells += [
            f"{row['throughput']:,.0f} ({row['throughput_min']:,.0f}–{row['throughput_max']:,.0f})" for row in line
        ]
        cells += [f"{row['throughput'] / base['throughput']:.2f}×" for row in line[1:]]
        cells += [f"{row['server_cpu_us_per_request']:.0f}" for row in line]
        cells += [str(sum(row["errors"] for row in line))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

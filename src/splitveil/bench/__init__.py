"""Benchmarks: a spec expands into model × cut × attack cells; results.jsonl and report.html come out."""

from splitveil.bench.report import build_report
from splitveil.bench.results import ResultRow, read_rows
from splitveil.bench.run import run_bench

__all__ = ["ResultRow", "build_report", "read_rows", "run_bench"]

"""What the report says about cost and provenance: per deployed split, and per run of the directory."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from splitveil.bench.results import ResultRow, one_row_per_split
from splitveil.bench.store import STORE_FILE, ResultStore

SERVING_GLOB = "serving*.json"  # written by `splitveil bench serve --out RUN_DIR/serving-CUT.json`


def cost_table(directory: Path, rows: list[ResultRow]) -> list[dict[str, Any]]:
    """One line per deployed split: accuracy, edge and cloud FLOPs, edge parameters, feature bytes,
    and the float32 round-trip latency where `splitveil bench serve` measured that deployment."""
    latency = serving_latency(directory)
    return [
        {
            "cut": row.cut,
            "defense": row.defense,
            "strength": row.strength,
            "accuracy": row.accuracy,
            "edge_flops": row.edge_flops,
            "cloud_flops": row.cloud_flops,
            "edge_params": row.edge_params,
            "feature_bytes": row.feature_bytes,
            "latency_ms": latency.get((row.cut, row.defense, row.strength)),
        }
        for row in one_row_per_split(rows)
    ]


def serving_latency(directory: Path) -> dict[tuple[str, str, float], float]:
    """``(cut, defense, strength) -> p50 ms`` of the EdgeClient float32 round trip, from serving JSON files."""
    found = {}
    for path in sorted(directory.glob(SERVING_GLOB)):
        try:
            figures = json.loads(path.read_text())
            key = (figures["cut"], figures.get("defense", "none"), float(figures.get("strength", 0.0)))
            found[key] = float(figures["round_trip"]["float32"]["p50_ms"])
        except (ValueError, KeyError, TypeError):
            continue  # not a serving benchmark's file: nothing to show for it
    return found


def run_history(directory: Path) -> list[dict[str, Any]]:
    """The directory's runs (when, which executor, how many cells, wall time, software versions)."""
    if not (directory / STORE_FILE).is_file():
        return []
    with ResultStore(directory) as store:
        runs = store.runs()
    for run in runs:
        run["started"] = datetime.datetime.fromtimestamp(run["started_at"]).strftime("%Y-%m-%d %H:%M")
        run["seconds"] = None if run["finished_at"] is None else run["finished_at"] - run["started_at"]
        run["versions_text"] = ", ".join(f"{name} {version}" for name, version in run["versions"].items())
    return runs

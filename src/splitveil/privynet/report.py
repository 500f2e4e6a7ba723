"""A plan on disk: ``plan.json`` (chosen, verification, candidates), ``candidates.jsonl`` and the spec
(the measurements themselves live in the plan's study, ``study.db``)."""

from __future__ import annotations

import json
from pathlib import Path

from splitveil.privynet.planner import Plan
from splitveil.privynet.spec import PlanSpec

PLAN_FILE = "plan.json"
CANDIDATE_COLUMNS = (
    "layer",
    "channels",
    "selection",
    "edge_flops",
    "edge_params",
    "storage_bytes",
    "feature_bytes",
    "within_budget",
    "accuracy",
    "ssim",
    "feasible",
)


def write_plan(plan: Plan, spec: PlanSpec, out: str | Path) -> Path:
    """Write the plan's files under ``out``; return the path of ``plan.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.resolved.yaml").write_text(spec.to_yaml())
    with (out / "candidates.jsonl").open("w") as handle:
        for candidate in plan.candidates:
            handle.write(json.dumps(candidate.as_dict()) + "\n")
    path = out / PLAN_FILE
    record = {"measurement_key": spec.measurement_key(), "constraints": spec.constraints.model_dump(), **plan.as_dict()}
    path.write_text(json.dumps(record, indent=2))
    return path


def cell(value: object) -> str:
    """A candidate table cell: numbers compact, missing as a dash."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else str(value)

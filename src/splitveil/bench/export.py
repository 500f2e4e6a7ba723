"""From the store to ``results.jsonl``: one :class:`ResultRow` per finished attack cell.

A row joins its attack cell with the deploy cell it attacked and the evaluator. Figures that compare
cells are computed here, from finished rows, so no cell has to wait for another's result to compute
its own: the privacy index (a defended cell against the undefended one of the same cut and attack),
and the output oracle's SSIM with the strongest attack's excess over it (every attack of one split).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, cast

from splitveil.attacks import ATTACKS
from splitveil.bench.cell_results import AttackResult, DeployResult, EvaluatorResult, TrainResult
from splitveil.bench.cells import EVALUATOR_ID, TRAIN_ID, Cell, deploy_id
from splitveil.bench.results import RESULTS_FILE, ResultRow
from splitveil.bench.store import StoredCell
from splitveil.config import ExperimentSpec
from splitveil.metrics import privacy_index

#: What a row takes from its deploy cell (shared by every attack on that split) and from its attack cell.
_FROM_DEPLOY = {"accuracy", "mi", "edge_flops", "cloud_flops", "edge_params", "feature_shape", "feature_bytes",
                "output_privacy"}  # fmt: skip
_FROM_ATTACK = {"ssim", "psnr", "mse", "privacy_accuracy", "targets", "reconstruction_file", "reid_top1",
                "reid_top5", "reid_candidates", "reid_distance"}  # fmt: skip
#: The attack whose SSIM is the floor that leakage is judged above.
OUTPUT_ORACLE = "output-oracle"


def assemble_rows(spec: ExperimentSpec, cells: list[Cell], stored: dict[str, StoredCell]) -> list[ResultRow]:
    """The rows of every attack cell done in ``stored``, in the spec's order."""
    done: dict[str, dict[str, Any]] = {
        cell_id: entry.result
        for cell_id, entry in stored.items()
        if entry.status == "done" and entry.result is not None  # a done cell always has its result
    }
    train = TrainResult.model_validate(done[TRAIN_ID]) if TRAIN_ID in done else None
    depth = {name: index for index, name in enumerate(train.cut_order if train else [])}
    evaluator = EvaluatorResult.model_validate(done[EVALUATOR_ID]) if EVALUATOR_ID in done else None
    rows: list[ResultRow] = []
    for cell in cells:
        if cell.kind != "attack" or cell.id not in done:
            continue
        cut, attack_name = cast(str, cell.cut), cast(str, cell.attack)  # an attack cell names both
        deploy_result = done.get(deploy_id(cut, cell.defense, cell.strength))
        if deploy_result is None:
            continue  # cannot happen for a consistent store: an attack runs after its deploy cell
        deployed = DeployResult.model_validate(deploy_result)
        attack = AttackResult.model_validate(done[cell.id])
        rows.append(
            ResultRow(
                model=spec.model.name,
                dataset=spec.data.name,
                cut=cut,
                cut_index=depth.get(cut, spec.cuts.index(cut) if cut in spec.cuts else 0),
                defense=cell.defense,
                strength=cell.strength,
                attack=attack_name,
                oracle=bool(getattr(ATTACKS.get(attack_name), "oracle", False)),
                seed=spec.seed,
                evaluator_accuracy=evaluator.evaluator_accuracy if evaluator else None,
                seconds=attack.attack_seconds,
                **deployed.model_dump(include=_FROM_DEPLOY),
                **attack.model_dump(include=_FROM_ATTACK),
            )
        )
    if not rows:
        return rows
    assert train is not None  # an attack cell ran, so the train cell it depends on is done
    return _with_oracle_floor(_with_privacy_index(rows, chance=1 / train.num_classes))


def _with_oracle_floor(rows: list[ResultRow]) -> list[ResultRow]:
    """Every row with its split's output-oracle SSIM and the strongest non-oracle attack's excess over it."""
    splits: dict[tuple[str, str, float], list[ResultRow]] = {}
    for row in rows:
        splits.setdefault((row.cut, row.defense, row.strength), []).append(row)
    out = []
    for row in rows:
        group = splits[(row.cut, row.defense, row.strength)]
        floor = next((r.ssim for r in group if r.attack == OUTPUT_ORACLE), None)
        attacks = [r.ssim for r in group if not r.oracle]
        excess = None if floor is None or not attacks else max(attacks) - floor
        out.append(row.model_copy(update={"oracle_ssim": floor, "excess_ssim": excess}))
    return out


def _with_privacy_index(rows: list[ResultRow], *, chance: float) -> list[ResultRow]:
    undefended = {(row.cut, row.attack): row for row in rows if row.defense == "none"}
    out = []
    for row in rows:
        reference = undefended.get((row.cut, row.attack))
        out.append(row.model_copy(update={"privacy_index": _privacy_index(row, reference, chance)}))
    return out


def _privacy_index(row: ResultRow, reference: ResultRow | None, chance: float) -> float | None:
    if row.privacy_accuracy is None:
        return None
    if row.defense == "none":
        return 0.0
    if reference is None or reference.privacy_accuracy is None or reference.accuracy <= chance:
        return None
    return privacy_index(
        pa_defended=row.privacy_accuracy,
        pa_undefended=reference.privacy_accuracy,
        accuracy_defended=row.accuracy,
        accuracy_undefended=reference.accuracy,
        chance=chance,
    )


def write_results(directory: Path, rows: list[ResultRow]) -> Path:
    """Replace ``results.jsonl`` atomically: a reader (or a full disk) never sees half a file."""
    path = directory / RESULTS_FILE
    handle, staging = tempfile.mkstemp(prefix=".results.", suffix=".jsonl", dir=directory)
    try:
        with os.fdopen(handle, "w") as out:
            for row in rows:
                out.write(row.model_dump_json() + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path

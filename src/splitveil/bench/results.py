"""One row per (model, dataset, cut, defense, strength, attack): the bench's unit of result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

RESULTS_FILE = "results.jsonl"


class ResultRow(BaseModel):
    """Privacy, utility and cost of one attack on one cut, side by side."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model: str
    dataset: str
    cut: str
    cut_index: int
    defense: str
    strength: float
    attack: str
    #: An oracle (output-oracle, label-oracle) measures what the answer alone gives away; it is the
    #: floor leakage is judged above, never the strongest attack.
    oracle: bool = False
    seed: int
    accuracy: float
    ssim: float
    psnr: float
    mse: float
    mi: float | None
    privacy_accuracy: float | None
    #: The evaluation classifier's accuracy on the clean targets: the ceiling of privacy_accuracy.
    evaluator_accuracy: float | None = None
    #: Instance re-identification (splitveil.metrics.reidentification): the fraction of targets whose
    #: reconstruction is nearest to its own original among ``reid_candidates`` same-class test images
    #: (chance: 1/N and 5/N), under the attacker's best distance ``reid_distance``.
    reid_top1: float | None = None
    reid_top5: float | None = None
    reid_candidates: int | None = None
    reid_distance: str | None = None
    #: The output oracle's SSIM on this split (what the cloud's answer alone reconstructs), and the
    #: strongest non-oracle attack's SSIM minus it; the same on every row of one deployed split.
    oracle_ssim: float | None = None
    excess_ssim: float | None = None
    #: Privacy index of the defense against this attack (splitveil.metrics.privacy_index; 0 undefended).
    privacy_index: float | None = None
    edge_flops: int
    cloud_flops: int
    edge_params: int
    feature_shape: list[int]
    feature_bytes: int
    targets: int
    seconds: float
    reconstruction_file: str
    #: Output inference per observation ("logits", "features", "both"), when the audit ran it:
    #: label_accuracy, argmax_accuracy, label_chance, salt_accuracy, salt_chance.
    output_privacy: dict[str, dict[str, float | str | None]] | None = None

    @property
    def cell_id(self) -> str:
        return cell_id(self.model, self.dataset, self.cut, self.defense, self.strength, self.attack)


def cell_id(model: str, dataset: str, cut: str, defense: str, strength: float, attack: str) -> str:
    """A file-name-safe identifier of one cell."""
    parts = (model, dataset, cut, defense, f"{strength:g}", attack)
    return "__".join(part.replace("/", "-").replace(" ", "-") for part in parts)


def append_row(directory: Path, row: ResultRow) -> None:
    """Append ``row`` to ``directory/results.jsonl`` and flush, so a killed run keeps finished rows."""
    with (directory / RESULTS_FILE).open("a") as handle:
        handle.write(row.model_dump_json() + "\n")
        handle.flush()


def read_rows(directory: Path) -> list[ResultRow]:
    """All rows of ``directory/results.jsonl`` (a truncated last line from a killed run is skipped)."""
    path = directory / RESULTS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(ResultRow.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValueError):
            continue
    return rows


def one_row_per_split(rows: list[ResultRow]) -> list[ResultRow]:
    """The first row of each deployed split (cut, defense, strength), undefended first within a cut."""
    seen, firsts = set(), []
    for row in sorted(rows, key=lambda r: (r.cut_index, r.defense != "none", r.defense, r.strength)):
        if (row.cut, row.defense, row.strength) not in seen:
            seen.add((row.cut, row.defense, row.strength))
            firsts.append(row)
    return firsts


def as_records(rows: list[ResultRow]) -> list[dict[str, Any]]:
    return [row.model_dump() for row in rows]

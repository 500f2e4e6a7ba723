"""A bench spec expanded into cells with explicit dependencies.

Four kinds of cell, each computed once per run directory:

- ``train``: the target model (cached by the checkpoint cache);
- ``evaluator``: the independent classifier privacy accuracy is scored with (one per run);
- ``deploy``: one cut x defense x strength: the defended split (trained when the defense trains,
  then cached), its accuracy and cost, and the per-split audits that do not depend on the attack
  (mutual information, output privacy);
- ``attack``: one attack on one deployed split, which only loads what its dependencies built.

So a trained model is shared by every attack on it, and nothing is trained twice: the scheduler
runs a cell only once its dependencies are done, and a cell's worker finds their artefacts in the
checkpoint cache. Each cell carries a fingerprint of every setting that shapes its result, so a
run directory can tell a finished cell from one the spec has since changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from splitveil.bench.results import cell_id
from splitveil.checkpoint import CACHE_FORMAT, config_hash
from splitveil.config import AttackSpec, DefenseSpec, ExperimentSpec

CellKind = Literal["train", "evaluator", "deploy", "attack"]
TRAIN_ID = "train"
EVALUATOR_ID = "evaluator"


@dataclass(frozen=True)
class Cell:
    id: str
    kind: CellKind
    fingerprint: str
    deps: tuple[str, ...] = ()
    cut: str | None = None
    defense: str = "none"
    strength: float = 0.0
    attack: str | None = None
    #: Settings the worker needs beyond the spec (kept out of equality: the fingerprint covers them).
    defense_spec: DefenseSpec | None = field(default=None, compare=False, repr=False)
    attack_spec: AttackSpec | None = field(default=None, compare=False, repr=False)


def deploy_id(cut: str, defense: str, strength: float) -> str:
    return f"deploy/{cut}/{defense}/{strength:g}"


def expand_cells(spec: ExperimentSpec, cuts: list[str]) -> list[Cell]:
    """Every cell of ``spec`` at ``cuts``, dependencies before dependants."""
    cells, scored = train_cells(spec), needs_evaluator(spec)
    for cut in cuts:
        for label, defense_spec, strength in spec_variants(spec):
            cells += split_cells(spec, cut, label, defense_spec, strength, evaluator_needed=scored)
    check_unique(cells)
    return cells


def split_cells(
    spec: ExperimentSpec,
    cut: str,
    label: str,
    defense_spec: DefenseSpec | None,
    strength: float,
    *,
    evaluator_needed: bool,
) -> list[Cell]:
    """One deployed split's cells: its deploy cell, then one attack cell per attack of ``spec``.

    ``label`` names the defense in the cells' ids (``none`` for the undefended split); the fingerprints
    hash every setting that shapes the results, the defense's spec included.
    """
    base = _base_settings(spec)
    deploy_settings = {
        **base,
        "cut": cut,
        "defense": None if defense_spec is None else defense_spec.model_dump(mode="json"),
        "strength": strength,
        "audit": spec.audit.model_dump(mode="json"),
    }
    deploy = Cell(
        deploy_id(cut, label, strength),
        "deploy",
        config_hash(deploy_settings),
        deps=(TRAIN_ID,),
        cut=cut,
        defense=label,
        strength=strength,
        defense_spec=defense_spec,
    )
    cells = [deploy]
    for attack in spec.attacks:
        attack_settings = {**deploy_settings, "attack": attack.model_dump(mode="json")}
        identifier = cell_id(spec.model.name, spec.data.name, cut, label, strength, attack.name)
        cells.append(
            Cell(
                f"attack/{identifier}",
                "attack",
                config_hash(attack_settings),
                deps=(deploy.id, *((EVALUATOR_ID,) if evaluator_needed else ())),
                cut=cut,
                defense=label,
                strength=strength,
                attack=attack.name,
                defense_spec=defense_spec,
                attack_spec=attack,
            )
        )
    return cells


def train_cells(spec: ExperimentSpec) -> list[Cell]:
    """The cells every split depends on: the target model's, and the evaluator's when an attack is scored."""
    cells = [Cell(TRAIN_ID, "train", config_hash(_base_settings(spec)))]
    if needs_evaluator(spec):
        cells.append(Cell(EVALUATOR_ID, "evaluator", evaluator_fingerprint(spec)))
    return cells


def needs_evaluator(spec: ExperimentSpec) -> bool:
    """Whether the attacks' reconstructions are scored by the evaluator (which then has a cell of its own)."""
    return spec.audit.evaluator.enabled and bool(spec.attacks)


def evaluator_fingerprint(spec: ExperimentSpec) -> str:
    """The evaluator cell's fingerprint, which is also its checkpoint's cache key."""
    evaluator = spec.audit.evaluator.model_dump(mode="json")
    return config_hash({**_base_settings(spec), "evaluator": evaluator, "format": CACHE_FORMAT})


def spec_variants(spec: ExperimentSpec) -> list[tuple[str, DefenseSpec | None, float]]:
    """``(label, defense spec, strength)`` of every defended variant, the undefended split first.

    A strength of 0 is the identity of every defense, so it is the undefended cell and not repeated.
    """
    variants: list[tuple[str, DefenseSpec | None, float]] = [("none", None, 0.0)]
    for defense in spec.defenses:
        variants += [(defense.display_name, defense, strength) for strength in defense.strengths if strength > 0]
    return variants


def _base_settings(spec: ExperimentSpec) -> dict[str, object]:
    return {
        "seed": spec.seed,
        "data": spec.data.model_dump(mode="json"),
        "model": spec.model.model_dump(mode="json"),
        "train": spec.train.model_dump(mode="json"),
    }


def check_unique(cells: list[Cell]) -> None:
    seen: set[str] = set()
    for cell in cells:
        if cell.id in seen:
            raise ValueError(f"two cells share the id {cell.id!r}; give the spec's entries distinct labels")
        seen.add(cell.id)

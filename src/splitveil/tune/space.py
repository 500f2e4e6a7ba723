"""From the spec's search space to deployments: what a trial samples, and what the device can afford.

A trial first picks one of the affordable *placements* (a cut and a candidate whose edge meets the
FLOPs and bytes budget), then each of that candidate's searched settings. The sampled point is a
plain defense spec at one cut, so the bench's cells deploy and attack it as they would any other.
Its label hashes every sampled value: a trial repeated after a killed run gets the same cells, and
finds the finished ones in the run directory's store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from splitveil.checkpoint import config_hash
from splitveil.config import DefenseSpec
from splitveil.errors import ConfigError
from splitveil.tune.spec import Candidate, Choice, Range, TuneSpec

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from splitveil.split import CostProfile

#: The parameter that picks a placement (``cut/candidate``); every other is ``candidate.path``.
PLACEMENT = "placement"


@dataclass(frozen=True)
class Point:
    """One deployment the study measures: a cut and a fully specified defense."""

    cut: str
    candidate: str
    defense: DefenseSpec

    @property
    def label(self) -> str:
        return self.defense.display_name

    @property
    def strength(self) -> float:
        return self.defense.strengths[0]

    def describe(self) -> str:
        """The defense as a reader needs it: name, strength and the settings that differ from the defaults.

        A stack reads ``stack 0.633 (layers=siftfunnel (funnel_channels=4) + bounded-noise 1.33, epochs=3)``.
        """
        settings = self.defense.model_dump(mode="json", exclude_defaults=True, exclude={"name", "label", "strengths"})
        return _describe_defense({"name": self.defense.name, "strength": self.strength, **settings})


def _describe_defense(settings: dict[str, Any]) -> str:
    """``name strength (key=value, ...)``, with ``options`` flattened into the other settings."""
    settings = dict(settings)
    head = str(settings.pop("name"))
    if "strength" in settings:
        head += f" {_describe_value(settings.pop('strength'))}"
    settings.update(settings.pop("options", None) or {})
    if not settings:
        return head
    return f"{head} ({', '.join(f'{key}={_describe_value(value)}' for key, value in settings.items())})"


def _describe_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        if "name" in value:
            return _describe_defense(value)
        return ", ".join(f"{key}={_describe_value(item)}" for key, item in value.items())
    if isinstance(value, list):
        return " + ".join(_describe_value(item) for item in value)
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class Placement:
    """A cut and a candidate, with what the candidate's edge costs there (its lowest settings)."""

    cut: str
    candidate: Candidate
    edge_flops: int
    feature_bytes: int

    @property
    def key(self) -> str:
        return f"{self.cut}/{self.candidate.display_name}"

    def overshoot(self, max_edge_flops: int | None, max_feature_bytes: int | None) -> float:
        """How far over the budget this placement is, as the larger ratio to a limit (<= 1: it fits)."""
        ratios = [0.0]
        if max_edge_flops:
            ratios.append(self.edge_flops / max_edge_flops)
        if max_feature_bytes:
            ratios.append(self.feature_bytes / max_feature_bytes)
        return max(ratios)


def sample_point(trial: optuna.trial.BaseTrial, placements: list[Placement]) -> Point:
    """The deployment ``trial`` samples among ``placements`` (the affordable ones)."""
    by_key = {placement.key: placement for placement in placements}
    chosen = by_key[trial.suggest_categorical(PLACEMENT, list(by_key))]
    candidate = chosen.candidate
    values = {
        path: _suggest(trial, f"{candidate.display_name}.{path}", dist) for path, dist in candidate.search.items()
    }
    return build_point(chosen.cut, candidate, values)


def build_point(cut: str, candidate: Candidate, values: dict[str, Any]) -> Point:
    """The point of ``candidate`` at ``cut`` with ``values`` set; its label hashes all of them."""
    digest = config_hash({"cut": cut, "candidate": candidate.fixed(), "values": values})[:8]
    label = f"{candidate.display_name}-{digest}"
    return Point(cut=cut, candidate=candidate.display_name, defense=candidate.defense_spec(values, label=label))


def _suggest(trial: optuna.trial.BaseTrial, name: str, distribution: Choice | Range) -> Any:
    if isinstance(distribution, Choice):
        return trial.suggest_categorical(name, distribution.choices)
    if distribution.integer:
        return trial.suggest_int(name, int(distribution.low), int(distribution.high), log=distribution.log)
    return trial.suggest_float(name, float(distribution.low), float(distribution.high), log=distribution.log)


def placements(spec: TuneSpec, base: nn.Module, input_shape: tuple[int, ...]) -> list[Placement]:
    """Every (cut, candidate), costed on the trained model: the candidate applied at its lowest settings.

    Structure decides the cost (a funnel narrows the feature, PATROL prunes the edge), and a defense
    applies its structure without training, so this takes seconds. A searched option that changes
    structure is costed at its first choice here; every trial's measured cost is checked again.
    """
    from splitveil.defenses import create_defense
    from splitveil.split import cut

    found = []
    for cut_name in spec.search_cuts:
        for candidate in spec.tune.candidates:
            defense_spec = build_point(cut_name, candidate, candidate.lowest()).defense
            defense = create_defense(defense_spec.name, strength=defense_spec.strengths[0], **defense_spec.options)
            profile: CostProfile = defense.apply(cut(base, at=cut_name)).profile(input_shape)
            found.append(Placement(cut_name, candidate, profile.edge_flops, profile.feature_bytes))
    return found


def affordable(spec: TuneSpec, every: list[Placement]) -> list[Placement]:
    """The placements within the FLOPs and bytes budget; none is a one-line error naming the closest."""
    budget = spec.tune.budget
    fits = [p for p in every if p.overshoot(budget.max_edge_flops, budget.max_feature_bytes) <= 1]
    if fits:
        return fits
    closest = min(every, key=lambda p: p.overshoot(budget.max_edge_flops, budget.max_feature_bytes))
    limits = []
    if budget.max_edge_flops:
        limits.append(f"max_edge_flops={budget.max_edge_flops:,}")
    if budget.max_feature_bytes:
        limits.append(f"max_feature_bytes={budget.max_feature_bytes:,}")
    raise ConfigError(
        f"no cut and candidate fits the device budget ({', '.join(limits)}): the closest is {closest.key} with "
        f"{closest.edge_flops:,} edge FLOPs and {closest.feature_bytes:,} feature bytes per image; raise "
        "tune.budget or add a shallower cut or a narrowing candidate (a funnel, PATROL's pruning)"
    )

"""The ``tune:`` section of a spec: the search space, the budget and how the chosen points are re-measured.

A tuning spec is an experiment spec (data, model, training, audit) whose ``attacks`` are the cheap
attackers that guide the search, plus::

    tune:
      trials: 24
      cuts: [relu22]                       # default: the spec's cuts
      budget: {max_accuracy_drop: 3.0, max_edge_flops: 2.0e6, max_feature_bytes: 8192}
      candidates:                          # what may be deployed: a defense (or stack) with fixed settings ...
        - name: bounded-noise
          strength: 1.0
          epochs: 3
          search:                          # ... and the settings the study searches (dotted paths)
            strength: {low: 0.2, high: 3.0, log: true}
            options.law: {choices: [gaussian, laplace]}
            epochs: {choices: [3, 6]}
      verify:
        attacks: [...]                     # default: the full suite of configs/defenses-relu22.yaml
        attack_seeds: [1001, 1002]         # fresh attackers on the same deployed splits

A candidate's fixed keys are a defense spec's (``docs/defenses.md``), with one ``strength`` instead
of a list. A search path names one of them (``strength``, ``epochs``, ``lr``, ``warmup_epochs``,
``distill``, ...) or an option (``options.law``, ``options.layers.1.strength`` for a stack's
second layer). Every fixed value and every end of every range is checked when the spec loads.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from splitveil.config import AttackSpec, DefenseSpec, ExperimentSpec, _Strict, describe_validation_error
from splitveil.errors import ConfigError

Objective = Literal["accuracy", "reid_top1", "excess_ssim", "max_ssim"]
#: The attacks every cell of configs/defenses-relu22.yaml faces: the default re-measurement suite.
FULL_SUITE: tuple[dict[str, Any], ...] = (
    {"name": "rmle"},
    {"name": "inverse-network", "options": {"epochs": 10, "precision": "bf16"}},
    {"name": "joint-inverse-network", "options": {"epochs": 10, "precision": "bf16"}},
    {"name": "output-oracle", "options": {"epochs": 10, "precision": "bf16"}},
    {"name": "label-oracle"},
    {"name": "prior-image"},
)


class Choice(_Strict):
    """One of a list of values (categorical)."""

    choices: list[Any] = Field(min_length=1)

    def ends(self) -> list[Any]:
        return list(self.choices)

    def probes(self) -> list[Any]:
        return self.ends()


class Range(_Strict):
    """A number in ``[low, high]``: an integer when both ends are integers, on a log scale when ``log``."""

    low: float | int
    high: float | int
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"a range needs low < high, got low={self.low} and high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    def ends(self) -> list[Any]:
        return [self.low, self.high]

    def probes(self) -> list[Any]:
        """The ends, and for a float range a value inside it: ``{low: 1.0, high: 6}`` on an integer
        setting has integral ends but samples 2.5, so the check at load must try a fraction too."""
        if self.integer:
            return self.ends()
        return [*self.ends(), self.low + 0.377 * (self.high - self.low)]


class Candidate(_Strict):
    """A defense the study may deploy: fixed defense-spec settings (extra keys) and the searched ones."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    label: str | None = None
    strength: float = Field(default=1.0, gt=0, description="the strength when `search` does not vary it")
    search: dict[str, Choice | Range] = Field(default_factory=dict)

    @property
    def display_name(self) -> str:
        return self.label or self.name

    def fixed(self) -> dict[str, Any]:
        """The candidate's settings as a defense spec's mapping (``strength`` kept single)."""
        settings = {"name": self.name, "strength": self.strength, **(self.model_extra or {})}
        return copy.deepcopy(settings)

    def defense_spec(self, values: dict[str, Any], *, label: str) -> DefenseSpec:
        """The defense spec of this candidate with ``values`` (search path -> value) set."""
        settings = self.fixed()
        for path, value in values.items():
            set_path(settings, path, value)
        strength = settings.pop("strength")
        if not isinstance(strength, int | float) or strength <= 0:
            raise ConfigError(f"candidate {self.display_name!r}: strength must be a number > 0, got {strength!r}")
        try:
            return DefenseSpec(**settings, strengths=[float(strength)], label=label)
        except ValidationError as exc:
            raise ConfigError(
                f"candidate {self.display_name!r}: {describe_validation_error(exc, DefenseSpec)}"
            ) from None

    def lowest(self) -> dict[str, Any]:
        """Each searched path at its first choice or its low end (the pre-flight's representative)."""
        return {path: distribution.ends()[0] for path, distribution in self.search.items()}

    @field_validator("search", mode="before")
    @classmethod
    def _distributions(cls, search: Any) -> Any:
        """Each entry as a Choice or a Range, told apart by its keys, so that a wrong entry is one plain line."""
        if not isinstance(search, dict):
            return search
        shapes = "{choices: [...]} or {low: ..., high: ..., log: true|false}"
        parsed: dict[str, Choice | Range] = {}
        for path, entry in search.items():
            keys = set(entry) if isinstance(entry, dict) else set()
            try:
                if keys and keys <= {"choices"}:
                    parsed[path] = Choice(**entry)
                elif keys and keys <= {"low", "high", "log"}:
                    parsed[path] = Range(**entry)
                else:
                    raise ValueError(f"got {entry!r}")
            except (ValueError, ValidationError) as exc:
                reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                reason = reason.removeprefix("Value error, ")
                raise ValueError(f"search entry {path!r} is {shapes}: {reason}") from None
        return parsed

    @model_validator(mode="after")
    def _every_end_builds(self) -> Candidate:
        extra = self.model_extra or {}
        if "strengths" in extra:
            raise ValueError(
                f"candidate {self.display_name!r}: give `strength` (one value) or search it, not `strengths`"
            )
        if "label" in extra:
            raise ValueError("`label` is set once per candidate")
        self.defense_spec(self.lowest(), label="check")
        for path, distribution in self.search.items():
            for value in distribution.probes():  # each end (and a float inside) alone, the others at their lowest
                try:
                    self.defense_spec({**self.lowest(), path: value}, label="check")
                except ConfigError as exc:
                    if value in distribution.ends():
                        raise
                    raise ConfigError(
                        f"{exc}; search {path!r} samples fractions: give a whole-number setting integer ends "
                        f"({{low: {int(distribution.ends()[0])}, high: {int(distribution.ends()[1])}}})"
                    ) from None
        return self


class Budget(_Strict):
    """What a deployment may cost: accuracy (against the undefended model), device compute, bytes sent."""

    max_accuracy_drop: float = Field(
        default=3.0, ge=0, description="points of test accuracy below the undefended model"
    )
    max_edge_flops: int | None = Field(default=None, gt=0, description="FLOPs the device runs per image")
    max_feature_bytes: int | None = Field(default=None, gt=0, description="bytes the device sends per image")


class VerifySpec(_Strict):
    """How the Pareto points are re-measured: the full attack suite, with fresh attacker seeds."""

    attacks: list[AttackSpec] = Field(default_factory=lambda: [AttackSpec(**attack) for attack in FULL_SUITE])
    attack_seeds: list[int] = Field(default_factory=lambda: [1001, 1002], min_length=1)
    points: int = Field(default=6, ge=1, description="at most this many Pareto points are re-measured")
    targets: int | None = Field(
        default=None,
        ge=1,
        description="test images each attack reconstructs when re-measuring (default: audit.targets); with 64, "
        "one image moves reid_top1 by 0.016, so seeds agree to 0.02 only with several hundred",
    )


class TuneSettings(_Strict):
    trials: int = Field(default=20, ge=1)
    parallel: int | None = Field(
        default=None, ge=1, description="trials in flight at once (default: the executor's slots)"
    )
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    objectives: list[Objective] = Field(
        default_factory=lambda: list[Objective](["accuracy", "reid_top1", "excess_ssim"]), min_length=2
    )
    cuts: list[str] = Field(default_factory=list, description="cuts the study may choose (default: the spec's)")
    candidates: list[Candidate] = Field(min_length=1)
    budget: Budget = Field(default_factory=Budget)
    verify: VerifySpec = Field(default_factory=VerifySpec)
    baselines: list[DefenseSpec] = Field(
        default_factory=list,
        description="deployments you already know (a hand-tuned grid, today's defense), written as a bench "
        "spec's `defenses`: each strength is measured at every cut beside the study, by the same attackers, and "
        "joins the front, so the recommendation is never worse than them; the report says which the search beat",
    )

    @field_validator("objectives")
    @classmethod
    def _accuracy_first(cls, objectives: list[Objective]) -> list[Objective]:
        if objectives[0] != "accuracy" or len(set(objectives)) != len(objectives):
            raise ValueError(f"objectives start with accuracy and name each measure once, got {objectives}")
        return objectives

    @model_validator(mode="after")
    def _distinct_candidates(self) -> TuneSettings:
        labels = [candidate.display_name for candidate in self.candidates]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"candidates {repeated} appear twice; give each a distinct `label`")
        return self


class TuneSpec(ExperimentSpec):
    """An experiment spec with a ``tune`` section; its ``attacks`` guide the search."""

    tune: TuneSettings

    @model_validator(mode="after")
    def _searchable(self) -> TuneSpec:
        if self.defenses:
            raise ValueError("a tuning spec lists what it may deploy under tune.candidates, not `defenses`")
        if not (self.tune.cuts or self.cuts):
            raise ValueError("name the cuts the study may choose: tune.cuts (or the spec's cuts)")
        for where, attacks in (("attacks", self.attacks), ("tune.verify.attacks", self.tune.verify.attacks)):
            _check_measures(where, attacks, self.tune.objectives, reid=self.audit.reid.enabled)
        if self.tune.baselines:
            try:  # the bench's own checks of a defense list: known names, options, distinct labels
                self.experiment(defenses=[baseline.model_dump(mode="json") for baseline in self.tune.baselines])
            except ValidationError as error:
                problems = "; ".join(str(problem["msg"]) for problem in error.errors())
                raise ValueError(f"tune.baselines: {problems}") from None
        return self

    @property
    def search_cuts(self) -> list[str]:
        return self.tune.cuts or self.cuts

    def experiment(self, **changes: Any) -> ExperimentSpec:
        """The experiment part (what a bench run directory records), with ``changes`` applied."""
        settings = self.model_dump(mode="json", exclude={"tune"})
        settings.update({"cuts": self.search_cuts, **changes})
        return ExperimentSpec.model_validate(settings)


def _check_measures(where: str, attacks: list[AttackSpec], objectives: list[Objective], *, reid: bool) -> None:
    from splitveil.attacks import ATTACKS

    names = [attack.name for attack in attacks]
    if not any(not getattr(ATTACKS.get(name), "oracle", False) for name in names):
        raise ValueError(f"{where} needs at least one attack that is not an oracle: the strongest one judges a trial")
    if "excess_ssim" in objectives and "output-oracle" not in names:
        raise ValueError(f"the excess_ssim objective needs the output-oracle among {where}")
    if "reid_top1" in objectives and not reid:
        raise ValueError("the reid_top1 objective needs audit.reid.enabled")


def set_path(settings: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at the dotted ``path`` of ``settings`` (integers index lists), creating mappings as needed.

    Example:
        >>> settings = {"options": {"layers": [{"name": "a"}, {"name": "b"}]}}
        >>> set_path(settings, "options.layers.1.strength", 0.5)
        >>> settings["options"]["layers"][1]
        {'name': 'b', 'strength': 0.5}
    """
    *parents, leaf = path.split(".")
    node: Any = settings
    for part in parents:
        if isinstance(node, list):
            node = node[_index(node, part, path)]
        else:
            node = node.setdefault(part, {})
    if isinstance(node, list):
        node[_index(node, leaf, path)] = value
    elif isinstance(node, dict):
        node[leaf] = value
    else:
        raise ConfigError(f"search path {path!r} goes through {node!r}, which holds no settings")


def _index(items: list[Any], part: str, path: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"search path {path!r}: {part!r} is not an index of a list of {len(items)}")
    return int(part)


def load_tune_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> TuneSpec:
    """Read and validate a tuning spec (a YAML experiment spec with a ``tune`` section); one-line errors."""
    from splitveil.config import apply_overrides, read_spec_file

    raw = apply_overrides(read_spec_file(path), overrides or {})
    if "tune" not in raw:
        raise ConfigError(f"{path} has no `tune` section; see configs/tune-relu22.yaml and docs/tune.md")
    try:
        return TuneSpec.model_validate(raw, context={"trust_plugins": True, "source": str(path)})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc, TuneSpec)}") from None

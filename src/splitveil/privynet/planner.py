"""PrivyNet's planner: the topology with the best accuracy under privacy, compute and storage limits.

Hierarchical, as the paper proposes [abstract; the steps are ours]:

1. every (layer, channel count) is costed analytically — edge FLOPs, parameters, storage — and
   those over a compute or storage limit are recorded and not trained;
2. each remaining one is trained (the cloud NN on the frozen local NN's features) and attacked
   (the planner's inverse network, adaptive: it queries the deployed local NN);
3. the channel subset is refined: random, and attacker-guided (drop the channels the attacker
   relies on most), each a candidate of its own;
4. the most accurate candidate whose SSIM is within the limit less ``privacy_margin`` is chosen
   and **re-measured**: rebuilt, its cloud retrained, and attacked by a freshly trained
   ``verify_attack`` with another seed through the bench's attack runner; the plan says whether
   the choice still satisfies every constraint.

Steps 2–3 are the trials of a study on the search engine `splitveil tune` uses
(:mod:`splitveil.tune.engine`), one trial per topology within budget, so a plan resumes after a kill
and re-judges its stored measurements when only its limits change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from splitveil.audit import AttackOutcome, run_attack
from splitveil.checkpoint import CheckpointCache
from splitveil.config import AttackSpec, ExperimentSpec
from splitveil.data import DatasetSplits, ImageSet, load_dataset
from splitveil.errors import ConfigError
from splitveil.experiment import TrainedModel, build_model, train_or_load
from splitveil.privynet.channels import attacker_guided_channels, channel_usefulness, random_channels
from splitveil.privynet.local import local_network, local_width, privynet_split
from splitveil.privynet.spec import PlanConstraints, PlanSpec
from splitveil.split import SplitModel, cut
from splitveil.train import evaluate, fit
from splitveil.tune import engine

if TYPE_CHECKING:
    import optuna

FLOAT32_BYTES = 4
#: The plan's study in ``OUT/study.db``, and its one parameter: a topology's :attr:`Candidate.key`.
PLAN_STUDY = "plan"
TOPOLOGY = "topology"


@dataclass
class Candidate:
    """One topology and what it measured (accuracy and SSIM stay None when it was over budget)."""

    layer: str
    channels: int
    selection: str
    keep: list[int]
    edge_flops: int
    edge_params: int
    storage_bytes: int
    feature_bytes: int
    within_budget: bool
    accuracy: float | None = None
    ssim: float | None = None
    psnr: float | None = None
    feasible: bool = False

    @property
    def key(self) -> str:
        """``layer/channels/selection``: what identifies the topology in the study."""
        return f"{self.layer}/{self.channels}/{self.selection}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """Every candidate measured, the chosen one, and its re-measurement."""

    candidates: list[Candidate]
    chosen: Candidate | None
    verification: dict[str, Any] | None = None
    public_accuracy: float | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "chosen": None if self.chosen is None else self.chosen.as_dict(),
            "verification": self.verification,
            "public_accuracy": self.public_accuracy,
            "candidates": [candidate.as_dict() for candidate in self.candidates],
            "notes": self.notes,
        }


def within_budget(constraints: PlanConstraints, *, edge_flops: int, edge_params: int, storage_bytes: int) -> bool:
    """Whether the device-side costs meet every compute and storage limit that is set."""
    limits = (
        (constraints.max_edge_flops, edge_flops),
        (constraints.max_edge_params, edge_params),
        (constraints.max_storage_bytes, storage_bytes),
    )
    return all(limit is None or value <= limit for limit, value in limits)


def meets_privacy(constraints: PlanConstraints, ssim: float | None, *, margin: float = 0.0) -> bool:
    """Whether ``ssim`` is within the privacy limit (less ``margin``); no limit accepts any measured SSIM."""
    return ssim is not None and (constraints.max_ssim is None or ssim <= constraints.max_ssim - margin)


def pretrain_public(
    spec: PlanSpec, *, cache: CheckpointCache | None, progress: bool, data: DatasetSplits | None = None
) -> TrainedModel:
    """The base model trained on the public data (cached like every model)."""
    public_spec = ExperimentSpec(
        name=f"{spec.name}-public", seed=spec.seed, data=spec.public, model=spec.model, train=spec.public_train
    )
    return train_or_load(public_spec, cache=cache, progress=progress, data=data)


def plan(
    spec: PlanSpec,
    *,
    out: str | Path | None = None,
    cache: CheckpointCache | None = None,
    progress: bool = True,
    on_candidate: Callable[[Candidate], None] | None = None,
    report: Callable[[str], object] | None = None,
) -> Plan:
    """Search ``spec``'s topologies; see the module docstring for the steps.

    The search runs on the engine `splitveil tune` uses (:mod:`splitveil.tune.engine`): one trial
    per topology within the budget, stored in ``out/study.db`` (in memory without ``out``). So a
    killed plan resumes without training again what it finished, and a plan whose limits changed
    (the constraints and ``privacy_margin`` are not part of the study's identity) judges the stored
    measurements by the new limits, training only topologies that have come within budget.
    ``on_candidate`` sees each candidate as it is costed (over budget), found in the study, or measured;
    ``report`` gets a line on what a resumed study already holds.
    """
    out = None if out is None else Path(out)
    identity = spec.measurement_key()
    engine.refuse_another_search(
        out,
        name=PLAN_STUDY,
        identity=identity,
        advice="plan with a new --out directory (only the constraints, privacy_margin and verify_attack may change)",
    )
    data = load_dataset(spec.data.name, seed=spec.seed, **spec.data.loader_options())
    public_data = load_dataset(spec.public.name, seed=spec.seed, **spec.public.loader_options())
    public = pretrain_public(spec, cache=cache, progress=progress, data=public_data)
    if public.data.input_shape != data.input_shape:
        raise ConfigError(
            f"the public data's images are {public.data.input_shape} but the target's are {data.input_shape}; "
            "choose public data of the same shape"
        )
    for layer in spec.layers:
        cut(public.model, at=layer)  # an unknown layer fails before anything is trained
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    search = _Search(spec, data, public.model, data.test.take(spec.targets), progress)
    costed = search.topologies()
    study = _open_plan_study(spec, out, identity)
    interrupted = engine.requeue_interrupted(study)
    stored = _stored_candidates(study)
    if report is not None and (stored or interrupted):
        report(
            f"resuming {out}: reusing {len(stored)} measured topologies (judged by this plan's limits, not trained "
            f"again); {interrupted} interrupted one(s) trained again"
        )
    notify = on_candidate or (lambda candidate: None)
    for candidate in costed:
        if not candidate.within_budget or candidate.key in stored:
            notify(search.judge(stored.get(candidate.key, candidate)))
    from optuna.trial import TrialState

    waiting_trials = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    # A waiting trial (an interrupted one asked again) holds its topology as an enqueued, fixed parameter.
    queued = {str(trial.system_attrs.get("fixed_params", {}).get(TOPOLOGY)) for trial in waiting_trials}
    for candidate in costed:
        if candidate.within_budget and candidate.key not in stored and candidate.key not in queued:
            study.enqueue_trial({TOPOLOGY: candidate.key})
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))  # with those just enqueued
    by_key = {candidate.key: candidate for candidate in costed}

    def evaluate(batch: list[tuple[optuna.Trial, Candidate]]) -> None:
        for trial, candidate in batch:
            measured = search.measure(candidate)
            trial.set_user_attr("candidate", measured.as_dict())
            values = [measured.accuracy, measured.ssim]
            if all(value is not None and math.isfinite(value) for value in values):
                study.tell(trial, cast(list[float], values))
            else:
                engine.fail_trial(study, trial, f"accuracy or SSIM not finite: {values}")
            notify(measured)

    engine.run_trials(
        study,
        trials=engine.counted_trials(study) + waiting,
        parallel=1,
        sample=lambda trial: by_key[str(trial.suggest_categorical(TOPOLOGY, list(by_key)))],
        evaluate=evaluate,
        refused=lambda trial, exc: None,  # a topology key is never refused
    )
    stored = _stored_candidates(study)
    candidates = [search.judge(stored.get(candidate.key, candidate)) for candidate in costed]
    result = Plan(candidates=candidates, chosen=None, public_accuracy=public.test_accuracy)
    feasible = [c for c in candidates if c.feasible]
    if not feasible:
        result.notes.append("no candidate satisfies every constraint; loosen a limit or add layers/channels")
        return result
    # A feasible candidate was measured: its accuracy and SSIM are set.
    result.chosen = max(feasible, key=lambda c: (cast(float, c.accuracy), -cast(float, c.ssim)))
    result.verification = _verification(study, search, result.chosen)
    return result


def _open_plan_study(spec: PlanSpec, out: Path | None, identity: str) -> optuna.Study:
    import optuna

    # Every trial is enqueued with its topology; the sampler would only draw if asked for more.
    return engine.open_study(
        out,
        name=PLAN_STUDY,
        directions=["maximize", "minimize"],  # accuracy, the attack's SSIM
        identity=identity,
        sampler=lambda seed: optuna.samplers.RandomSampler(seed=seed),
        seed=spec.seed,
    )


def _stored_candidates(study: optuna.Study) -> dict[str, Candidate]:
    """The measured candidate of every finished trial, by topology."""
    from optuna.trial import TrialState

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    candidates = (Candidate(**trial.user_attrs["candidate"]) for trial in finished)
    return {candidate.key: candidate for candidate in candidates}


def _verification(study: optuna.Study, search: _Search, chosen: Candidate) -> dict[str, Any]:
    """``chosen`` re-measured by the fresh attacker: stored in the study, so a plan whose limits changed
    but whose choice did not re-measures nothing; its verdicts are re-derived from this plan's limits."""
    from splitveil.checkpoint import config_hash

    attack = search.spec.verify_attack.model_dump(mode="json")
    key = f"verified:{chosen.key}:{config_hash(attack)}"
    verification = study.user_attrs.get(key)
    if verification is None:
        verification = search.verify(chosen)
        study.set_user_attr(key, verification)
    return search.judge_verification(verification)


class _Search:
    """The state one plan shares across candidates: data, the public model, the attacker's targets."""

    def __init__(
        self, spec: PlanSpec, data: DatasetSplits, public_model: torch.nn.Module, targets: ImageSet, progress: bool
    ) -> None:
        self.spec, self.data, self.public_model = spec, data, public_model
        self.targets, self.progress = targets, progress
        self._usefulness_by_layer: dict[str, torch.Tensor] = {}

    def topologies(self) -> list[Candidate]:
        """Every (layer, channel count, selection) of the spec, costed and judged against the budget.

        Costs depend on the count alone, so the channels themselves are chosen when a candidate is
        measured (an attacker-guided choice trains a decoder): ``keep`` is empty until then.
        """
        candidates = []
        for layer in self.spec.layers:
            width = local_width(self.public_model, layer)
            for count in sorted({min(count, width) for count in self.spec.channels}):
                costs = self.costs(layer, list(range(count)))
                for selection in self.spec.selections:
                    if selection == "attacker" and count == width and "random" in self.spec.selections:
                        continue  # keeping every channel: the same topology as the random one
                    costed = Candidate(layer, count, selection, keep=[], within_budget=False, **costs)
                    candidates.append(self.judge(costed))
        return candidates

    def costs(self, layer: str, keep: list[int]) -> dict[str, Any]:
        """The device-side costs of ``layer`` keeping ``keep`` (the budget verdict is :meth:`judge`'s)."""
        profile = self.build(layer, keep).profile(self.data.input_shape)
        return {
            "edge_flops": profile.edge_flops,
            "edge_params": profile.edge_params,
            "storage_bytes": profile.edge_params * FLOAT32_BYTES,
            "feature_bytes": profile.feature_bytes,
        }

    def channels(self, candidate: Candidate) -> list[int]:
        width = local_width(self.public_model, candidate.layer)
        if candidate.selection == "random":
            return random_channels(width, candidate.channels, seed=self.spec.seed)
        if candidate.layer not in self._usefulness_by_layer:
            self._usefulness_by_layer[candidate.layer] = self._usefulness(candidate.layer, width)
        return attacker_guided_channels(self._usefulness_by_layer[candidate.layer], candidate.channels)

    def _usefulness(self, layer: str, width: int) -> torch.Tensor:
        # The defender plays the attacker on its own auxiliary data: decoder on one part, scores on the rest.
        aux = self.data.aux
        held_out = max(1, len(aux) // 5)
        train = ImageSet(images=aux.images[held_out:], labels=aux.labels[held_out:])
        score = ImageSet(images=aux.images[:held_out], labels=aux.labels[:held_out])
        local = local_network(self.public_model, layer=layer, keep=list(range(width)))
        return channel_usefulness(
            local, train, score, epochs=self.spec.selection_epochs, seed=self.spec.seed, progress=self.progress
        )

    def judge(self, candidate: Candidate) -> Candidate:
        """``candidate`` with its budget and privacy verdicts derived from this plan's constraints."""
        budget = within_budget(
            self.spec.constraints,
            edge_flops=candidate.edge_flops,
            edge_params=candidate.edge_params,
            storage_bytes=candidate.storage_bytes,
        )
        private = meets_privacy(self.spec.constraints, candidate.ssim, margin=self.spec.privacy_margin)
        return replace(candidate, within_budget=budget, feasible=budget and private)

    def judge_verification(self, verification: dict[str, Any]) -> dict[str, Any]:
        """A stored re-measurement with its verdicts derived from this plan's constraints."""
        costs = {key: verification[key] for key in ("edge_flops", "edge_params", "storage_bytes")}
        return {
            **verification,
            "within_budget": within_budget(self.spec.constraints, **costs),
            "meets_privacy": meets_privacy(self.spec.constraints, verification["ssim"]),
        }

    def build(self, layer: str, keep: list[int]) -> SplitModel:
        fresh = build_model(ExperimentSpec(seed=self.spec.seed, model=self.spec.model), self.data)
        return privynet_split(self.public_model, fresh, layer=layer, keep=keep)

    def measure(self, costed: Candidate) -> Candidate:
        """Choose ``costed``'s channels, train its cloud NN and attack it."""
        keep = self.channels(costed)
        split = self.build(costed.layer, keep)
        accuracy, outcome = self.train_and_attack(split, self.spec.attack, seed=self.spec.seed)
        measured = replace(costed, keep=keep, accuracy=accuracy, ssim=outcome.ssim, psnr=outcome.psnr)
        return self.judge(measured)

    def train_and_attack(self, split: SplitModel, attack: AttackSpec, *, seed: int) -> tuple[float, AttackOutcome]:
        """Train the cloud NN, then attack the deployed split: ``(test accuracy, the attack's outcome)``."""
        fit(split, self.data, self.spec.cloud_train, seed=self.spec.seed, progress=self.progress)
        split.eval()
        accuracy = evaluate(split, self.data.test)["accuracy"]
        outcome = run_attack(
            split, attack, data=self.data, targets=self.targets, evaluator=None, seed=seed, progress=self.progress
        )
        return accuracy, outcome

    def verify(self, chosen: Candidate) -> dict[str, Any]:
        """Rebuild and retrain the chosen topology, attack it afresh (``verify_attack``, seed + 1)."""
        split = self.build(chosen.layer, chosen.keep)
        accuracy, outcome = self.train_and_attack(split, self.spec.verify_attack, seed=self.spec.seed + 1)
        profile = split.profile(self.data.input_shape)
        return {  # the verdicts are added by judge_verification
            "attack": self.spec.verify_attack.model_dump(mode="json"),
            "accuracy": accuracy,
            "ssim": outcome.ssim,
            "psnr": outcome.psnr,
            "edge_flops": profile.edge_flops,
            "edge_params": profile.edge_params,
            "storage_bytes": profile.edge_params * FLOAT32_BYTES,
        }

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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

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

FLOAT32_BYTES = 4


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
    cache: CheckpointCache | None = None,
    progress: bool = True,
    on_candidate: Callable[[Candidate], None] | None = None,
    measured: Sequence[Candidate] = (),
) -> Plan:
    """Search ``spec``'s topologies; see the module docstring for the steps.

    ``measured``: candidates an earlier plan with the same :meth:`PlanSpec.measurement_key` trained
    and attacked; they are judged against this plan's constraints without being trained again, so a
    changed limit re-plans in the time of the re-measurement alone.
    """
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
    targets = data.test.take(spec.targets)
    search = _Search(spec, data, public.model, targets, progress, measured)
    candidates = []
    for layer in spec.layers:
        for candidate in search.layer_candidates(layer):
            candidates.append(candidate)
            if on_candidate is not None:
                on_candidate(candidate)
    result = Plan(candidates=candidates, chosen=None, public_accuracy=public.test_accuracy)
    feasible = [c for c in candidates if c.feasible]
    if not feasible:
        result.notes.append("no candidate satisfies every constraint; loosen a limit or add layers/channels")
        return result
    # A feasible candidate was measured: its accuracy and SSIM are set.
    result.chosen = max(feasible, key=lambda c: (cast(float, c.accuracy), -cast(float, c.ssim)))
    result.verification = search.verify(result.chosen)
    return result


class _Search:
    """The state one plan shares across candidates: data, the public model, the attacker's targets."""

    def __init__(
        self,
        spec: PlanSpec,
        data: DatasetSplits,
        public_model: torch.nn.Module,
        targets: ImageSet,
        progress: bool,
        measured: Sequence[Candidate] = (),
    ) -> None:
        self.spec, self.data, self.public_model = spec, data, public_model
        self.targets, self.progress = targets, progress
        self.measured = {(c.layer, c.channels, c.selection): c for c in measured if c.accuracy is not None}

    def layer_candidates(self, layer: str) -> list[Candidate]:
        width = local_width(self.public_model, layer)
        usefulness: torch.Tensor | None = None
        candidates = []
        for count in sorted({min(count, width) for count in self.spec.channels}):
            for selection in self.spec.selections:
                if selection == "attacker" and count == width and "random" in self.spec.selections:
                    continue  # keeping every channel: the same topology as the random one
                earlier = self.measured.get((layer, count, selection))
                if earlier is not None:
                    candidates.append(self.judge(earlier))
                    continue
                if selection == "random":
                    keep = random_channels(width, count, seed=self.spec.seed)
                else:
                    if usefulness is None:
                        usefulness = self._usefulness(layer, width)
                    keep = attacker_guided_channels(usefulness, count)
                candidates.append(self.measure(layer, keep, selection))
        return candidates

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

    def judge(self, earlier: Candidate) -> Candidate:
        """An earlier measurement, its budget and privacy verdicts re-derived from this plan's constraints."""
        constraints = self.spec.constraints
        budget = within_budget(
            constraints,
            edge_flops=earlier.edge_flops,
            edge_params=earlier.edge_params,
            storage_bytes=earlier.storage_bytes,
        )
        private = meets_privacy(constraints, earlier.ssim, margin=self.spec.privacy_margin)
        return replace(earlier, within_budget=budget, feasible=budget and private)

    def build(self, layer: str, keep: list[int]) -> SplitModel:
        fresh = build_model(ExperimentSpec(seed=self.spec.seed, model=self.spec.model), self.data)
        return privynet_split(self.public_model, fresh, layer=layer, keep=keep)

    def measure(self, layer: str, keep: list[int], selection: str) -> Candidate:
        split = self.build(layer, keep)
        profile = split.profile(self.data.input_shape)
        candidate = Candidate(
            layer=layer,
            channels=len(keep),
            selection=selection,
            keep=keep,
            edge_flops=profile.edge_flops,
            edge_params=profile.edge_params,
            storage_bytes=profile.edge_params * FLOAT32_BYTES,
            feature_bytes=profile.feature_bytes,
            within_budget=False,
        )
        candidate.within_budget = within_budget(
            self.spec.constraints,
            edge_flops=candidate.edge_flops,
            edge_params=candidate.edge_params,
            storage_bytes=candidate.storage_bytes,
        )
        if not candidate.within_budget:
            return candidate
        candidate.accuracy, outcome = self.train_and_attack(split, self.spec.attack, seed=self.spec.seed)
        candidate.ssim, candidate.psnr = outcome.ssim, outcome.psnr
        candidate.feasible = meets_privacy(self.spec.constraints, candidate.ssim, margin=self.spec.privacy_margin)
        return candidate

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
        costs = {
            "edge_flops": profile.edge_flops,
            "edge_params": profile.edge_params,
            "storage_bytes": profile.edge_params * FLOAT32_BYTES,
        }
        return {
            "attack": self.spec.verify_attack.model_dump(mode="json"),
            "accuracy": accuracy,
            "ssim": outcome.ssim,
            "psnr": outcome.psnr,
            **costs,
            "within_budget": within_budget(self.spec.constraints, **costs),
            "meets_privacy": meets_privacy(self.spec.constraints, outcome.ssim),
        }

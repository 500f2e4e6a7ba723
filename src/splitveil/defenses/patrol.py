"""PATROL — privacy-oriented pruning for collaborative inference (Ding et al., WACV 2024).

Put *more* layers on the edge (deeper features are more task-specific, harder to invert) and prune
them to fit the edge's budget. Training minimises, with ``s = strength``,

    L_task + λ_m Σ|m|  +  s · λ_lip Σ_i k_i  −  s · β · L_adv

* ``m``: a soft mask per output channel of every edge convolution (:class:`ChannelMask`, after the
  conv's BatchNorm if one follows), initialised to 1, so :meth:`PatrolDefense.apply` changes no output;
  ``λ_m = mask_l1`` [L1 sparsity as in network slimming; ours: the weight].
* ``k_i``: block-wise local Lipschitz ratios [paper] from one Gaussian perturbation ``δ`` (std
  ``perturbation``) per step, the blocks being the edge up to each mask:
  ``k_1 = ‖F_1(x+δ) − F_1(x)‖ / ‖δ‖``, ``k_i = ‖F_i(x+δ) − F_i(x)‖ / ‖F_{i−1}(x+δ) − F_{i−1}(x)‖``
  (:func:`~splitveil.defenses.lipschitz.blockwise_lipschitz`); ``α_i = 1`` [ours: the paper gives no values].
  ``relative_lipschitz`` [ours] measures each change against its own signal, so that shrinking the
  edge's weights (see the known limit below) no longer lowers ``k_i``.
* ``L_adv``: adversarial reconstruction training, delegated to an internal
  :class:`~splitveil.defenses.adversarial.AdversarialDefense` at strength ``s · β``
  (``β = adversarial_weight``), whose hook trains the inverter after every model step.

After training, :meth:`PatrolDefense.finalize` folds the masks into their layers and removes the
channels with the smallest ``|m|`` until the edge meets the FLOPs budget (``flops_budget``, or the
unpruned edge FLOPs of ``budget_cut``), using torch-pruning (:mod:`splitveil.blocks.pruning`);
then the split is fine-tuned ``finetune_epochs`` epochs with the same terms (the Lipschitz blocks
are then the identities left where the masks were). Strength 0 is the identity throughout: no
masks, zero terms, nothing pruned.

Known limit [ours]: the absolute ``k_i`` of a ReLU edge shrinks when its weights shrink. The cloud
can scale its first layer up to compensate, up to a point: over a deep edge the gains multiply, and
the feature can shrink past what the cloud recovers (he-cnn's relu32 edge fell to chance at conv11's
budget). ``relative_lipschitz=True`` closes that escape. It is off by default: the paper's absolute
ratios, with which the PATROL figures in docs/BENCHMARKS.md were measured.
"""

from __future__ import annotations

import copy
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from splitveil.blocks.pruning import ChannelMask, insert_channel_masks, mask_modules, prune_to_budget, replay_pruning
from splitveil.defenses.adversarial import AdversarialDefense
from splitveil.defenses.base import Defense
from splitveil.defenses.lipschitz import blockwise_lipschitz
from splitveil.defenses.registry import register_defense
from splitveil.errors import ConfigError
from splitveil.options import NonNegative, NonNegativeInt, Positive, PositiveInt
from splitveil.split import SplitModel, cut, trace
from splitveil.train import Batch, TrainHook, TrainState


class _FreshPerturbations(TrainHook):
    """Every fit draws the same perturbations: the Lipschitz generator restarts from ``seed``."""

    def __init__(self, defense: PatrolDefense) -> None:
        self.defense = defense

    def on_train_start(self, state: TrainState) -> None:
        self.defense.reset_perturbations()


@register_defense
class PatrolDefense(Defense):
    """Channel masks + block-wise Lipschitz + adversarial training, then pruning to a FLOPs budget.

    Options: ``mask_l1`` (λ_m), ``lipschitz_weight`` (λ_lip), ``adversarial_weight`` (β),
    ``perturbation`` (std of δ), ``relative_lipschitz`` (scale-invariant ratios), ``flops_budget`` or
    ``budget_cut`` (the edge's FLOPs budget per sample; neither: no pruning), ``min_channels`` (per
    conv, never pruned below), ``finetune_epochs``,
    the inverter's ``adversary_steps``, ``adversary_lr``, ``adversary_width``, ``normalize_z``, and
    ``seed`` (the inverter's initial weights and the perturbations).
    """

    name = "patrol"
    requires_training = True

    def __init__(
        self,
        *,
        strength: NonNegative = 1.0,
        mask_l1: NonNegative = 1e-3,
        lipschitz_weight: NonNegative = 0.1,
        adversarial_weight: NonNegative = 1.0,
        perturbation: Positive = 0.05,
        relative_lipschitz: bool = False,
        flops_budget: Positive | None = None,
        budget_cut: Annotated[str, Field(min_length=1)] | None = None,
        min_channels: PositiveInt = 2,
        finetune_epochs: NonNegativeInt = 3,
        adversary_steps: PositiveInt = 1,
        adversary_lr: Positive = 1e-3,
        adversary_width: PositiveInt = 32,
        normalize_z: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(strength=strength)
        if flops_budget is not None and budget_cut is not None:
            raise ConfigError("patrol: give flops_budget or budget_cut, not both")
        self.mask_l1 = float(mask_l1)
        self.lipschitz_weight = float(lipschitz_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.perturbation = float(perturbation)
        self.relative_lipschitz = relative_lipschitz
        self.flops_budget = flops_budget
        self.budget_cut = budget_cut
        self.min_channels = min_channels
        self._finetune_epochs = finetune_epochs
        self.seed = seed
        self._adversarial = AdversarialDefense(
            strength=self.strength * self.adversarial_weight,
            adversary_steps=adversary_steps,
            adversary_lr=adversary_lr,
            adversary_width=adversary_width,
            normalize_z=normalize_z,
            seed=seed,
        )
        self._split: SplitModel | None = None
        self._blocks: list[str] = []
        self._generator: torch.Generator | None = None

    def apply(self, split: SplitModel) -> SplitModel:
        """A split whose edge is a copy of ``split.edge`` with a mask after every conv; the cloud is shared."""
        if self.strength == 0:
            return split  # the identity: no masks to train or prune
        edge = trace(copy.deepcopy(split.edge))
        edge.training = split.edge.training
        blocks = insert_channel_masks(edge)
        if not blocks:
            raise ConfigError(
                f"patrol: the edge of cut {split.cut_name!r} has no Conv2d to mask and prune; cut after a convolution"
            )
        defended = SplitModel(edge, split.cloud, cut_name=split.cut_name)
        defended.training = split.training
        self._split, self._blocks = defended, blocks
        return defended

    def masks(self) -> dict[str, ChannelMask]:
        """The channel masks of the split ``apply`` last returned (empty after ``finalize`` folded them)."""
        return mask_modules(self._split.edge) if self._split is not None else {}

    def adversary(self) -> nn.Module | None:
        """The jointly trained inverter (see :class:`~splitveil.defenses.adversarial.AdversarialDefense`)."""
        return self._adversarial.adversary()

    def block_lipschitz(self, x: torch.Tensor) -> torch.Tensor:
        """``[k_1, …, k_n]`` of the deployed edge at ``x`` (differentiable), from the seeded generator."""
        edge = self._deployed().edge
        blocks = [edge.get_submodule(name) for name in self._blocks]
        generator = self._perturbation_generator(x.device)
        return blockwise_lipschitz(
            edge, blocks, x, perturbation=self.perturbation, generator=generator, relative=self.relative_lipschitz
        )

    def loss_terms(self, batch: Batch, z: torch.Tensor | None, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        zero = logits.new_zeros(())
        terms = {"mask_l1": zero, "lipschitz": zero}
        if self.strength > 0:
            masks = self.masks().values()
            if self.mask_l1 > 0 and masks:
                terms["mask_l1"] = self.mask_l1 * torch.stack([m.mask.abs().sum() for m in masks]).sum()
            if self.lipschitz_weight > 0:
                terms["lipschitz"] = self.strength * self.lipschitz_weight * self.block_lipschitz(batch.x).sum()
        return {**terms, **self._adversarial.loss_terms(batch, z, logits)}

    def hooks(self) -> list[TrainHook]:
        return [_FreshPerturbations(self), *self._adversarial.hooks()]

    def reset_perturbations(self) -> None:
        """Restart the Lipschitz perturbations from ``seed`` (done at the start of every fit)."""
        self._generator = None

    def finalize(self, split: SplitModel, *, model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, object]:
        """Fold the masks and prune the edge to the budget (in place); ``{}`` when nothing needs pruning."""
        if self.strength == 0:
            return {}
        budget = self.edge_budget(model, input_shape)
        if budget is None or split.profile(input_shape).edge_flops <= budget:
            return {}  # the masks stay: cheap per-channel scales, and the split still matches apply()'s
        record = prune_to_budget(split, budget=budget, input_shape=tuple(input_shape), min_channels=self.min_channels)
        self._split = split
        return record

    def restore(self, split: SplitModel, record: dict[str, object]) -> None:
        if record:
            replay_pruning(split, record)
            self._split = split

    def edge_budget(self, model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
        """The edge FLOPs per sample to prune down to, or None when no budget is set."""
        if self.flops_budget is not None:
            return int(self.flops_budget)
        if self.budget_cut is not None:
            return cut(model, at=self.budget_cut).profile(tuple(input_shape)).edge_flops
        return None

    @property
    def finetune_epochs(self) -> int:
        return self._finetune_epochs

    def options(self) -> dict[str, object]:
        return {
            "mask_l1": self.mask_l1,
            "lipschitz_weight": self.lipschitz_weight,
            "adversarial_weight": self.adversarial_weight,
            "perturbation": self.perturbation,
            "relative_lipschitz": self.relative_lipschitz,
            "flops_budget": self.flops_budget,
            "budget_cut": self.budget_cut,
            "min_channels": self.min_channels,
            "finetune_epochs": self._finetune_epochs,
            **self._adversarial.options(),  # adversary_steps/_lr/_width, normalize_z, seed
        }

    def _deployed(self) -> SplitModel:
        if self._split is None:
            raise RuntimeError("patrol: call apply(split) first, and train the split it returns")
        return self._split

    def _perturbation_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

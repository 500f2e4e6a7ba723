"""SiftFunnel — a narrow, attentive edge trained to send little but the label (Liu et al., arXiv 2501.00824).

Training adds, with ``s = strength``, to the loop's cross-entropy [paper's terms and defaults]:

    s · ( α·KL(ỹ ‖ p(y|x)) + β·dCor(x, z) + γ·R_P(z) + λ₁·mean|z| ),   α=5, β=2, γ=2, λ₁=0.03

* ``ỹ``: label smoothing with ε = ``smoothing`` (1 − ε on the true class, ε/(K − 1) elsewhere);
  ``p(y|x) = softmax(logits)``. Smoothed targets keep the model from pushing ``z`` to separate
  every sample with full confidence, which is what an inverter feeds on.
* ``dCor``: NoPeek's distance correlation (:func:`~splitveil.defenses.nopeek.distance_correlation`),
  the non-linear dependence of ``z`` on ``x``.
* ``R_P(z)``: :func:`channel_correlation`, the mean squared Pearson correlation between the channel
  maps of ``z``: linear redundancy between channels, which lets an inverter recover a channel from
  the others.
* ``mean|z|``: L1 sparsity of the transmitted feature.

How the KL term composes with the loop [ours]: :func:`splitveil.train.fit` always adds the plain
cross-entropy ``CE(y, p)`` and a defense can only add terms, so the model minimises
``CE(y, p) + s·α·KL(ỹ ‖ p)``. As ``KL(ỹ ‖ p) = CE(ỹ, p) − H(ỹ)``, that is
``(1 + sα) · CE(ȳ, p)`` plus a constant, with ``ȳ`` the label smoothing of
``ε' = sαε / (1 + sα)``: at the defaults, 0.208 instead of 0.25. Set
``smoothing = ε(1 + sα)/(sα)`` (0.3 at the defaults) to reach the paper's effective target.

The funnel [paper's architecture; ``funnel_channels`` is ours to choose]: with
``funnel_channels=k`` the deployed edge ends in a :class:`~splitveil.blocks.funnel.FunnelBlock`
(squeeze-excitation, CBAM-style spatial attention, a conv narrowing to ``k`` channels) and the
cloud starts with an :class:`~splitveil.blocks.funnel.UpProjection` back to the original width,
so the rest of the cloud is unchanged. ``replace_last_conv=False`` appends the funnel after the edge
(``→ FunnelBlock``, no activation after it; the edge costs more than before); ``True`` puts the FunnelBlock in place
of the edge's last Conv2d, keeping its kernel, stride and padding, so the edge's FLOPs fall when
``k`` is small, as the paper reports. The funnel is attached only at strength > 0: strength 0 is
the exact identity, a split without new modules. Its initial weights come from ``seed``.

Second phase [paper: optional]: with ``finetune_epochs > 0``, :meth:`SiftFunnelDefense.finalize`
freezes the edge (``requires_grad_(False)`` on its parameters, and its layers held in eval mode so
BatchNorm statistics stay put) and the bench fine-tunes the cloud with the same loss terms for that
many epochs, at ``train.lr`` (the paper uses a smaller rate; the bench has no separate one).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from splitveil.blocks.funnel import attach_funnel, edge_output
from splitveil.defenses.base import Defense
from splitveil.defenses.nopeek import distance_correlation
from splitveil.defenses.registry import register_defense
from splitveil.errors import ConfigError
from splitveil.options import Fraction, NonNegative, NonNegativeInt, PositiveInt
from splitveil.seeding import seeded
from splitveil.split import SplitModel, trace
from splitveil.train import Batch

#: Floor of a channel's squared norm in :func:`channel_correlation`: constant channels (dead ReLUs)
#: count as uncorrelated with everything, with zero rather than NaN gradients.
EPS = 1e-12


def smoothed_targets(
    labels: torch.Tensor, num_classes: int, *, smoothing: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """One row per label: ``1 − smoothing`` on the label, ``smoothing / (K − 1)`` on every other class.

    Example:
        >>> smoothed_targets(torch.tensor([0, 2]), 3, smoothing=0.2)
        tensor([[0.8000, 0.1000, 0.1000],
                [0.1000, 0.1000, 0.8000]])
    """
    if num_classes < 2:
        raise ValueError(f"label smoothing needs at least 2 classes, got {num_classes}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    targets = torch.full((len(labels), num_classes), smoothing / (num_classes - 1), dtype=dtype, device=labels.device)
    return targets.scatter_(1, labels.view(-1, 1), 1 - smoothing)


def smoothed_kl(logits: torch.Tensor, labels: torch.Tensor, *, smoothing: float) -> torch.Tensor:
    """``KL(ỹ ‖ softmax(logits))`` averaged over the batch, ``ỹ`` = :func:`smoothed_targets`.

    ``KL(q ‖ p) = Σ_k q_k (log q_k − log p_k)``; zero exactly when the prediction equals the
    smoothed target. ``smoothing=0`` is the cross-entropy (``0 · log 0 = 0``).
    """
    targets = smoothed_targets(labels, logits.shape[1], smoothing=smoothing, dtype=logits.dtype)
    per_sample = (torch.xlogy(targets, targets) - targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    return per_sample.mean()


def channel_correlation(z: torch.Tensor, *, eps: float = EPS) -> torch.Tensor:
    """``R_P(z)``: mean squared Pearson correlation between the channel maps of each sample, batch-averaged.

    For every sample, each channel's map ``z[n, c]`` is flattened; with ``r_ij`` the Pearson
    correlation of channels ``i`` and ``j`` over positions,

        R_P(z) = mean_n [ Σ_{i≠j} r_ij² / (C (C − 1)) ]   ∈ [0, 1]

    0 when the channels are uncorrelated, 1 when every channel is an affine copy of the others.
    A constant map (a dead ReLU channel, or a flat feature with no positions) has no correlation
    with anything and counts 0; fewer than two channels give 0. Differentiable.

    Example:
        >>> maps = torch.rand(2, 1, 5, 5)
        >>> round(channel_correlation(torch.cat([maps, 2 * maps + 1], dim=1)).item(), 4)
        1.0
    """
    if z.ndim < 2:
        raise ValueError(f"channel_correlation needs [N, C, ...] features, got shape {tuple(z.shape)}")
    count, channels = z.shape[0], z.shape[1]
    if channels < 2:
        return z.new_zeros(())
    maps = z.reshape(count, channels, -1)
    centred = maps - maps.mean(dim=2, keepdim=True)
    # clamp before sqrt: zero gradient below the floor, never sqrt's infinite slope at 0.
    unit = centred / centred.square().sum(dim=2, keepdim=True).clamp_min(eps).sqrt()
    correlation = unit @ unit.transpose(1, 2)
    off_diagonal = ~torch.eye(channels, dtype=torch.bool, device=z.device)
    return correlation[:, off_diagonal].square().mean()


def _hold_in_eval(module: nn.Module, args: object) -> None:
    module.eval()  # a frozen edge computes as deployed, and BatchNorm statistics do not drift


def freeze_edge(split: SplitModel) -> None:
    """Stop ``split.edge`` from training (in place): no gradients, and always run in eval mode."""
    split.edge.requires_grad_(False)
    if _hold_in_eval not in split.edge._forward_pre_hooks.values():
        split.edge.register_forward_pre_hook(_hold_in_eval)


@register_defense
class SiftFunnelDefense(Defense):
    """SiftFunnel's loss terms, and optionally its funnel edge and a frozen-edge fine-tuning phase.

    Options: the weights ``kl_weight`` (α), ``dcor_weight`` (β), ``correlation_weight`` (γ),
    ``l1_weight`` (λ₁), the label ``smoothing`` (ε); ``funnel_channels`` (None: loss terms only),
    ``funnel_kernel`` (1 or 3, when appended), ``reduction`` (squeeze-excitation),
    ``replace_last_conv``; ``finetune_epochs`` of frozen-edge fine-tuning; ``seed`` of the funnel's
    initial weights.
    """

    name = "siftfunnel"
    requires_training = True

    def __init__(
        self,
        *,
        strength: NonNegative = 1.0,
        kl_weight: NonNegative = 5.0,
        dcor_weight: NonNegative = 2.0,
        correlation_weight: NonNegative = 2.0,
        l1_weight: NonNegative = 0.03,
        smoothing: Fraction = 0.25,
        funnel_channels: PositiveInt | None = None,
        funnel_kernel: Literal[1, 3] = 1,
        reduction: PositiveInt = 4,
        replace_last_conv: bool = False,
        finetune_epochs: NonNegativeInt = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(strength=strength)
        if replace_last_conv and funnel_channels is None:
            raise ConfigError(f"{self.name}: replace_last_conv needs funnel_channels (the narrow conv's width)")
        self.kl_weight = float(kl_weight)
        self.dcor_weight = float(dcor_weight)
        self.correlation_weight = float(correlation_weight)
        self.l1_weight = float(l1_weight)
        self.smoothing = float(smoothing)
        self.funnel_channels = funnel_channels
        self.funnel_kernel = funnel_kernel
        self.reduction = reduction
        self.replace_last_conv = replace_last_conv
        self._finetune_epochs = finetune_epochs
        self.seed = seed

    def apply(self, split: SplitModel) -> SplitModel:
        """The funnel split when ``funnel_channels`` is set and strength > 0; otherwise ``split`` itself."""
        if self.strength == 0 or self.funnel_channels is None:
            return split
        width = edge_output(trace(split.edge)).channels
        if self.funnel_channels > width:
            raise ConfigError(
                f"{self.name}: funnel_channels={self.funnel_channels} would widen the {width}-channel feature at cut "
                f"{split.cut_name!r}; choose at most {width} (the paper narrows sharply, e.g. 64 -> 4..12)"
            )
        with seeded(self.seed):  # the same funnel for the same seed; the caller's stream untouched
            return attach_funnel(
                split,
                channels=self.funnel_channels,
                reduction=self.reduction,
                kernel_size=self.funnel_kernel,
                replace_last_conv=self.replace_last_conv,
                label=self.name,
            )

    def loss_terms(self, batch: Batch, z: torch.Tensor | None, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if z is None:
            raise ValueError(f"{self.name} needs the transmitted feature z: train a SplitModel, not the whole model")
        weighted = {
            "kl": (self.kl_weight, lambda: smoothed_kl(logits, batch.y, smoothing=self.smoothing)),
            "dcor": (self.dcor_weight, lambda: distance_correlation(batch.x, z)),
            "channel_correlation": (self.correlation_weight, lambda: channel_correlation(z)),
            "feature_l1": (self.l1_weight, lambda: z.abs().mean()),
        }
        # A term that is off is exactly zero and not even computed: the loss and its gradient are unchanged.
        return {
            name: self.strength * weight * term() if self.strength * weight > 0 else logits.new_zeros(())
            for name, (weight, term) in weighted.items()
        }

    def finalize(self, split: SplitModel, *, model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, object]:
        """Freeze the edge for the cloud's fine-tuning phase when ``finetune_epochs > 0``; else ``{}``."""
        if self.strength == 0 or self._finetune_epochs == 0:
            return {}
        freeze_edge(split)
        return {"frozen_edge": True}

    def restore(self, split: SplitModel, record: dict[str, object]) -> None:
        if not record:
            return
        if record != {"frozen_edge": True}:
            raise ConfigError(f"{self.name}: not a record finalize() wrote: {record!r}")
        freeze_edge(split)

    @property
    def finetune_epochs(self) -> int:
        return self._finetune_epochs

    def options(self) -> dict[str, object]:
        return {
            "kl_weight": self.kl_weight,
            "dcor_weight": self.dcor_weight,
            "correlation_weight": self.correlation_weight,
            "l1_weight": self.l1_weight,
            "smoothing": self.smoothing,
            "funnel_channels": self.funnel_channels,
            "funnel_kernel": self.funnel_kernel,
            "reduction": self.reduction,
            "replace_last_conv": self.replace_last_conv,
            "finetune_epochs": self._finetune_epochs,
            "seed": self.seed,
        }

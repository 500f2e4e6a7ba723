"""PriPro — noise on the transmitted feature, shaped by the feature itself (Gao et al., CCGrid 2021).

The paper [abstract] injects noise into intermediate results, shaped by the input's features through
self-attention, and judges privacy by privacy accuracy and a privacy index
(:mod:`splitveil.metrics.privacy_index`). No code or body text was available to us; the rest is ours:

* :class:`AttentionNoise` at the cut: self-attention over the spatial positions of ``z`` (1x1 conv
  query, key and value) gives a context per position, and a 1x1 conv + softplus turns it into a
  per-element scale ``σ(z) ≥ 0``. The edge sends ``z + strength · σ(z) ⊙ ε``, ε ~ N(0, I), drawn from
  torch's global generator in train and eval mode alike (it is the deployed edge; see
  :mod:`splitveil.defenses.noise` for why the global generator). A flat ``z`` ``[N, D]`` is one
  position of ``D`` channels (the attention is then trivial and σ a per-element 1x1 map).
* The output conv starts at zero weight and bias ``softplus⁻¹(budget)``: at initialisation σ ≡
  ``budget`` and the defense *is* ``gaussian-noise`` at σ = ``strength · budget``; training
  then moves noise between elements and samples.
* Training adds, to the task loss that pushes σ down wherever noise costs accuracy,

      −λ · L_adv(z.detach() + strength · σ(z.detach()) ⊙ ε)  +  w · (mean σ(z) − budget)²

  ``L_adv`` is the reconstruction error of a jointly trained inverter (an internal
  :class:`~splitveil.defenses.adversarial.AdversarialDefense`, whose hook trains it on the
  transmitted, noisy ``z`` after every model step); λ = ``adversarial_weight``. It is evaluated on
  the same draw ε with the clean feature detached, so it rewards *the noise generator* for putting
  noise where the inverter is hurt most and leaves the edge's weights to the task loss (training
  them adversarially is the ``adversarial`` defense). The budget term, w = ``budget_weight``, holds
  the mean scale at ``budget``: without it the generator would blow noise up to defeat the inverter
  and accuracy with it, or shrink it to zero for accuracy. So ``strength`` keeps its meaning of
  "mean noise std", and a PriPro cell is comparable to a ``gaussian-noise`` cell of equal strength.

Strength 0 is the identity: no noise module, zero terms, no inverter. Noise is injected at the cut
only (the paper injects at several layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from splitveil.blocks.funnel import edge_output
from splitveil.blocks.noise_source import SILENT, NoiseSource, randn_like
from splitveil.defenses.adversarial import AdversarialDefense
from splitveil.defenses.base import Defense, wrap_edge
from splitveil.defenses.registry import register_defense
from splitveil.options import NonNegative, Positive, PositiveInt
from splitveil.seeding import seeded
from splitveil.split import SplitModel, trace
from splitveil.train import Batch, TrainHook


@dataclass(frozen=True)
class NoiseDraw:
    """One training-mode pass of :class:`AttentionNoise`: its input, scale, unit noise and output."""

    clean: torch.Tensor
    sigma: torch.Tensor
    noise: torch.Tensor
    output: torch.Tensor


class AttentionNoise(nn.Module):
    """``z + scale · σ(z) ⊙ ε``, ε ~ N(0, I) from ``noise_source``, in train and eval mode alike.

    ``σ(z) = softplus(W_o · attention(z))``, the attention over spatial positions with 1x1 conv
    query and key of ``key_channels`` (default ``max(1, C // 4)``) and value of ``C`` channels.
    ``W_o`` starts at zero with bias ``softplus⁻¹(initial_sigma)``, so σ starts constant.
    In training mode with gradients on, the last pass is kept as :attr:`last_draw` for the loss terms
    (dropped by ``eval()``, and not copied or pickled).

    Example:
        >>> noise = AttentionNoise(8, scale=0.5)
        >>> tuple(noise.sigma(torch.zeros(2, 8, 3, 3)).shape)
        (2, 8, 3, 3)
    """

    def __init__(
        self, channels: int, *, scale: float, key_channels: int | None = None, initial_sigma: float = 1.0
    ) -> None:
        super().__init__()
        key_channels = max(1, channels // 4) if key_channels is None else key_channels
        if channels < 1 or key_channels < 1 or not scale >= 0 or not initial_sigma > 0:
            raise ValueError(
                f"AttentionNoise: need channels, key_channels >= 1, scale >= 0 and initial_sigma > 0, got "
                f"{channels}, {key_channels}, {scale}, {initial_sigma}"
            )
        self.scale = float(scale)
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv2d(channels, key_channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.to_sigma = nn.Conv2d(channels, channels, 1)
        with torch.no_grad():
            self.to_sigma.weight.zero_()
            bias = self.to_sigma.bias
            assert bias is not None  # nn.Conv2d has a bias by default
            bias.fill_(_inverse_softplus(initial_sigma))
        self.last_draw: NoiseDraw | None = None
        self.noise_source: NoiseSource = None  # torch's global generator (see splitveil.blocks.noise_source)

    def sigma(self, z: torch.Tensor) -> torch.Tensor:
        """The per-element noise scale ``σ(z) ≥ 0``, shaped like ``z``."""
        maps = z if z.ndim == 4 else z.reshape(*z.shape[:2], 1, 1)
        count, channels, height, width = maps.shape
        query = self.query(maps).flatten(2)  # [N, d, HW]
        key = self.key(maps).flatten(2)
        value = self.value(maps).flatten(2)  # [N, C, HW]
        # Row i: how much position i attends to each position j; softmax over j.
        attention = torch.softmax(query.transpose(1, 2) @ key / math.sqrt(query.shape[1]), dim=-1)
        context = (value @ attention.transpose(1, 2)).view(count, channels, height, width)
        return F.softplus(self.to_sigma(context)).reshape(z.shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim not in (2, 4):
            raise ValueError(f"AttentionNoise expects [N, C, H, W] or [N, D] features, got {tuple(z.shape)}")
        if self.scale == 0:
            return z
        sigma = self.sigma(z)
        # silent: the draw is zero, so the loss terms that read last_draw still see this step
        noise = torch.zeros_like(z) if self.noise_source == SILENT else randn_like(z, self.noise_source)
        output = z + self.scale * sigma * noise
        if self.training and torch.is_grad_enabled():
            self.last_draw = NoiseDraw(clean=z, sigma=sigma, noise=noise, output=output)
        return output

    def train(self, mode: bool = True) -> AttentionNoise:
        if not mode:
            self.last_draw = None  # only training steps read it; free the step's graph
        return super().train(mode)

    def __getstate__(self) -> dict[str, object]:
        # The draw holds one step's autograd graph: not state, and deepcopy refuses non-leaf tensors
        # (attacks copy the deployed edge).
        return {**self.__dict__, "last_draw": None}

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))  # log(e^v − 1), stable for large v


@register_defense
class PriProDefense(Defense):
    """Feature-shaped noise at the cut, trained against an inverter under a noise budget.

    ``strength`` multiplies σ, so the mean noise std is about ``strength · budget`` (= strength at
    the default budget 1).

    Options: ``budget`` (target mean of σ), ``budget_weight`` (w), ``adversarial_weight`` (λ), the
    inverter's ``adversary_steps``, ``adversary_lr``, ``adversary_width``, ``normalize_z``, and
    ``seed`` (the noise generator's and the inverter's initial weights).
    """

    name = "pripro"
    requires_training = True

    def __init__(
        self,
        *,
        strength: NonNegative = 1.0,
        budget: Positive = 1.0,
        budget_weight: NonNegative = 10.0,
        adversarial_weight: NonNegative = 1.0,
        adversary_steps: PositiveInt = 1,
        adversary_lr: Positive = 1e-3,
        adversary_width: PositiveInt = 32,
        normalize_z: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(strength=strength)
        self.budget = float(budget)
        self.budget_weight = float(budget_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.seed = seed
        self._adversarial = AdversarialDefense(
            strength=self.adversarial_weight,
            adversary_steps=adversary_steps,
            adversary_lr=adversary_lr,
            adversary_width=adversary_width,
            normalize_z=normalize_z,
            seed=seed,
        )
        self._noise: AttentionNoise | None = None

    def apply(self, split: SplitModel) -> SplitModel:
        """``split`` with :class:`AttentionNoise` after its edge (shared halves); ``split`` itself at strength 0."""
        if self.strength == 0:
            return split
        channels = edge_output(trace(split.edge)).channels
        with seeded(self.seed):  # the same generator for the same seed; the caller's stream untouched
            noise = AttentionNoise(channels, scale=self.strength, initial_sigma=self.budget)
        self._noise = noise.train(split.edge.training)
        return wrap_edge(split, noise)

    def noise_module(self) -> AttentionNoise | None:
        """The noise generator of the split ``apply`` last returned (None before, or at strength 0)."""
        return self._noise

    def adversary(self) -> nn.Module | None:
        """The jointly trained inverter (see :class:`~splitveil.defenses.adversarial.AdversarialDefense`)."""
        return self._adversarial.adversary()

    def loss_terms(self, batch: Batch, z: torch.Tensor | None, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if z is None:
            raise ValueError(f"{self.name} needs the transmitted feature z: train a SplitModel, not the whole model")
        zero = logits.new_zeros(())
        if self.strength == 0:
            return {"adversarial": zero, "noise_budget": zero}
        noise, draw = self._draw_of(z)
        budget = self.budget_weight * (draw.sigma.mean() - self.budget).square() if self.budget_weight > 0 else zero
        clean = draw.clean.detach()
        generator_view = clean + noise.scale * noise.sigma(clean) * draw.noise
        return {**self._adversarial.loss_terms(batch, generator_view, logits), "noise_budget": budget}

    def hooks(self) -> list[TrainHook]:
        return self._adversarial.hooks() if self.strength > 0 else []

    def options(self) -> dict[str, object]:
        return {
            "budget": self.budget,
            "budget_weight": self.budget_weight,
            "adversarial_weight": self.adversarial_weight,
            **self._adversarial.options(),  # adversary_steps/_lr/_width, normalize_z, seed
        }

    def _draw_of(self, z: torch.Tensor) -> tuple[AttentionNoise, NoiseDraw]:
        noise = self._noise
        if noise is None:
            raise RuntimeError(f"{self.name}: call apply(split) first, and train the split it returns")
        draw = noise.last_draw
        if draw is None or draw.output is not z:
            raise ValueError(
                f"{self.name}: loss_terms needs the z of the latest training-mode forward pass (with gradients) of "
                "the split apply() returned; train that split in train mode"
            )
        return noise, draw

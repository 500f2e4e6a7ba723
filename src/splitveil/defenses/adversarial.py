"""Adversarial reconstruction training — the min-max game of PATROL (Ding et al., WACV 2024).

An inverter ``f_adv`` (the black-box attack's decoder, :func:`~splitveil.attacks.build_decoder`)
learns to reconstruct the input from the transmitted feature while the model learns to defeat it:

    inverter:  min over f_adv of  L_adv = mean (x − f_adv(z))²      (per-pixel mean squared error)
    model:     min over f of      L_task − β · L_adv,                 β = strength

alternating one model step and ``adversary_steps`` inverter steps per mini-batch [paper; the
alternation schedule is ours]. The deployed split is unchanged (``apply`` is the identity): the
defense lives in the trained weights.

How it plugs into :func:`splitveil.train.fit`:

* ``loss_terms`` returns ``{"adversarial": −β · L_adv}``. ``L_adv`` is evaluated through the
  inverter with its parameters detached and its BatchNorm buffers copied, so gradients reach the
  edge through ``z`` while the inverter gets no gradient and no state change from the model's step.
  The inverter is not a submodule of the split, so the model's optimiser never holds its parameters
  (the hook checks this on its first step).
* An :class:`~splitveil.train.TrainHook` then trains the inverter with its own Adam on the batch's
  detached ``(z, x)``, inside ``splitveil.seeding.seeded()``: the inverter's steps never consume the
  global random stream that drives the model's training (noise, dropout), so at strength 0 the
  model trains exactly as without the defense while the adversary still learns (useful as a report
  of how invertible the undefended features are).
* The inverter is built lazily from the first feature it sees (its shape fixes the architecture),
  with weights seeded by ``seed`` in a forked RNG, and rebuilt at the start of every ``fit``.

Why the model cannot simply win [ours]: the inverter's output is a sigmoid, so ``L_adv ≤ 1`` and
the term is bounded below by ``−β``; and the inverter sees ``z`` *as produced* and adapts every
step, so rescaling ``z`` (a cheap way to disturb a fixed decoder) only buys the model one step.
``normalize_z=True`` additionally standardises each sample's feature (zero mean, unit std) before
the inverter, which makes the game invariant to the scale of ``z`` altogether and can stabilise it.
A mini-batch of one sample is skipped by both sides (the inverter's BatchNorm needs a batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from splitveil.attacks.decoder import build_decoder
from splitveil.defenses.base import Defense
from splitveil.defenses.registry import register_defense
from splitveil.options import NonNegative, Positive, PositiveInt
from splitveil.seeding import seeded
from splitveil.train import Batch, TrainHook, TrainState


class Standardize(nn.Module):
    """Per-sample standardisation over all non-batch dimensions: ``(z − mean) / (std + eps)``."""

    def __init__(self, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, z.ndim))
        mean = z.mean(dim=dims, keepdim=True)
        std = z.std(dim=dims, keepdim=True, unbiased=False)
        return (z - mean) / (std + self.eps)


class _AdversaryHook(TrainHook):
    """The inverter's half of the alternation: its steps after every model step."""

    def __init__(self, defense: AdversarialDefense) -> None:
        self.defense = defense
        self._model_optimizer: torch.optim.Optimizer | None = None

    def on_train_start(self, state: TrainState) -> None:
        self.defense.reset()  # a new fit is a new game: a fresh, identically seeded inverter
        self._model_optimizer = state.optimizer

    def after_step(self, state: TrainState, batch: Batch, z: torch.Tensor | None) -> None:
        if z is None:
            raise ValueError("adversarial training needs the transmitted feature z: train a SplitModel")
        trained = self.defense.train_adversary(z, batch.x) is not None
        if trained and self._model_optimizer is not None:
            _check_not_optimised_by(self.defense.adversary(), self._model_optimizer)
            self._model_optimizer = None  # checked once: the inverter's parameters never change identity


def _check_not_optimised_by(module: nn.Module | None, optimizer: torch.optim.Optimizer) -> None:
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if module is not None and any(id(p) in held for p in module.parameters()):
        raise RuntimeError("the model's optimiser holds the adversary's parameters; the min-max game would collapse")


@register_defense
class AdversarialDefense(Defense):
    """Train the model against a jointly trained inverter: ``L_task − strength · L_adv``.

    Options: ``adversary_steps`` inverter steps per model step, its Adam learning rate
    ``adversary_lr``, its decoder ``adversary_width``, ``normalize_z`` (standardise ``z`` for the
    inverter) and the ``seed`` of its initial weights.
    """

    name = "adversarial"
    requires_training = True

    def __init__(
        self,
        *,
        strength: NonNegative = 1.0,
        adversary_steps: PositiveInt = 1,
        adversary_lr: Positive = 1e-3,
        adversary_width: PositiveInt = 32,
        normalize_z: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(strength=strength)
        self.adversary_steps = adversary_steps
        self.adversary_lr = adversary_lr
        self.adversary_width = adversary_width
        self.normalize_z = normalize_z
        self.seed = seed
        self._adversary: nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._feature_shape: tuple[int, ...] = ()
        #: The inverter's training loss at its last step after every model step (the bench can plot it).
        self.adversary_losses: list[float] = []

    def adversary(self) -> nn.Module | None:
        """The inverter ``f_adv`` (``z ↦ x̂``, in eval mode between steps), or None before it saw a feature."""
        return self._adversary

    def reset(self) -> None:
        """Forget the inverter; the next feature seen builds a fresh one from ``seed``."""
        self._adversary, self._optimizer, self._feature_shape = None, None, ()
        self.adversary_losses = []

    def hooks(self) -> list[TrainHook]:
        return [_AdversaryHook(self)]

    def loss_terms(self, batch: Batch, z: torch.Tensor | None, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if z is None:
            raise ValueError("adversarial training needs the transmitted feature z: train a SplitModel")
        if self.strength == 0 or len(z) < 2:
            # Exactly zero without touching the inverter: the loss and its gradient are unchanged.
            return {"adversarial": logits.new_zeros(())}
        return {"adversarial": -self.strength * self.reconstruction_error(z, batch.x)}

    def reconstruction_error(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``L_adv = mean (x − f_adv(z))²``, differentiable in ``z`` only.

        The inverter runs in train mode (batch statistics, as when it trains) on detached
        parameters and on copies of its buffers, so this pass leaves it exactly as it was.
        """
        adversary = self._ensure_adversary(z, x)
        frozen = {name: p.detach() for name, p in adversary.named_parameters()}
        frozen.update({name: b.clone() for name, b in adversary.named_buffers()})
        adversary.train()
        try:
            reconstruction = functional_call(adversary, frozen, (z,))
        finally:
            adversary.eval()
        return F.mse_loss(reconstruction, x)

    def train_adversary(self, z: torch.Tensor, x: torch.Tensor) -> float | None:
        """``adversary_steps`` Adam steps of the inverter on the detached pair; its last loss (None if skipped)."""
        if len(z) < 2:
            return None
        z, x = z.detach(), x.detach()
        adversary = self._ensure_adversary(z, x)
        assert self._optimizer is not None
        adversary.train()
        # Forked so that whatever the inverter may draw never shifts the model's random stream.
        with seeded():
            for _ in range(self.adversary_steps):
                loss = F.mse_loss(adversary(z), x)
                self._optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._optimizer.step()
        adversary.eval()
        self.adversary_losses.append(loss.item())
        return self.adversary_losses[-1]

    def _ensure_adversary(self, z: torch.Tensor, x: torch.Tensor) -> nn.Module:
        feature_shape = tuple(z.shape[1:])
        if self._adversary is None:
            with seeded(self.seed):  # same inverter for the same seed; the caller's stream untouched
                decoder = build_decoder(feature_shape, x.shape[1:], width=self.adversary_width)
            adversary = nn.Sequential(Standardize(), decoder) if self.normalize_z else decoder
            self._adversary = adversary.to(z.device).eval()
            self._optimizer = torch.optim.Adam(self._adversary.parameters(), lr=self.adversary_lr)
            self._feature_shape = feature_shape
        elif feature_shape != self._feature_shape:
            raise ValueError(
                f"{self.name}: the inverter was built for features {self._feature_shape}, got {feature_shape}; "
                "call reset() before training a differently cut split"
            )
        return self._adversary

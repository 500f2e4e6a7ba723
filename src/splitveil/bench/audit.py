"""Measure one cut: run each attack as the curious cloud would, score what it reconstructs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from splitveil.attacks import ATTACKS, AttackerView, create_attack
from splitveil.attacks.output_inference import observe_audit, salt_count, score_observation
from splitveil.config import AttackSpec, MineSpec, OutputAuditSpec
from splitveil.data import DatasetSplits, ImageSet
from splitveil.metrics import estimate_mi, mse, privacy_accuracy, psnr, ssim
from splitveil.split import SplitModel


@dataclass(frozen=True)
class AttackOutcome:
    """What one attack reconstructed from the targets' features, and how well."""

    reconstruction: torch.Tensor
    ssim: float
    psnr: float
    mse: float
    privacy_accuracy: float | None
    seconds: float


@torch.no_grad()
def transmitted_features(split: SplitModel, images: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """What the cloud receives for ``images``: the deployed edge's output, batch by batch."""
    return torch.cat([split.edge(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def run_attack(
    split: SplitModel,
    attack: AttackSpec,
    *,
    data: DatasetSplits,
    targets: ImageSet,
    evaluator: nn.Module | None,
    seed: int,
    progress: bool = True,
) -> AttackOutcome:
    """Grant the attack exactly what it requires of the deployed split, fit it, invert the targets."""
    started = time.perf_counter()
    requires = ATTACKS.get(attack.name).requires  # type: ignore[attr-defined]
    view = AttackerView.of(split, requires, input_shape=data.input_shape, aux=data.aux)
    attacker = create_attack(attack.name, view, seed=seed, progress=progress, **attack.options).fit()
    x_hat = attacker.invert(transmitted_features(split, targets.images)).detach().clamp(0, 1)
    seconds = time.perf_counter() - started
    return AttackOutcome(
        reconstruction=x_hat,
        ssim=float(ssim(x_hat, targets.images)),
        psnr=float(psnr(x_hat, targets.images)),
        mse=float(mse(x_hat, targets.images)),
        privacy_accuracy=None if evaluator is None else privacy_accuracy(evaluator, x_hat, targets.labels),
        seconds=seconds,
    )


def feature_mutual_information(split: SplitModel, images: torch.Tensor, spec: MineSpec, *, seed: int) -> float | None:
    """MINE's estimate of I(x; z) in nats over ``images`` (None when disabled)."""
    if not spec.enabled:
        return None
    z = transmitted_features(split, images)
    return float(estimate_mi(images, z, steps=spec.steps, seed=seed, **spec.options).nats)


def output_privacy(
    split: SplitModel, spec: OutputAuditSpec, *, data: DatasetSplits, seed: int, progress: bool = True
) -> dict[str, dict[str, float | str | None]] | None:
    """Output inference per observation (``{"logits": {...}, ...}``); None when disabled."""
    if not spec.enabled:
        return None
    targets = data.test.take(spec.targets)
    seen = observe_audit(split, aux=data.aux, targets=targets, seed=seed)  # one pass serves every observation
    options = {"aux": data.aux, "targets": targets, "num_salts": salt_count(split), "epochs": spec.epochs}
    return {
        observe: score_observation(seen, observe=observe, seed=seed, progress=progress, **options).as_dict()
        for observe in spec.observe
    }

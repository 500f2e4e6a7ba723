"""Measure one cut: run each attack as the curious cloud would, score what it reconstructs."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from splitveil.attacks import ATTACKS, Attack, AttackerView, Capability, create_attack
from splitveil.attacks.output_inference import observe_audit, salt_count, score_observation
from splitveil.config import AttackSpec, MineSpec, OutputAuditSpec, ReidSpec
from splitveil.data import DatasetSplits, ImageSet
from splitveil.errors import ConfigError
from splitveil.metrics import (
    Reidentification,
    candidate_sets,
    classifier_embedding,
    estimate_mi,
    mse,
    privacy_accuracy,
    psnr,
    reidentification,
    ssim,
)
from splitveil.serve.onnx_edge_module import OnnxEdgeModule, check_black_box
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
    reid: Reidentification | None = None


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
    features: torch.Tensor | None = None,
    reid: ReidSpec | None = None,
) -> AttackOutcome:
    """Grant the attack exactly what it requires of the deployed split, fit it, invert the targets.

    ``features`` are what the cloud received for ``targets`` (default: the deployed edge's output
    computed here); an audit of a real deployment passes the captured ones. With ``reid``, the
    reconstructions are re-identified among same-class images of the test split, whose first images
    ``targets`` must be (``data.test.take(n)``, as every audit takes them).
    """
    started = time.perf_counter()
    if features is None:
        features = transmitted_features(split, targets.images)
    x_hat = invert_features(
        split, attack, data=data, features=features, seed=seed, progress=progress, target_labels=targets.labels
    )
    seconds = time.perf_counter() - started
    outcome = score_reconstruction(x_hat, targets.images, labels=targets.labels, evaluator=evaluator, seconds=seconds)
    if reid is None or not reid.enabled:
        return outcome
    found = reidentify(x_hat, targets, pool=data.test, spec=reid, evaluator=evaluator, seed=seed)
    return dataclasses.replace(outcome, reid=found)


def reidentify(
    x_hat: torch.Tensor, targets: ImageSet, *, pool: ImageSet, spec: ReidSpec, evaluator: nn.Module | None, seed: int
) -> Reidentification | None:
    """Re-identification of the reconstructions of ``targets`` (the first images of ``pool``) among
    ``spec.candidates`` same-class images of ``pool``; the embedding distance needs the evaluator.

    A pool with fewer images of some target's class (a small test split) lowers N to what it holds;
    the result records the N used. None when a class has no other image at all, or when the only
    distance asked for is the embedding and there is no evaluator.
    """
    if evaluator is None and set(spec.distances) == {"embedding"}:
        return None  # the only distance asked for needs the evaluator, and there is none
    count = len(targets)
    if not torch.equal(pool.labels[:count], targets.labels) or not torch.equal(pool.images[:count], targets.images):
        raise ValueError("re-identification needs the targets to be the first images of the candidate pool")
    smallest = min(int((pool.labels == label).sum()) for label in targets.labels.unique())
    candidates = min(spec.candidates, smallest)
    if candidates < 2:
        return None
    sets = candidate_sets(pool.labels, torch.arange(count), candidates=candidates, seed=seed)
    embed = None if evaluator is None else classifier_embedding(evaluator)
    # Without an evaluator, reidentification() skips the embedding distance itself.
    return reidentification(x_hat, pool.images, sets, distances=spec.distances, embed=embed)


def score_reconstruction(
    x_hat: torch.Tensor,
    originals: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    evaluator: nn.Module | None = None,
    seconds: float = 0.0,
) -> AttackOutcome:
    """How close ``x_hat`` is to the ``originals`` it reconstructs; with an evaluator and the labels, also
    how often the evaluator recognises the reconstructions' classes (privacy accuracy)."""
    if x_hat.shape != originals.shape:
        raise ValueError(
            f"{len(x_hat)} reconstructions of shape {tuple(x_hat.shape[1:])} cannot be scored "
            f"against {len(originals)} originals of shape {tuple(originals.shape[1:])}"
        )
    recognised = None if evaluator is None or labels is None else privacy_accuracy(evaluator, x_hat, labels)
    return AttackOutcome(
        reconstruction=x_hat,
        ssim=float(ssim(x_hat, originals)),
        psnr=float(psnr(x_hat, originals)),
        mse=float(mse(x_hat, originals)),
        privacy_accuracy=recognised,
        seconds=seconds,
    )


def invert_features(
    split: SplitModel,
    attack: AttackSpec,
    *,
    data: DatasetSplits,
    features: torch.Tensor,
    seed: int,
    progress: bool,
    target_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fit the attack on what it may know of ``split`` and reconstruct the inputs of ``features``, in [0, 1].

    ``target_labels`` (the true labels of ``features``' inputs) are granted to an oracle that requires them.
    """
    attacker = fit_attack(split, attack, data=data, seed=seed, progress=progress, target_labels=target_labels)
    return attacker.invert(features).detach().clamp(0, 1)


def fit_attack(
    split: SplitModel,
    attack: AttackSpec,
    *,
    data: DatasetSplits,
    seed: int,
    progress: bool,
    target_labels: torch.Tensor | None = None,
) -> Attack:
    """The attack granted exactly what it requires of ``split`` and fitted, ready to ``invert`` features.

    ``target_labels`` (the true labels of the inputs it will invert) are granted to an oracle that
    requires them; without them such an oracle is refused.
    """
    requires = cast(type[Attack], ATTACKS.get(attack.name)).requires  # attacks register their classes
    if isinstance(split.edge, OnnxEdgeModule):
        check_black_box(attack.name)  # an exported edge grants queries only: no weights, no torch architecture
    if Capability.TARGET_LABELS in requires and target_labels is None:
        raise ConfigError(
            f"attack {attack.name!r} is an oracle that needs the true labels of the inverted inputs; "
            "captured traffic has none: audit it with another attack"
        )
    view = AttackerView.of(split, requires, input_shape=data.input_shape, aux=data.aux, target_labels=target_labels)
    return create_attack(attack.name, view, seed=seed, progress=progress, **attack.options).fit()


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
    num_salts = salt_count(split)
    return {
        observe: score_observation(
            seen,
            observe=observe,
            seed=seed,
            progress=progress,
            aux=data.aux,
            targets=targets,
            num_salts=num_salts,
            epochs=spec.epochs,
        ).as_dict()
        for observe in spec.observe
    }

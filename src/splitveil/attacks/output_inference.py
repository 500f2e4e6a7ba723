"""Output inference: what a curious cloud learns about the *answer* from what it sees.

The cloud receives ``z`` and computes the logits. Without a salt, its own argmax is the label.
Against a salted split (:mod:`splitveil.salt`) it must work harder: it queries the deployed edge
with labelled auxiliary images (the device draws its salt, as for any query), records what it sees
— the salted logits, the features, or both — and trains a classifier to predict the true label.
It also trains one to predict the salt, from the true salts of its own queries: more than a real
cloud has, so that figure is an upper bound on how much the salt leaks.

The figures are accuracies on held-out targets (fresh salts), read against chance: ``1/K`` for the
label, ``1/num_salts`` for the salt. This is a separate threat from input reconstruction, so it is
not an :class:`~splitveil.attacks.base.Attack` (those invert ``z`` to an image).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from splitveil.attacks.training import train_on_pairs
from splitveil.client_side import DeviceSide
from splitveil.data import ImageSet
from splitveil.seeding import seeded
from splitveil.split import SplitModel

Observation = Literal["logits", "features", "both"]
OBSERVATIONS: tuple[str, ...] = get_args(Observation)


@dataclass(frozen=True)
class CloudView:
    """What the cloud saw for a batch of queries: features, its logits, and (for scoring) the salts."""

    z: torch.Tensor
    logits: torch.Tensor
    salts: torch.Tensor | None

    def observation(self, observe: Observation) -> torch.Tensor:
        """The attacker's classifier input: log-probabilities, flattened features, or both."""
        if observe not in OBSERVATIONS:
            raise ValueError(f"observe must be one of {OBSERVATIONS}, got {observe!r}")
        parts = []
        if observe in ("logits", "both"):
            parts.append(F.log_softmax(self.logits, dim=1))
        if observe in ("features", "both"):
            parts.append(self.z.flatten(1))
        return torch.cat(parts, dim=1)


@torch.no_grad()
def observe_queries(split: SplitModel, images: torch.Tensor, *, batch_size: int = 512) -> CloudView:
    """Run ``images`` through the deployed split as clients would; return what the cloud sees.

    An edge that keeps a secret (a salted split's salt) draws one per image from its own source
    (seed torch's global generator for reproducibility); any other edge has no secrets.
    """
    device = DeviceSide(split.edge)
    zs, logits, salts = [], [], []
    for start in range(0, len(images), batch_size):
        z, salt = device.encode(images[start : start + batch_size])
        zs.append(z)
        logits.append(split.cloud(z))
        if salt is not None:
            salts.append(salt)
    return CloudView(torch.cat(zs), torch.cat(logits), torch.cat(salts) if salts else None)


class _Standardized(nn.Module):
    """An MLP on inputs standardised with the training set's per-feature mean and std."""

    # Buffers, registered in __init__.
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, inputs: torch.Tensor, classes: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("mean", inputs.mean(dim=0))
        self.register_buffer("std", inputs.std(dim=0).clamp_min(1e-6))
        self.net = nn.Sequential(
            nn.Linear(inputs.shape[1], hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


@dataclass(frozen=True)
class OutputPrivacy:
    """How well the cloud infers the label (and the salt) from what it sees; compare with chance."""

    observe: str
    label_accuracy: float  # the attacker's trained classifier on held-out queries
    argmax_accuracy: float  # the cloud simply reading its own argmax as the label
    label_chance: float
    salt_accuracy: float | None = None
    salt_chance: float | None = None

    def as_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


class OutputInferenceAttack:
    """Trains label (and salt) classifiers on what the cloud saw of labelled auxiliary queries."""

    def __init__(
        self,
        *,
        observe: Observation = "logits",
        epochs: int = 20,
        hidden: int = 256,
        lr: float = 1e-3,
        batch_size: int = 256,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        if observe not in OBSERVATIONS:
            raise ValueError(f"observe must be one of {OBSERVATIONS}, got {observe!r}")
        if epochs < 1 or hidden < 1:
            raise ValueError(f"epochs and hidden must be >= 1, got {epochs} and {hidden}")
        self.observe: Observation = observe
        self.epochs, self.hidden, self.lr, self.batch_size = epochs, hidden, lr, batch_size
        self.seed, self.progress = seed, progress
        self.label_head: nn.Module | None = None
        self.salt_head: nn.Module | None = None

    def fit(self, seen: CloudView, labels: torch.Tensor, *, num_salts: int | None = None) -> OutputInferenceAttack:
        inputs = seen.observation(self.observe)
        self.label_head = self._train(inputs, labels, int(seen.logits.shape[1]), "label")
        if seen.salts is not None and num_salts is not None:
            self.salt_head = self._train(inputs, seen.salts, num_salts, "salt")
        return self

    @torch.no_grad()
    def predict_labels(self, seen: CloudView) -> torch.Tensor:
        if self.label_head is None:
            raise RuntimeError("call fit() before predict_labels()")
        return self.label_head(seen.observation(self.observe)).argmax(dim=1)

    @torch.no_grad()
    def predict_salts(self, seen: CloudView) -> torch.Tensor | None:
        if self.salt_head is None:
            return None
        return self.salt_head(seen.observation(self.observe)).argmax(dim=1)

    def _train(self, inputs: torch.Tensor, targets: torch.Tensor, classes: int, what: str) -> nn.Module:
        with seeded(self.seed):
            head = _Standardized(inputs, classes, self.hidden)
        train_on_pairs(
            head,
            inputs,
            targets,
            loss=F.cross_entropy,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            description=f"output inference ({what} from {self.observe})",
            progress=self.progress,
        )
        return head


@torch.no_grad()
def observe_audit(split: SplitModel, *, aux: ImageSet, targets: ImageSet, seed: int) -> tuple[CloudView, CloudView]:
    """What the cloud sees of the attacker's ``aux`` queries and of the ``targets``, salts seeded by ``seed``."""
    with seeded(seed):  # the device's salts for the attacker's queries and the targets, reproducibly
        was_training = split.training
        split.eval()
        seen_aux = observe_queries(split, aux.images)
        seen_targets = observe_queries(split, targets.images)
        split.train(was_training)
    return seen_aux, seen_targets


def score_observation(
    seen: tuple[CloudView, CloudView],
    *,
    aux: ImageSet,
    targets: ImageSet,
    num_salts: int | None,
    observe: Observation = "logits",
    epochs: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> OutputPrivacy:
    """Fit :class:`OutputInferenceAttack` on the seen ``aux`` queries, score it on the seen ``targets``."""
    seen_aux, seen_targets = seen
    attack = OutputInferenceAttack(observe=observe, epochs=epochs, seed=seed, progress=progress)
    attack.fit(seen_aux, aux.labels, num_salts=num_salts)
    label_accuracy = float((attack.predict_labels(seen_targets) == targets.labels).float().mean())
    argmax_accuracy = float((seen_targets.logits.argmax(dim=1) == targets.labels).float().mean())
    salt_accuracy = None
    predicted_salts = attack.predict_salts(seen_targets)
    if predicted_salts is not None and seen_targets.salts is not None:
        salt_accuracy = float((predicted_salts == seen_targets.salts).float().mean())
    return OutputPrivacy(
        observe=observe,
        label_accuracy=label_accuracy,
        argmax_accuracy=argmax_accuracy,
        label_chance=1 / int(seen_targets.logits.shape[1]),
        salt_accuracy=salt_accuracy,
        salt_chance=None if num_salts is None else 1 / num_salts,
    )


def salt_count(split: SplitModel) -> int | None:
    """How many salts a salted split draws from (None: not salted)."""
    return DeviceSide(split.edge).num_secrets


def audit_output_privacy(
    split: SplitModel,
    *,
    aux: ImageSet,
    targets: ImageSet,
    observe: Observation = "logits",
    epochs: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> OutputPrivacy:
    """Fit :class:`OutputInferenceAttack` on ``aux`` queries, score it on ``targets`` (fresh salts)."""
    seen = observe_audit(split, aux=aux, targets=targets, seed=seed)
    return score_observation(
        seen,
        aux=aux,
        targets=targets,
        num_salts=salt_count(split),
        observe=observe,
        epochs=epochs,
        seed=seed,
        progress=progress,
    )

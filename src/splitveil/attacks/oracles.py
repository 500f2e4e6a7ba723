"""Oracles: what the answer alone gives away, the floor that leakage is judged above.

The cloud computes the answer, so it always learns it. A reconstruction as good as one made from the
answer alone says nothing about the defense; only the leakage *above* it does. Two oracles measure
that floor. They are :class:`~splitveil.attacks.base.Attack`\\ s like any other (declared
capabilities, ``fit``/``invert``), flagged ``oracle = True`` so that the bench never counts them as
the strongest attack:

* ``output-oracle`` (:class:`OutputOracle`): a decoder from the cloud's output for a query (what
  ``cloud(z)`` returns, salted or not) to the image, trained on auxiliary queries through the
  deployed split exactly as the inverse network is trained on features. Its SSIM is a split's
  ``oracle_ssim``.
* ``label-oracle`` (:class:`LabelOracle`): the metric-optimal reconstruction from the true label
  alone: per class, the image that maximises the mean SSIM against (a seeded sample of ``samples``)
  auxiliary images of that class, by gradient ascent from the class mean (the MSE-optimal image,
  which ``metric="mse"`` returns as it is).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from splitveil.attacks.base import Attack, AttackerView, Capability
from splitveil.attacks.inverse_network import _QueryDecoderAttack
from splitveil.attacks.registry import ATTACKS
from splitveil.metrics.image import ssim_fast
from splitveil.options import Positive, PositiveInt
from splitveil.progress import progress_bar


class AnswerDecoderAttack(_QueryDecoderAttack):
    """A decoder trained on what the cloud answers for auxiliary queries through the deployed edge
    (:class:`OutputOracle` reads the answer alone; the joint inverse network, the feature beside it).
    :meth:`answer` is ``cloud(z)`` as deployed."""

    requires = frozenset({Capability.EDGE_QUERIES, Capability.CLOUD_MODEL, Capability.AUX_DATA})

    def __init__(self, view: AttackerView, **options: Any) -> None:
        super().__init__(view, **options)
        self._cloud = view.cloud

    def query_images(self) -> torch.Tensor:
        return self.view.aux.images

    def answer(self, z: torch.Tensor) -> torch.Tensor:
        return cloud_answer(self._cloud, z)


@ATTACKS.register("output-oracle")
class OutputOracle(AnswerDecoderAttack):
    """Decode the image from the cloud's output alone (what the cloud learns by computing the answer).

    Trained like the inverse network (same options, same noise-aware training when the edge is
    stochastic), on ``cloud(edge(x_q))`` for the auxiliary images ``x_q``; ``invert(z)`` decodes
    ``cloud(z)``. Against a split whose cloud answers the same for every input it can only learn
    the auxiliary mean image.
    """

    oracle = True

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        return self.answer(z)


@torch.no_grad()
def cloud_answer(cloud: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """What the cloud answers for ``z`` as deployed (in eval mode; the caller's mode is restored)."""
    was_training = cloud.training
    cloud.eval()
    try:
        return cloud(z).detach()
    finally:
        cloud.train(was_training)


class ImageSearchAttack(Attack):
    """Options shared by the attacks that search for an image matching auxiliary images by SSIM
    (:class:`LabelOracle` per class, :class:`~splitveil.attacks.prior.PriorImageAttack` overall):
    ``metric`` ``"ssim"`` ascends the mean SSIM from the mean image, ``"mse"`` keeps the mean;
    ``steps`` and ``lr`` of the ascent; ``samples`` auxiliary images it is computed on."""

    def __init__(
        self,
        view: AttackerView,
        *,
        seed: int = 0,
        progress: bool = True,
        metric: Literal["ssim", "mse"] = "ssim",
        steps: PositiveInt = 100,
        lr: Positive = 0.02,
        samples: PositiveInt = 200,
    ) -> None:
        super().__init__(view)
        self.seed, self.progress, self.metric, self.steps, self.lr = seed, progress, metric, steps, lr
        self.samples = samples


@ATTACKS.register("label-oracle")
class LabelOracle(ImageSearchAttack):
    """The best reconstruction of each target from its true label alone: one image per class.

    ``invert(z)`` returns, for the i-th feature, the prototype of the i-th target label
    (:attr:`AttackerView.target_labels`): the features themselves are never read, so ``z`` must come
    in the order of those labels.
    """

    requires = frozenset({Capability.AUX_DATA, Capability.TARGET_LABELS})
    oracle = True

    def __init__(self, view: AttackerView, **options: Any) -> None:
        super().__init__(view, **options)
        self.prototypes: dict[int, torch.Tensor] = {}

    def fit(self) -> LabelOracle:
        aux = self.view.aux
        classes = [int(c) for c in aux.labels.unique()]
        generator = torch.Generator().manual_seed(self.seed)
        with progress_bar("label oracle", total=len(classes), enabled=self.progress) as advance:
            for label in classes:
                members = aux.images[aux.labels == label]
                mean = members.mean(dim=0, keepdim=True)
                if self.metric == "mse":
                    self.prototypes[label] = mean[0]
                else:
                    # The SSIM optimum of a class is a smooth function of its images: a few hundred
                    # of them pin it down, at a fraction of the cost of every one.
                    sample = members[torch.randperm(len(members), generator=generator)[: self.samples]]
                    self.prototypes[label] = ssim_optimal_image(mean, sample, steps=self.steps, lr=self.lr)[0]
                advance()
        return self

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        if not self.prototypes:
            raise RuntimeError("LabelOracle.invert() needs its prototypes: call fit() first")
        labels = self.view.target_labels
        if len(z) != len(labels):
            raise ValueError(
                f"the label oracle reconstructs the {len(labels)} targets whose labels it was given, "
                f"in order; got {len(z)} features"
            )
        missing = sorted({int(label) for label in labels} - set(self.prototypes))
        if missing:
            raise ValueError(f"no auxiliary image of class(es) {missing}: the label oracle has no prototype for them")
        return torch.stack([self.prototypes[int(label)] for label in labels])


def ssim_optimal_image(start: torch.Tensor, members: torch.Tensor, *, steps: int, lr: float) -> torch.Tensor:
    """The one image ``[1, C, H, W]`` with the highest mean SSIM against ``members``: gradient ascent
    from ``start``, kept in [0, 1]; ``start`` is returned when no step improved on it (the search
    never does worse than where it began, the mean image for its callers)."""
    image = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=lr)
    best, best_score = start.clone(), mean_ssim(start, members)
    for _ in range(steps):
        score = ssim_fast(image.expand_as(members), members).mean()
        if score.item() > best_score:
            best, best_score = image.detach().clone(), score.item()
        optimizer.zero_grad(set_to_none=True)
        (-score).backward()
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0, 1)
    return best


def mean_ssim(image: torch.Tensor, images: torch.Tensor) -> float:
    """The mean SSIM of one image ``[1, C, H, W]`` against each of ``images``."""
    return float(ssim_fast(image.expand_as(images), images).mean())

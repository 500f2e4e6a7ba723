"""The prior image: what a cloud with auxiliary data reconstructs knowing nothing of the input.

Every attacker holds auxiliary data, so it can always answer with the one image that best matches
inputs in general: the mean auxiliary image (MSE-optimal), or the image that maximises the mean SSIM
against them. It is a real attack, not an oracle: it uses no label and no output. As the strongest
attack is the maximum over attacks, it puts a floor under the strongest figure of every cell. Where a
defended split sends nothing usable (a model collapsed to a constant), a decoder trained on that
feature can settle on a worse fixed image; the prior image is then the attack that counts.
"""

from __future__ import annotations

from typing import Any

import torch

from splitveil.attacks.base import AttackerView, Capability
from splitveil.attacks.oracles import ImageSearchAttack, mean_ssim, ssim_optimal_image
from splitveil.attacks.registry import ATTACKS


@ATTACKS.register("prior-image")
class PriorImageAttack(ImageSearchAttack):
    """The same reconstruction for every feature: the auxiliary data's best single image.

    ``metric="mse"`` returns the mean auxiliary image; ``"ssim"`` (the default) ascends the mean SSIM
    from it over a seeded sample of ``samples`` auxiliary images, and keeps the result only if it
    beats the mean on ``samples`` other auxiliary images too.
    """

    requires = frozenset({Capability.AUX_DATA})

    def __init__(self, view: AttackerView, **options: Any) -> None:
        super().__init__(view, **options)
        self.image: torch.Tensor | None = None

    def fit(self) -> PriorImageAttack:
        images = self.view.aux.images
        mean = images.mean(dim=0, keepdim=True)
        if self.metric == "mse":
            self.image = mean
            return self
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(images), generator=generator)
        fitted, held_out = images[order[: self.samples]], images[order[self.samples : 2 * self.samples]]
        ascended = ssim_optimal_image(mean, fitted, steps=self.steps, lr=self.lr)
        # An image tuned to a sample can fit it and miss the rest: keep it only if it also beats the
        # mean on auxiliary images it was not tuned on (the mean, when none are left over).
        if len(held_out) and mean_ssim(ascended, held_out) > mean_ssim(mean, held_out):
            self.image = ascended
        else:
            self.image = mean
        return self

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        if self.image is None:
            raise RuntimeError("PriorImageAttack.invert() needs its image: call fit() first")
        return self.image.expand(len(z), *self.image.shape[1:]).clone()

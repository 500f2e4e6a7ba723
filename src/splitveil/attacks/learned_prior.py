"""Learned-prior attacks — GLASS-style (Li et al., 2023), scaled down to a small VAE on a CPU.

He et al.'s attacks search (rMLE) or regress (inverse network) in *pixel* space, where most
images that explain ``z`` look like nothing. These attacks first learn what images of the task
look like, from the auxiliary data alone, as a VAE (:mod:`~splitveil.attacks.generative`), and
then reconstruct inside the generator's range ``x = G(w)``:

* :class:`LearnedPriorAttack` (black-box: edge queries + aux data) trains an encoder ``E: z -> w``
  on the deployed edge's features of the aux images, and returns ``G(E(z))``.
* :class:`WhiteBoxLearnedPriorAttack` (edge weights + aux data) trains the same encoder on the
  given edge's features and then refines each ``w`` from ``w0 = E(z)`` with Adam on

      D(edge(G(w)), z) + prior_weight · ||w||² / latent_dim,   D(f, z) = ||f - z||² / ||z||²

  (``D`` is rMLE's relative feature error, so ``prior_weight`` means the same at every cut; the
  VAE's N(0, I) prior on ``w`` is its log-density up to a constant, and keeps ``w`` where the
  generator was trained). The loss is a sum over images, so a batch of targets is searched at once
  without their trajectories mixing; the ``w`` with the lowest feature error seen is kept per image
  (the prior term may pull the last step slightly off the best fit).

The encoder's loss is ``mse(E(z), mu(x)) + PIXEL_WEIGHT · mse(G(E(z)), x)``: the latent term
gives it the VAE's own posterior mean as a target, the pixel term (through the frozen generator,
as ``train_on_pairs``' fixed ``head``) judges it where the reconstruction is scored, because latent
directions the generator ignores should not cost as much as those that change the image.

The VAE and the encoder never see a target: the VAE learns from the aux images, the encoder from
aux images and their features. Queries go through the deployed (defended) edge, so the black-box
encoder is adaptive to a noise defense; the white-box attack runs the edge it is given (in eval
mode; noise layers sample in both modes) under a seeded, forked RNG, and takes gradients with
respect to ``w`` only, so the edge's parameters and ``.grad`` are never touched.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from splitveil.attacks.base import Attack, AttackerView, Capability
from splitveil.attacks.generative import VAE, build_latent_encoder, train_vae
from splitveil.attacks.inverse_network import CHUNK, is_stochastic
from splitveil.attacks.registry import ATTACKS
from splitveil.attacks.rmle import relative_feature_error
from splitveil.attacks.training import train_on_pairs
from splitveil.options import NonNegative, Positive, PositiveInt
from splitveil.progress import Advance, progress_bar
from splitveil.seeding import seeded

#: Weight of the encoder's pixel MSE against its latent MSE. At 10 the pixel term is most of the loss
#: once trained (0.13 of 0.17), the latent term still steers the start. Black-box MSE on 256
#: Fashion-MNIST test images, he-cnn relu22 (random weights), VAE 10 epochs, encoder 5 epochs:
#: weight 1 -> 0.0149, 10 -> 0.0140, 100 -> 0.0136 (flat; 10 keeps both terms in play).
PIXEL_WEIGHT = 10.0


class _LatentAndImage(nn.Module):
    """``w -> [w, G(w) flattened]``: lets one ``train_on_pairs`` target hold both ``mu(x)`` and ``x``."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.cat([w, self.generator(w).flatten(1)], dim=1)


class _LearnedPriorAttack(Attack):
    """Train a VAE on the aux images and an encoder ``z -> w`` on their :meth:`edge_features`."""

    def __init__(
        self,
        view: AttackerView,
        *,
        seed: int = 0,
        progress: bool = True,
        latent_dim: PositiveInt = 32,
        vae_epochs: PositiveInt = 8,
        encoder_epochs: PositiveInt = 5,
        batch_size: PositiveInt = 128,
        lr: Positive = 1e-3,
        width: PositiveInt = 32,
        beta: Positive = 0.5,
    ) -> None:
        super().__init__(view)
        self.seed, self.progress = seed, progress
        self.latent_dim, self.width, self.beta = latent_dim, width, beta
        self.vae_epochs, self.encoder_epochs, self.batch_size, self.lr = vae_epochs, encoder_epochs, batch_size, lr
        self.vae: VAE | None = None
        self.encoder: nn.Module | None = None
        self.vae_history: list[float] = []  # negative ELBO per image, per epoch
        self.encoder_history: list[float] = []  # the encoder's loss, per epoch

    @abstractmethod
    def edge_features(self, images: torch.Tensor) -> torch.Tensor:
        """The features the attacker obtains for its own ``images`` (queried or computed); a noisy edge
        draws from the global generator, which :meth:`fit` seeds and forks around every call."""

    def fit(self) -> _LearnedPriorAttack:
        images = self.view.aux.images
        with seeded(self.seed):  # module initialisation draws from the global generator
            vae = VAE(input_shape=self.view.input_shape, latent_dim=self.latent_dim, width=self.width)
        self.vae_history = train_vae(
            vae,
            images,
            epochs=self.vae_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            beta=self.beta,
            seed=self.seed,
            progress=self.progress,
        )
        vae.requires_grad_(False)
        with torch.no_grad():
            means = torch.cat([vae.encode(chunk)[0] for chunk in images.split(CHUNK)])
        with seeded(self.seed):  # noise defenses in the edge draw from the global generator
            features = self.edge_features(images)
            encoder = build_latent_encoder(features.shape[1:], self.latent_dim, width=self.width)
            self.stochastic_edge = is_stochastic(self.edge_features, images)
        # A stochastic edge (noise, dropout) is queried afresh for every mini-batch, as the inverse
        # network does: one fixed draw per image would be learned by heart.
        inputs, encode = (images, self.edge_features) if self.stochastic_edge else (features, None)
        self.encoder_history = train_on_pairs(
            encoder,
            inputs,
            torch.cat([means, images.flatten(1)], dim=1),
            loss=self._encoder_loss,
            head=_LatentAndImage(vae.generator),
            encode=encode,
            epochs=self.encoder_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            description="learned prior: encoder",
            progress=self.progress,
        )
        encoder.requires_grad_(False)
        self.vae, self.encoder = vae, encoder
        return self

    def _encoder_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        latent, pixels = prediction.split([self.latent_dim, prediction.shape[1] - self.latent_dim], dim=1)
        true_latent, true_pixels = target.split([self.latent_dim, target.shape[1] - self.latent_dim], dim=1)
        return F.mse_loss(latent, true_latent) + PIXEL_WEIGHT * F.mse_loss(pixels, true_pixels)

    def _fitted(self) -> tuple[VAE, nn.Module]:
        if self.vae is None or self.encoder is None:
            raise RuntimeError(f"{type(self).__name__}.invert() needs a trained VAE and encoder: call fit() first")
        return self.vae, self.encoder

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """The encoder's latent ``E(z)``, ``[N, latent_dim]``."""
        _, encoder = self._fitted()
        with torch.no_grad():
            return torch.cat([encoder(chunk) for chunk in z.detach().split(CHUNK)])

    def generate(self, w: torch.Tensor) -> torch.Tensor:
        """The generator's images ``G(w)`` clamped to [0, 1]."""
        vae, _ = self._fitted()
        with torch.no_grad():
            return torch.cat([vae.generator(chunk) for chunk in w.detach().split(CHUNK)]).clamp(0.0, 1.0)


@ATTACKS.register("learned-prior")
class LearnedPriorAttack(_LearnedPriorAttack):
    """Black-box: a VAE prior from aux data, an encoder from queried features; ``x̂ = G(E(z))``."""

    requires = frozenset({Capability.EDGE_QUERIES, Capability.AUX_DATA})

    def edge_features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.view.query(chunk) for chunk in images.split(CHUNK)])

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        return self.generate(self.encode(z))


@ATTACKS.register("learned-prior-whitebox")
class WhiteBoxLearnedPriorAttack(_LearnedPriorAttack):
    """White-box: the same prior and encoder, then a latent search ``argmin_w D(edge(G(w)), z) + prior``.

    ``prior_weight`` 1e-3: on Fashion-MNIST at he-cnn relu22 it costs a little on clean features
    (MSE 0.0128 vs 0.0113 at 0) and is the best of 0 / 1e-3 / 1e-2 / 1e-1 once ``z`` is noisy
    (0.0313 vs 0.0735 at 0, noise of std(z)): without it the search fits the noise off-manifold.
    """

    requires = frozenset({Capability.EDGE_WEIGHTS, Capability.AUX_DATA})

    def __init__(
        self,
        view: AttackerView,
        *,
        steps: PositiveInt = 300,
        search_lr: Positive = 0.05,
        prior_weight: NonNegative = 1e-3,
        **options: Any,
    ) -> None:
        super().__init__(view, **options)
        self.steps, self.search_lr, self.prior_weight = steps, search_lr, prior_weight
        self.search_history: list[float] = []  # mean feature error D over the last invert()'s targets, per step

    def edge_features(self, images: torch.Tensor) -> torch.Tensor:
        edge = self.view.edge
        was_training = edge.training
        try:
            edge.eval()
            with torch.no_grad():
                return torch.cat([edge(chunk).detach() for chunk in images.split(CHUNK)])
        finally:
            edge.train(was_training)

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        start = self.encode(z)
        edge = self.view.edge
        was_training = edge.training
        try:
            edge.eval()
            with seeded(self.seed):  # noise layers inside the edge draw from the global generator
                chunks = list(zip(z.detach().split(CHUNK), start.split(CHUNK), strict=True))
                total = self.steps * len(chunks)
                with progress_bar("learned prior: latent search", total=total, enabled=self.progress) as advance:
                    searched = [self._search(edge, target, w0, advance) for target, w0 in chunks]
        finally:
            edge.train(was_training)
        errors = torch.cat([error for _, error in searched], dim=1)
        self.search_history = errors.mean(dim=1).tolist()
        return self.generate(torch.cat([w for w, _ in searched]))

    def _search(
        self, edge: nn.Module, z: torch.Tensor, w0: torch.Tensor, advance: Advance
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The lowest-feature-error ``w`` per image over ``steps`` Adam steps from ``w0``, and the
        feature error ``D`` of every image at every step, ``[steps + 1, N]``."""
        vae, _ = self._fitted()
        w = w0.clone().requires_grad_(True)
        best_w, best_error = w0.clone(), torch.full((len(z),), float("inf"))
        optimizer = torch.optim.Adam([w], lr=self.search_lr)
        errors = []
        for step in range(self.steps + 1):  # the last pass only scores the final w
            error = relative_feature_error(edge(vae.generator(w)), z)
            with torch.no_grad():
                better = error < best_error
                best_error = torch.where(better, error, best_error)
                best_w[better] = w[better]
            errors.append(error.detach())
            if step == self.steps:
                break
            prior = w.square().sum(dim=1) / self.latent_dim
            loss = (error + self.prior_weight * prior).sum()
            (w.grad,) = torch.autograd.grad(loss, w)
            optimizer.step()
            advance(error=errors[-1].mean().item())
        return best_w, torch.stack(errors)

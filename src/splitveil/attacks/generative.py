"""The learned image prior of :mod:`~splitveil.attacks.learned_prior`: a small VAE and a ``z -> w`` encoder.

The VAE is trained on the attacker's auxiliary images only; its decoder ``G(w)`` is the generator
whose range is the attacker's idea of "what images of this task look like". The latent encoder
``E(z) ≈ w`` maps an edge feature to a point of that latent space.

VAE, for an input ``[C, H, W]`` and a latent of ``latent_dim``::

    encoder:   Conv(C -> width, 4, stride 2), ReLU, Conv(width -> 2·width, 4, stride 2), ReLU,
               Linear -> (mu, logvar)                       (each 4x4 stride-2 conv halves H and W)
    generator: Linear(latent -> 2·width · ⌈H/4⌉ · ⌈W/4⌉), ReLU, two ConvTranspose(4, stride 2),
               ReLU, bilinear resize to exactly H x W, 3x3 conv -> C, sigmoid

as in :mod:`~splitveil.attacks.decoder`, the resize sits before the last convolution so that odd
sizes (25x25) or ⌈28/4⌉·4 = 28 are handled alike and the last layer smooths the interpolation.
No BatchNorm: the generator then behaves identically in train and eval mode and per image, which
the white-box latent search (a batch of independent images) relies on.

Loss per image: ``BCE(G(w), x)`` summed over pixels ``+ beta · KL(q(w|x) || N(0, I))`` summed over
latent dimensions, averaged over the batch (``beta = 1`` is the ELBO of a Bernoulli likelihood).
The Bernoulli likelihood on [0, 1] grey levels is the usual choice for (Fashion-)MNIST: it weighs
pixel errors ~ 1/(p(1-p)) near black and white, which keeps the many saturated background pixels
sharp, where a unit-variance Gaussian (plain MSE) lets the KL term dominate and blurs. The attacks
default to ``beta = 0.5``: it trades a little of the prior's regularity for sharper reconstructions,
which is what an attacker is scored on. Fashion-MNIST, 12,000 aux images, 10 epochs, 256 test
images: reconstruction MSE ``G(mu(x))`` 0.0143 at beta 1, 0.0115 at beta 0.5; the posterior means
still have ``mean(mu²)`` 0.72 (0.51 at beta 1), inside N(0, I)'s bulk, so the white-box search's
prior ``||w||²`` still describes where the generator was trained.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from splitveil.attacks.decoder import ResizeTo
from splitveil.attacks.training import _batches
from splitveil.progress import progress_bar
from splitveil.seeding import seeded


class VAE(nn.Module):
    """Convolutional VAE over ``input_shape`` images: ``encode(x) -> (mu, logvar)``, ``generator(w) -> x``."""

    def __init__(self, *, input_shape: Sequence[int], latent_dim: int, width: int) -> None:
        super().__init__()
        channels, height, out_width = (int(s) for s in input_shape)
        if min(height, out_width) < 4:
            raise ValueError(f"the VAE needs images of at least 4x4 pixels, got {height}x{out_width}")
        self.latent_dim = latent_dim
        # A 4x4 stride-2 convolution with padding 1 maps n to floor(n / 2).
        code_h, code_w = height // 4, out_width // 4
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * width * code_h * code_w, 2 * latent_dim),
        )
        map_h, map_w = math.ceil(height / 4), math.ceil(out_width / 4)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["project"] = nn.Linear(latent_dim, 2 * width * map_h * map_w)
        layers["project_relu"] = nn.ReLU()
        layers["unflatten"] = nn.Unflatten(1, (2 * width, map_h, map_w))
        layers["up1"] = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
        layers["up1_relu"] = nn.ReLU()
        layers["up2"] = nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)
        layers["up2_relu"] = nn.ReLU()
        layers["resize"] = ResizeTo((height, out_width))
        layers["head"] = nn.Conv2d(width, channels, 3, padding=1)
        layers["sigmoid"] = nn.Sigmoid()
        self.generator = nn.Sequential(layers)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior ``q(w | x) = N(mu, exp(logvar))``: ``(mu, logvar)``, each ``[N, latent_dim]``."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior-mean reconstruction ``G(mu(x))`` (deterministic)."""
        return self.generator(self.encode(x)[0])


def vae_loss(
    reconstruction: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, *, beta: float
) -> torch.Tensor:
    """Negative ELBO per image, batch mean: ``sum BCE(G(w), x) + beta · KL(N(mu, e^logvar) || N(0, I))``."""
    bce = F.binary_cross_entropy(reconstruction, x, reduction="sum")
    kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum()
    return (bce + beta * kl) / len(x)


def train_vae(
    vae: VAE,
    images: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    beta: float,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Fit ``vae`` to ``images`` with Adam; returns the mean loss (negative ELBO per image) of every epoch.

    The shuffling and the reparametrisation noise ``w = mu + e^{logvar/2}·ε`` are drawn from one
    ``torch.Generator`` seeded from ``seed`` (inside a forked, seeded global RNG), so the result
    depends on ``seed`` alone. ``vae`` is left in eval mode.
    """
    if len(images) == 0:
        raise ValueError("train_vae needs at least one image")
    history: list[float] = []
    with seeded(seed):
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
        vae.train()
        steps_per_epoch = len(_batches(torch.arange(len(images)), batch_size))
        with progress_bar("learned prior: VAE", total=epochs * steps_per_epoch, enabled=progress) as advance:
            for _ in range(epochs):
                total = 0.0
                for index in _batches(torch.randperm(len(images), generator=generator), batch_size):
                    x = images[index]
                    mu, logvar = vae.encode(x)
                    noise = torch.randn(mu.shape, generator=generator)
                    w = mu + (0.5 * logvar).exp() * noise
                    value = vae_loss(vae.generator(w), x, mu, logvar, beta=beta)
                    optimizer.zero_grad(set_to_none=True)
                    value.backward()
                    optimizer.step()
                    total += value.item() * len(index)
                    advance(loss=value.item())
                history.append(total / len(images))
    vae.eval()
    return history


def build_latent_encoder(feature_shape: Sequence[int], latent_dim: int, *, width: int) -> nn.Sequential:
    """``E: z -> w`` for ``[N, *feature_shape]`` features, shaped by the feature.

    Both paths start with a BatchNorm that standardises the features, whose scale differs from cut
    to cut and grows with a noise defense. Spatial ``[C, h, w]`` features then go through 3x3
    convolutions (BN, ReLU), stride 2 while the map is larger than 4x4, so the trunk is cheap and
    keeps the layout of the map up to the flatten; then an MLP head (hidden ``8·width``) to the
    latent. Any other shape is flattened into a three-layer MLP.

    Example:
        >>> import torch
        >>> E = build_latent_encoder((32, 14, 14), 16, width=8)
        >>> tuple(E(torch.zeros(2, 32, 14, 14)).shape)
        (2, 16)
    """
    feature_shape = tuple(int(s) for s in feature_shape)
    hidden = 8 * width
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if len(feature_shape) == 3:
        channels, h, w = feature_shape
        layers["standardise"] = nn.BatchNorm2d(channels)
        stage = 0
        while stage == 0 or max(h, w) > 4:
            stage += 1
            stride = 2 if max(h, w) > 4 else 1
            out = width if stage == 1 else 2 * width
            layers[f"conv{stage}"] = nn.Conv2d(channels, out, 3, stride=stride, padding=1)
            layers[f"conv{stage}_bn"] = nn.BatchNorm2d(out)
            layers[f"conv{stage}_relu"] = nn.ReLU()
            # A 3x3 convolution with padding 1 and stride s maps n to ceil(n / s).
            channels, h, w = out, math.ceil(h / stride), math.ceil(w / stride)
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Linear(channels * h * w, hidden)
    else:
        features = math.prod(feature_shape)
        layers["flatten"] = nn.Flatten()
        layers["standardise"] = nn.BatchNorm1d(features)
        layers["fc0"] = nn.Linear(features, hidden)
        layers["fc0_relu"] = nn.ReLU()
        layers["fc1"] = nn.Linear(hidden, hidden)
    layers["fc1_relu"] = nn.ReLU()
    layers["latent"] = nn.Linear(hidden, latent_dim)
    return nn.Sequential(layers)

"""Black-box inverse network — He, Zhang and Lee, ACSAC 2019.

An attacker who can query the edge with inputs of its choice collects pairs ``(edge(x_q), x_q)``
and trains a decoder ``g`` (:func:`~splitveil.attacks.decoder.build_decoder`) to minimise a pixel
loss between ``g(edge(x_q))`` and ``x_q`` with Adam; the reconstruction of a target is ``g(z)``.

The paper's decoder is a few layers trained with MSE. Against defenses that train against an
inverter of their own (NoPeek, adversarial training, SiftFunnel) that decoder falls far short of what
a determined attacker gets, so the defaults here are the strong attacker ([ours], measured in
docs/BENCHMARKS.md):

* ``blocks`` residual blocks per resolution (depth to undo a scrambled feature);
* ``standardize``: the features are standardised per channel with the queries' own statistics;
* ``loss="ssim"``: ``MSE + (1 - SSIM)``, which optimises the structure the audit scores, not only
  the mean pixel (``loss="mse"`` is the paper's);
* a cosine learning-rate schedule over ``epochs``;
* ``precision``: ``"fp32"``, or ``"bf16"`` to train the decoder under bfloat16 autocast (about
  1.8x faster on CPUs with AVX-512 BF16; the decoder's weights and its reconstructions stay float32;
  measured against fp32 in docs/BENCHMARKS.md);
* noise-aware training: when the deployed edge is stochastic (noise, dropout: two queries of the
  same image differ), every mini-batch is queried afresh, so each epoch sees ``draws`` new draws per
  auxiliary image instead of one fixed draw the decoder would learn by heart;
* ``restarts``: against a feature a defense has scrambled (NoPeek 16 at relu22), the decoder's fit
  depends on its initialisation: the inverse network reached SSIM 0.291 at one training seed and
  0.507 at another. With ``restarts=k`` the attack holds a tenth of its query images out, trains k
  decoders from k initialisations on the rest, and keeps the one that reconstructs the held-out
  images best (``restart_scores``), as an attacker with data to spare would. ``restarts=1`` (the
  default) trains one decoder on every query image, as before.

Two query sets, two threat models:

* :class:`InverseNetworkAttack` queries with auxiliary images from the task's distribution (the
  attacker knows the task) — the strong variant;
* :class:`NoiseQueryInverseNetworkAttack` queries with uniform noise in [0, 1], needing no data at
  all — much weaker at deep cuts (12.8 vs 19.8 dB at ReLU22 on CIFAR-10 in the paper).

Queries go through the deployed (defended) edge, so a noise defense is sampled as at deployment
and the decoder is trained adaptively, on defended features.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from splitveil.attacks.base import Attack, AttackerView, Capability
from splitveil.attacks.decoder import Standardize, build_decoder
from splitveil.attacks.registry import ATTACKS
from splitveil.attacks.training import Loss, Precision, train_on_pairs
from splitveil.errors import ConfigError
from splitveil.metrics.image import ssim_fast
from splitveil.options import NonNegativeInt, Positive, PositiveInt
from splitveil.seeding import seeded

#: Images sent to the edge (and decoded) per call, to bound memory on large query sets.
CHUNK = 256
ReconstructionLoss = Literal["mse", "ssim"]
RECONSTRUCTION_LOSSES: tuple[ReconstructionLoss, ...] = ("mse", "ssim")


def reconstruction_loss(name: ReconstructionLoss) -> Loss:
    """The decoder's training loss: ``"mse"`` (pixel L2) or ``"ssim"`` (``MSE + 1 - SSIM``; the MSE
    term keeps gradients in flat regions, where SSIM's constants make it nearly flat)."""
    if name not in RECONSTRUCTION_LOSSES:
        raise ConfigError(
            f"option loss={name!r} is invalid; choose one of: {', '.join(map(repr, RECONSTRUCTION_LOSSES))}"
        )
    if name == "mse":
        return F.mse_loss
    return lambda x_hat, x: F.mse_loss(x_hat, x) + 1 - ssim_fast(x_hat, x).mean()


#: Share of the query images an attack holds out of training to choose between decoders.
HOLDOUT = 0.1


def held_out_split(images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` split, by a permutation seeded from ``seed``, into training and a held-out tenth."""
    if len(images) < 2:
        raise ValueError("choosing between decoders needs at least 2 query images (one is held out)")
    held = max(1, round(len(images) * HOLDOUT))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[order[held:]], images[order[:held]]


def _held_out_ssim(decoder: nn.Module, observed: torch.Tensor, images: torch.Tensor) -> float:
    decoder.eval()
    with torch.no_grad():
        reconstructed = torch.cat([decoder(chunk) for chunk in observed.split(CHUNK)])
    return ssim_fast(reconstructed, images).mean().item()


def is_stochastic(query: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> bool:
    """Whether two queries of the same (first 16) images differ: the edge samples noise or dropout."""
    probe = images[:16]
    return not torch.equal(query(probe), query(probe))


class _QueryDecoderAttack(Attack):
    """Query the edge with :meth:`query_images`, train a decoder on the pairs, decode ``z``."""

    def __init__(
        self,
        view: AttackerView,
        *,
        seed: int = 0,
        progress: bool = True,
        epochs: PositiveInt = 20,
        batch_size: PositiveInt = 128,
        lr: Positive = 2e-3,
        width: PositiveInt = 64,
        blocks: NonNegativeInt = 2,
        loss: ReconstructionLoss = "ssim",
        standardize: bool = True,
        draws: PositiveInt = 1,
        schedule: Literal["cosine", "constant"] = "cosine",
        precision: Precision = "fp32",
        restarts: PositiveInt = 1,
    ) -> None:
        super().__init__(view)
        self.schedule, self.precision = schedule, precision
        self.loss = reconstruction_loss(loss)
        self.seed, self.progress = seed, progress
        self.epochs, self.batch_size, self.lr, self.width = epochs, batch_size, lr, width
        self.blocks, self.standardize, self.draws, self.restarts = blocks, standardize, draws, restarts
        self.decoder: nn.Module | None = None
        self.stochastic_edge = False
        self.history: list[float] = []  # mean training loss per epoch
        #: Mean SSIM on the held-out query images of each restart's decoder (empty for one restart).
        self.restart_scores: list[float] = []

    @abstractmethod
    def query_images(self) -> torch.Tensor:
        """The attacker's chosen inputs, ``[Q, *input_shape]`` in [0, 1]."""

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        """What the decoder reads of a transmitted feature ``z`` (default: ``z`` itself)."""
        return z

    def build_decoder(self, observed_shape: torch.Size, scale: Standardize | None) -> nn.Module:
        """The decoder from what :meth:`observe` returns (``observed_shape`` per sample) to images."""
        return build_decoder(observed_shape, self.view.input_shape, width=self.width, blocks=self.blocks, scale=scale)

    def _query(self, images: torch.Tensor) -> torch.Tensor:
        return self.observe(self.view.query(images))

    def fit(self) -> _QueryDecoderAttack:
        images = self.query_images()
        if self.restarts == 1:
            self.decoder, self.history = self._trained_decoder(images, self.seed)
            return self
        training, held_out = held_out_split(images, self.seed)
        candidates = [self._trained_decoder(training, self.seed + restart) for restart in range(self.restarts)]
        with seeded(self.seed):  # a stochastic edge draws the held-out queries' noise reproducibly
            observed = torch.cat([self._query(chunk) for chunk in held_out.split(CHUNK)])
        self.restart_scores = [_held_out_ssim(decoder, observed, held_out) for decoder, _ in candidates]
        best = max(range(self.restarts), key=self.restart_scores.__getitem__)
        self.decoder, self.history = candidates[best]
        return self

    def _trained_decoder(self, images: torch.Tensor, seed: int) -> tuple[nn.Module, list[float]]:
        """A decoder trained on the queries of ``images``, initialised and shuffled from ``seed``."""
        with seeded(seed):  # noise defenses in the edge draw from the global generator
            self.stochastic_edge = is_stochastic(self.view.query, images)
            features = torch.cat([self._query(chunk) for chunk in images.split(CHUNK)])
            scale = Standardize.fitted(features) if self.standardize else None
            decoder = self.build_decoder(features.shape[1:], scale)
        # A stochastic edge is queried afresh for every mini-batch (train_on_pairs draws it inside its
        # own seeded generator state); a deterministic one once, up front.
        inputs, encode = (images, self._query) if self.stochastic_edge else (features, None)
        history = train_on_pairs(
            decoder,
            inputs,
            images,
            loss=self.loss,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=seed,
            encode=encode,
            repeats=self.draws if self.stochastic_edge else 1,
            schedule=self.schedule,
            precision=self.precision,
            description=f"{type(self).__name__} decoder",
            progress=self.progress,
        )
        return decoder, history

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            raise RuntimeError(f"{type(self).__name__}.invert() needs a trained decoder: call fit() first")
        self.decoder.eval()
        with torch.no_grad():
            return torch.cat([self.decoder(self.observe(chunk)) for chunk in z.detach().split(CHUNK)])


@ATTACKS.register("inverse-network")
class InverseNetworkAttack(_QueryDecoderAttack):
    """Inverse network trained on the edge's features of the attacker's auxiliary images."""

    requires = frozenset({Capability.EDGE_QUERIES, Capability.AUX_DATA})

    def query_images(self) -> torch.Tensor:
        return self.view.aux.images


@ATTACKS.register("inverse-network-noise")
class NoiseQueryInverseNetworkAttack(_QueryDecoderAttack):
    """Inverse network trained on the edge's features of ``num_queries`` uniform-noise images."""

    requires = frozenset({Capability.EDGE_QUERIES})

    def __init__(self, view: AttackerView, *, num_queries: PositiveInt = 4096, **options: Any) -> None:
        super().__init__(view, **options)
        self.num_queries = num_queries

    def query_images(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return torch.rand((self.num_queries, *self.view.input_shape), generator=generator)

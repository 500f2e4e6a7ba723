"""Defenses against input reconstruction from the transmitted feature.

A :class:`Defense` wraps the split it is given (``apply``) and may add loss terms and training hooks
to :func:`splitveil.train.fit`; ``strength`` is its one knob and strength 0 is the identity.

Registered defenses, by name -> class: strength:

- ``none`` -> :class:`NoDefense`: ignored (the undefended split)
- ``gaussian-noise`` -> :class:`GaussianNoiseDefense`: σ of N(0, σ²) on ``z`` or ``x`` (He et al.)
- ``laplace-noise`` -> :class:`LaplaceNoiseDefense`: scale b of Laplace(0, b) on ``z`` or ``x``
- ``bounded-noise`` -> :class:`BoundedNoiseDefense`: noise std relative to a per-sample bound on the
  feature's scale, which training cannot inflate (trains noise-aware)
- ``feature-dropout`` -> :class:`FeatureDropoutDefense`: drop probability p ∈ [0, 1) on ``z``
- ``nopeek`` -> :class:`NoPeekDefense`: weight of ``dCor(x, z)`` in the loss (trains)
- ``adversarial`` -> :class:`AdversarialDefense`: weight β of ``−L_adv`` against a jointly trained
  inverter (PATROL's adversarial reconstruction training; trains)
- ``patrol`` -> :class:`PatrolDefense`: weight of PATROL's privacy terms (block-wise Lipschitz and
  adversarial reconstruction) next to its channel masks, which are pruned to a FLOPs budget (trains)
- ``siftfunnel`` -> :class:`SiftFunnelDefense`: scale of SiftFunnel's terms (smoothed-label KL, dCor,
  channel correlation, L1 of ``z``), optionally with a funnel edge narrowing ``z`` (trains)
- ``pripro`` -> :class:`PriProDefense`: multiplier of a self-attention noise scale σ(z) on ``z``,
  trained against an inverter under a noise budget (trains)
- ``stack`` -> :class:`StackDefense`: several defenses deployed together, in order; multiplies each
  layer's strength (trains when a layer does)
- ``salted`` -> :class:`SaltedDefense`: width of the salt injection of Salted DNNs, which protects
  the *output*: a client-side salt relabels the classes the cloud computes (trains)

Build one with ``create_defense(name, strength=..., **options)``; an unknown option is a
:class:`~splitveil.errors.ConfigError` listing the valid ones (:func:`defense_options`).
"""

from __future__ import annotations

from splitveil.blocks.funnel import FunnelBlock, SpatialAttention, SqueezeExcitation, UpProjection
from splitveil.blocks.pruning import ChannelMask

# The defense modules are imported for their side effect too: each registers itself in DEFENSES.
from splitveil.defenses.adversarial import AdversarialDefense, Standardize
from splitveil.defenses.base import Defense, NoDefense, wrap_edge
from splitveil.defenses.bounded_noise import BoundedNoiseDefense
from splitveil.defenses.dropout import FeatureDropout, FeatureDropoutDefense
from splitveil.defenses.lipschitz import blockwise_lipschitz, local_lipschitz
from splitveil.defenses.noise import GaussianNoise, GaussianNoiseDefense, LaplaceNoise, LaplaceNoiseDefense
from splitveil.defenses.nopeek import NoPeekDefense, distance_correlation
from splitveil.defenses.patrol import PatrolDefense
from splitveil.defenses.pripro import AttentionNoise, PriProDefense
from splitveil.defenses.registry import DEFENSES, create_defense, defense_options, register_defense
from splitveil.defenses.salted import SaltedDefense, salt_points
from splitveil.defenses.siftfunnel import SiftFunnelDefense, channel_correlation
from splitveil.defenses.stack import StackDefense

__all__ = [
    "DEFENSES",
    "AdversarialDefense",
    "AttentionNoise",
    "BoundedNoiseDefense",
    "ChannelMask",
    "Defense",
    "FeatureDropout",
    "FeatureDropoutDefense",
    "FunnelBlock",
    "GaussianNoise",
    "GaussianNoiseDefense",
    "LaplaceNoise",
    "LaplaceNoiseDefense",
    "NoDefense",
    "NoPeekDefense",
    "PatrolDefense",
    "PriProDefense",
    "SaltedDefense",
    "SiftFunnelDefense",
    "StackDefense",
    "SpatialAttention",
    "SqueezeExcitation",
    "Standardize",
    "UpProjection",
    "blockwise_lipschitz",
    "channel_correlation",
    "create_defense",
    "defense_options",
    "distance_correlation",
    "local_lipschitz",
    "register_defense",
    "salt_points",
    "wrap_edge",
]

"""Model inversion attacks on split inference: a curious cloud reconstructing ``x`` from ``z``.

Each attack declares the capabilities it ``requires`` (:class:`Capability`) and is built against an
:class:`AttackerView` that grants exactly those; ``fit()`` prepares it, ``invert(z)`` reconstructs.

Registered attacks (He, Zhang and Lee, ACSAC 2019, unless noted), by name -> class: what it requires:

- ``rmle`` -> :class:`WhiteBoxRMLE`: edge weights
- ``inverse-network`` -> :class:`InverseNetworkAttack`: edge queries, auxiliary data
- ``inverse-network-noise`` -> :class:`NoiseQueryInverseNetworkAttack`: edge queries
- ``query-free`` -> :class:`QueryFreeAttack`: cloud model, edge architecture, auxiliary data
- ``learned-prior`` -> :class:`LearnedPriorAttack`: edge queries, auxiliary data (a VAE prior, GLASS-style)
- ``learned-prior-whitebox`` -> :class:`WhiteBoxLearnedPriorAttack`: edge weights, auxiliary data
- ``joint-inverse-network`` -> :class:`JointInverseNetworkAttack`: edge queries, cloud model,
  auxiliary data (an inverse network reading the feature and the cloud's answer to it)
- ``output-oracle`` -> :class:`OutputOracle`: edge queries, cloud model, auxiliary data (an oracle:
  what the cloud's answer alone reconstructs, the floor leakage is judged above)
- ``label-oracle`` -> :class:`LabelOracle`: auxiliary data, target labels (an oracle: the true label alone)
- ``prior-image`` -> :class:`PriorImageAttack`: auxiliary data (the best single image knowing nothing
  of the input: a floor under every cell's strongest attack)

Build one with ``create_attack(name, view, seed=..., progress=..., **options)``; an unknown option
is a :class:`~splitveil.errors.ConfigError` listing the valid ones (:func:`attack_options`).
"""

from __future__ import annotations

# The attack modules are imported for their side effect too: each registers itself in ATTACKS.
from splitveil.attacks.base import Attack, AttackerView, Capability
from splitveil.attacks.decoder import build_decoder
from splitveil.attacks.inverse_network import InverseNetworkAttack, NoiseQueryInverseNetworkAttack
from splitveil.attacks.joint import JointInverseNetworkAttack
from splitveil.attacks.learned_prior import LearnedPriorAttack, WhiteBoxLearnedPriorAttack
from splitveil.attacks.oracles import LabelOracle, OutputOracle
from splitveil.attacks.prior import PriorImageAttack
from splitveil.attacks.query_free import QueryFreeAttack
from splitveil.attacks.registry import ATTACKS, attack_options, create_attack
from splitveil.attacks.rmle import WhiteBoxRMLE, rmle_invert

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackerView",
    "Capability",
    "InverseNetworkAttack",
    "JointInverseNetworkAttack",
    "LabelOracle",
    "LearnedPriorAttack",
    "NoiseQueryInverseNetworkAttack",
    "OutputOracle",
    "PriorImageAttack",
    "QueryFreeAttack",
    "WhiteBoxLearnedPriorAttack",
    "WhiteBoxRMLE",
    "attack_options",
    "build_decoder",
    "create_attack",
    "rmle_invert",
]

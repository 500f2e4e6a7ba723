"""The joint inverse network: decode the image from the feature *and* the cloud's answer to it.

A curious cloud holds both: the feature ``z`` it receives and the output ``cloud(z)`` it computes.
The inverse network reads only ``z`` and the output oracle only ``cloud(z)``; a defense that
scrambles ``z`` against a decoder of its own (NoPeek, adversarial training) can leave the plain
inverse network *below* the oracle, although the oracle's input is a function of ``z``: the cloud
half has learned, on the whole training set, the decoding that the attacker's decoder must relearn
from its auxiliary data. This attack trains one decoder on ``(z, cloud(z))`` pairs
(:func:`~splitveil.attacks.decoder.build_joint_decoder`), with the inverse network's options and
noise-aware training, so that its figure is never held back to what either half alone gives.

It is an attack, not an oracle: it uses only what the cloud has (queries through the deployed edge,
its own half, auxiliary data), and it is counted among the attacks whose strongest sets the
verdict.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from splitveil.attacks.decoder import Standardize, build_joint_decoder
from splitveil.attacks.oracles import AnswerDecoderAttack
from splitveil.attacks.registry import ATTACKS


@ATTACKS.register("joint-inverse-network")
class JointInverseNetworkAttack(AnswerDecoderAttack):
    """Inverse network reading ``z`` flattened and followed by ``cloud(z)``: ``observe(z)`` is that
    joint vector ``[N, F + K]``; the decoder unpacks it (same options as the inverse network)."""

    def observe(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z.flatten(1), self.answer(z).flatten(1)], dim=1)

    def build_decoder(self, observed_shape: torch.Size, scale: Standardize | None) -> nn.Module:
        feature_shape = self.view.query(self.view.aux.images[:1]).shape[1:]
        answer_size = observed_shape[0] - math.prod(feature_shape)
        return build_joint_decoder(
            feature_shape, answer_size, self.view.input_shape, width=self.width, blocks=self.blocks, scale=scale
        )

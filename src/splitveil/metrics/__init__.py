"""How much an attacker learns about the input: reconstruction quality, mutual information, PA.

- :mod:`~splitveil.metrics.image`: ``mse``, ``psnr``, ``ssim`` of reconstructions ``x_hat`` vs ``x``
  (registered in ``METRICS`` with the direction that is better);
- :mod:`~splitveil.metrics.mine`: ``estimate_mi``, I(x; z) by MINE;
- :mod:`~splitveil.metrics.privacy_accuracy`: ``privacy_accuracy`` of reconstructions under an
  independent evaluation classifier, and ``train_evaluation_classifier`` to build one;
- :mod:`~splitveil.metrics.reid`: ``reidentification`` of reconstructions among same-class
  candidates (``candidate_sets``), with ``classifier_embedding`` as one of its distances;
- :mod:`~splitveil.metrics.privacy_index`: ``privacy_index`` (PI), the privacy a defense gains,
  measured by PA, discounted by the accuracy it costs, in [0, 1].

Importing this package is light: torchmetrics and the training loop load on first use.
"""

from __future__ import annotations

from splitveil.metrics.image import mse, psnr, ssim
from splitveil.metrics.mine import MINE, MIEstimate, estimate_mi
from splitveil.metrics.privacy_accuracy import privacy_accuracy, train_evaluation_classifier
from splitveil.metrics.privacy_index import privacy_index
from splitveil.metrics.registry import METRICS, MetricInfo
from splitveil.metrics.reid import Reidentification, candidate_sets, classifier_embedding, reidentification

__all__ = [
    "METRICS",
    "MINE",
    "MIEstimate",
    "MetricInfo",
    "Reidentification",
    "candidate_sets",
    "classifier_embedding",
    "estimate_mi",
    "mse",
    "privacy_accuracy",
    "privacy_index",
    "psnr",
    "reidentification",
    "ssim",
    "train_evaluation_classifier",
]

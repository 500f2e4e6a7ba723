"""NoPeek — distance correlation between the input and the transmitted feature as a regulariser.

Vepakomma et al. (NoPeek, 2020) train the split with ``L_task + w · dCor(x, z)``: minimising the
distance correlation between the inputs and the features of a batch removes the (linear and
non-linear) statistical dependence a curious cloud would exploit to reconstruct ``x``.

Sample distance correlation (Székely, Rizzo and Bakirov, 2007), for a batch of n flattened pairs:

    a_ij = ‖x_i − x_j‖,   A = a − row means − column means + grand mean   (double centring)
    b_ij = ‖z_i − z_j‖,   B likewise
    dCov²(x, z) = mean(A ∘ B)
    dCor(x, z)  = sqrt( dCov²(x, z) / sqrt(dCov²(x, x) · dCov²(z, z)) )  ∈ [0, 1]

These are the V-statistics (biased: independent finite samples give a small positive dCor that
shrinks as n grows). The defense's strength is the weight w.
"""

from __future__ import annotations

import torch

from splitveil.defenses.base import Defense
from splitveil.defenses.registry import register_defense
from splitveil.train import Batch

#: Floor of the denominator and of the squared correlation, so that a constant batch (all distances
#: zero, e.g. dead ReLUs) gives dCor = sqrt(eps) ≈ 1e-6 with zero, not NaN, gradients.
EPS = 1e-12


def _centred_distances(samples: torch.Tensor) -> torch.Tensor:
    """The double-centred matrix of pairwise Euclidean distances between the rows of ``samples``."""
    # The non-matmul path computes each distance directly: exact zeros on the diagonal (so the
    # gradient there is 0, not NaN) and no cancellation error when points are close.
    distances = torch.cdist(samples, samples, compute_mode="donot_use_mm_for_euclid_dist")
    return distances - distances.mean(dim=0, keepdim=True) - distances.mean(dim=1, keepdim=True) + distances.mean()


def distance_correlation(x: torch.Tensor, z: torch.Tensor, *, eps: float = EPS) -> torch.Tensor:
    """Sample distance correlation between the rows of ``x`` and of ``z`` (each flattened), in [0, 1].

    Differentiable in both arguments. ``x`` and ``z`` must have the same batch size; the other
    dimensions are flattened and may differ. Computed in the inputs' common dtype.

    Example:
        >>> x = torch.rand(16, 1, 4, 4)
        >>> round(distance_correlation(x, 3 * x + 1).item(), 4)
        1.0
    """
    if x.shape[0] != z.shape[0]:
        raise ValueError(f"distance_correlation needs equal batch sizes, got {x.shape[0]} and {z.shape[0]}")
    dtype = torch.promote_types(x.dtype, z.dtype)
    a = _centred_distances(x.reshape(x.shape[0], -1).to(dtype))
    b = _centred_distances(z.reshape(z.shape[0], -1).to(dtype))
    dcov_xz = (a * b).mean()
    # clamp (not + eps) has zero gradient below the floor, so sqrt's infinite slope at 0 is never hit.
    denominator = torch.sqrt(((a * a).mean() * (b * b).mean()).clamp_min(eps))
    return torch.sqrt((dcov_xz / denominator).clamp(min=eps, max=1.0))


@register_defense
class NoPeekDefense(Defense):
    """Adds ``strength · dCor(x, z)`` to the task loss; the deployed split is unchanged."""

    name = "nopeek"
    requires_training = True

    def loss_terms(self, batch: Batch, z: torch.Tensor | None, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if z is None:
            raise ValueError("nopeek needs the transmitted feature z: train a SplitModel, not the whole model")
        if self.strength == 0:
            # Exactly zero, and dCor is not even computed (it would only add 0 · gradient).
            return {"nopeek": logits.new_zeros(())}
        return {"nopeek": self.strength * distance_correlation(batch.x, z)}

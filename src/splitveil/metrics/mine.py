"""Mutual information I(x; z) between the input and the transmitted feature, by MINE.

MINE (Belghazi et al., 2018) trains a statistics network ``T(x, z)`` to maximise the
Donsker-Varadhan lower bound::

    I(x; z) >= E_P[T(x, z)] - log E_{P_x (x) P_z}[exp T(x, z')]

where ``P`` is the joint distribution (pairs as observed) and samples of the product of marginals
are made by pairing each ``x`` with the ``z`` of another row. The minibatch gradient of the
log-denominator is biased (the log of a minibatch mean); following the paper, its denominator is
replaced by an exponential moving average over steps (rate ``ema_rate``), which removes that bias.

The reported value is the bound of the trained network on *held-out* pairs never used in training:
a network that memorises its training pairs inflates the training bound, not the held-out one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from splitveil.seeding import seeded

# Marginal pairs for the final bound: each x is paired with the z of this many other rows.
_EVAL_SHIFTS = 16
# Dimensions whose training-row std is below this fraction of the median std are treated as constant
# and dropped: a ReLU unit dead on every training row but alive on a held-out row would otherwise be
# divided by ~0, feed T an enormous input, and make the held-out bound explode (seen at deep cuts).
_CONSTANT_FRACTION = 1e-3


@dataclass(frozen=True)
class MIEstimate:
    """A MINE estimate of I(x; z).

    ``nats`` is the Donsker-Varadhan bound on the held-out pairs; being a finite-sample estimate of a
    lower bound it can be slightly negative when x and z are independent. ``train_nats`` is the same
    bound on the training pairs (much larger than ``nats`` means the network overfitted).
    ``history`` holds the minibatch bound of every training step. ``x_dim`` and ``z_dim`` are the
    dimensions the network saw, after any random projection.
    """

    nats: float
    train_nats: float
    history: tuple[float, ...]
    eval_samples: int
    x_dim: int
    z_dim: int

    @property
    def bits(self) -> float:
        """The estimate in bits: ``nats / ln 2``."""
        return self.nats / math.log(2.0)


def donsker_varadhan(t_joint: torch.Tensor, t_marginal: torch.Tensor) -> torch.Tensor:
    """The DV bound ``mean(t_joint) - log mean(exp(t_marginal))``, computed stably.

    Example:
        >>> float(donsker_varadhan(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0])))
        1.0
    """
    log_mean_exp = torch.logsumexp(t_marginal.reshape(-1), dim=0) - math.log(t_marginal.numel())
    return t_joint.mean() - log_mean_exp


class MINE(nn.Module):
    """The statistics network ``T(x, z)``: an MLP on ``concat(x, z)``, plus its training objective.

    ``forward(x, z)`` returns ``T`` per row (shape ``[N]``). ``training_loss`` returns the loss to
    minimise (the negated, bias-corrected DV objective) and the plain minibatch DV bound; it updates
    the moving average of the denominator, so call it once per optimiser step.
    """

    log_ema: torch.Tensor

    def __init__(self, x_dim: int, z_dim: int, *, hidden: int = 128, ema_rate: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < ema_rate <= 1.0:
            raise ValueError(f"ema_rate must be in (0, 1], got {ema_rate}")
        self.ema_rate = ema_rate
        self.net = nn.Sequential(
            nn.Linear(x_dim + z_dim, hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Linear(hidden, 1),
        )
        # log of the moving average of mean(exp T) on marginal pairs; NaN until the first step.
        self.register_buffer("log_ema", torch.tensor(float("nan")))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, z], dim=1)).squeeze(1)

    def training_loss(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, dv_bound)`` on a minibatch of joint pairs whose rows are in random order.

        Marginal pairs are made by rolling ``z`` one row: for a randomly drawn batch without
        repeated rows this is a shuffle that never pairs a row with itself.
        """
        t_joint = self(x, z)
        t_marginal = self(x, z.roll(1, dims=0))
        log_mean_exp = torch.logsumexp(t_marginal, dim=0) - math.log(t_marginal.numel())
        with torch.no_grad():
            current = log_mean_exp.detach()
            rate = self.ema_rate
            if torch.isnan(self.log_ema) or rate == 1.0:
                self.log_ema.copy_(current)
            else:  # log((1 - r) * ema + r * current), in log space so exp(T) cannot overflow
                self.log_ema.copy_(torch.logaddexp(self.log_ema + math.log1p(-rate), current + math.log(rate)))
        # d/dθ exp(lme - log_ema) = E[∇T e^T] / ema: the paper's bias-corrected gradient of log E[e^T].
        corrected = torch.exp(log_mean_exp - self.log_ema)
        loss = -(t_joint.mean() - corrected)
        return loss, (t_joint.mean() - log_mean_exp).detach()

    @torch.no_grad()
    def lower_bound(self, x: torch.Tensor, z: torch.Tensor, *, generator: torch.Generator) -> float:
        """The DV bound on all rows of ``(x, z)``, each x also paired with up to 16 other rows' z."""
        n = x.shape[0]
        order = torch.randperm(n, generator=generator)
        x, z = x[order], z[order]
        t_joint = self(x, z)
        # Cyclic shifts of a random order: every marginal pair is (x_i, z_j) with i != j.
        t_marginal = torch.cat([self(x, z.roll(shift, dims=0)) for shift in range(1, min(_EVAL_SHIFTS, n - 1) + 1)])
        return float(donsker_varadhan(t_joint, t_marginal))


def estimate_mi(
    x: torch.Tensor,
    z: torch.Tensor,
    *,
    steps: int = 1000,
    batch_size: int = 512,
    lr: float = 1e-3,
    hidden: int = 128,
    ema_rate: float = 0.01,
    holdout: float = 0.2,
    max_dim: int | None = 128,
    seed: int = 0,
) -> MIEstimate:
    """Estimate I(x; z) in nats from ``N`` paired samples (row ``i`` of ``x`` goes with row ``i`` of ``z``).

    Both are flattened to vectors per row and standardised per dimension (an invertible map per
    variable, which leaves the MI unchanged). If a side has more than ``max_dim`` dimensions it is
    multiplied by a fixed Gaussian random matrix (drawn from ``seed``) down to ``max_dim``
    dimensions: this keeps 784-pixel images and 10k-dimensional features tractable, and by the data
    processing inequality I(Px; Qz) <= I(x; z), so the result stays a lower bound of the true MI.
    ``max_dim=None`` disables the projection.

    A fraction ``holdout`` of the rows is set aside; MINE trains on the rest for ``steps`` steps of
    Adam (``lr``, annealed to zero on a cosine schedule) on minibatches of ``batch_size`` rows, and
    the estimate is the DV bound of the final network on the held-out rows. The network runs on
    ``x``'s device. All randomness comes from ``seed``; the caller's global RNG is left untouched.

    The defaults suit a few thousand image/feature pairs, where MINE overfits easily (compare
    ``train_nats`` with ``nats``); for a handful of dimensions, ``lr=3e-3`` and ``hidden=64``
    converge in fewer steps.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(500, 2, generator=g)
        >>> z = x + 0.1 * torch.randn(500, 2, generator=g)  # true I(x; z) = ln(101) = 4.6 nats
        >>> estimate = estimate_mi(x, z, steps=100, lr=1e-2, hidden=32)
        >>> estimate.nats > 2.0
        True
    """
    x2 = x.detach().flatten(1).float()
    z2 = z.detach().flatten(1).float().to(x2.device)
    n = x2.shape[0]
    if z2.shape[0] != n:
        raise ValueError(f"x and z must have the same number of rows, got {n} and {z2.shape[0]}")
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    n_eval = round(holdout * n)
    if n_eval < 2 or n - n_eval < 2:
        raise ValueError(f"{n} samples are too few to train MINE and hold out {holdout:.0%} of them")
    if steps < 1 or batch_size < 2:
        raise ValueError(f"need steps >= 1 and batch_size >= 2, got {steps} and {batch_size}")
    if max_dim is not None and max_dim < 1:
        raise ValueError(f"max_dim must be a positive integer or None, got {max_dim}")
    if not (torch.isfinite(x2).all() and torch.isfinite(z2).all()):
        raise ValueError("x and z must be finite")

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    train_rows, eval_rows = order[n_eval:], order[:n_eval]
    # Its own generator: the projection of x depends only on (seed, dims), so estimates for several
    # features z of the same images (e.g. one per cut) all see the same projected x.
    projections = torch.Generator().manual_seed(seed)
    x2 = _prepare(x2, train_rows, max_dim, projections)
    z2 = _prepare(z2, train_rows, max_dim, projections)

    with seeded(seed):  # nn.Linear initialises from the global RNG
        mine = MINE(x2.shape[1], z2.shape[1], hidden=hidden, ema_rate=ema_rate).to(x2.device)
    optimizer = torch.optim.Adam(mine.parameters(), lr=lr)
    # Annealing the step size to zero lets the final network settle instead of being one noisy
    # SGD iterate, which is what the held-out bound is computed from.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    batch = min(batch_size, len(train_rows))
    history = []
    for _ in range(steps):
        rows = train_rows[torch.randperm(len(train_rows), generator=generator)[:batch]]
        loss, bound = mine.training_loss(x2[rows], z2[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append(float(bound))

    mine.eval()
    return MIEstimate(
        nats=mine.lower_bound(x2[eval_rows], z2[eval_rows], generator=generator),
        train_nats=mine.lower_bound(x2[train_rows], z2[train_rows], generator=generator),
        history=tuple(history),
        eval_samples=n_eval,
        x_dim=x2.shape[1],
        z_dim=z2.shape[1],
    )


def _prepare(
    values: torch.Tensor, train_rows: torch.Tensor, max_dim: int | None, generator: torch.Generator
) -> torch.Tensor:
    """Drop constant dimensions, standardise with the training rows' statistics, project to ``max_dim``."""
    spread = values[train_rows].std(dim=0)
    varying = spread > _CONSTANT_FRACTION * spread.median().clamp(min=1e-12)
    if varying.any():  # an entirely constant side keeps one column: its MI with anything is zero
        values = values[:, varying]
    else:
        values = values[:, :1]
    values = _standardise(values, train_rows)
    if max_dim is not None and values.shape[1] > max_dim:
        # Standardising first stops a few high-variance dimensions from dominating the projection.
        projection = torch.randn(values.shape[1], max_dim, generator=generator).to(values.device)
        values = _standardise(values @ (projection / math.sqrt(max_dim)), train_rows)
    return values


def _standardise(values: torch.Tensor, train_rows: torch.Tensor) -> torch.Tensor:
    reference = values[train_rows]
    return (values - reference.mean(dim=0)) / reference.std(dim=0).clamp(min=1e-12)

"""Local Lipschitz estimates from perturbations: PATROL's regulariser and a reusable estimator.

For a function ``f`` and an input ``x``, the local Lipschitz ratio along a perturbation ``δ`` is

    k(x, δ) = ‖f(x + δ) − f(x)‖ / ‖δ‖          (norms over all non-batch dimensions, per sample)

With ``δ`` along the top right-singular vector of the Jacobian ``J = ∂f/∂x`` this is (to first order)
the spectral norm ``‖J‖₂``, the local Lipschitz constant; a Gaussian ``δ`` gives about the
root-mean-square gain instead, ``‖J‖_F / √d``, and never more than ``‖J‖₂``. Power iteration on
``JᵀJ`` turns a Gaussian ``δ`` into the top direction, so :func:`local_lipschitz` can estimate the
constant itself.

PATROL's training regulariser (:func:`blockwise_lipschitz`) uses the cheap Gaussian version, as the
paper describes: it costs one extra edge pass on ``[x; x + δ]`` per step, where every power
iteration would add a forward and a backward pass through the edge; and a mean gain over
random directions is a smooth objective, where the top singular direction jumps from step to step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

#: Guards the ratios against a zero denominator (a perturbation that a ReLU block wiped out).
_TINY = 1e-12


def local_lipschitz(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    perturbation: float,
    samples: int = 1,
    power_iterations: int = 0,
    generator: torch.Generator | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Estimate ``f``'s local Lipschitz constant at each sample of ``x`` (a lower bound of it).

    ``δ ~ N(0, perturbation²)`` per element; with ``power_iterations > 0`` it is then pushed toward
    the top right-singular direction of ``f``'s Jacobian ``J`` at ``x`` (``δ ← JᵀJ δ`` with autograd's
    vector-Jacobian product, rescaled to its initial norm). The estimate per sample is the largest
    ratio over ``samples`` draws. Differentiable in ``f``'s parameters (the direction is detached).

    ``f`` must map each sample independently and deterministically (eval-mode BatchNorm, no
    dropout): power iteration normalises per sample and calls ``f`` once per step.

    Example:
        >>> a = torch.diag(torch.tensor([3.0, 1.0]))
        >>> x = torch.zeros(4, 2)
        >>> k = local_lipschitz(lambda v: v @ a.T, x, perturbation=0.1, power_iterations=20)
        >>> round(k.item(), 3)
        3.0
    """
    if not perturbation > 0 or samples < 1 or power_iterations < 0:
        raise ValueError(
            f"local_lipschitz needs perturbation > 0, samples >= 1 and power_iterations >= 0, got "
            f"{perturbation}, {samples}, {power_iterations}"
        )
    clean = f(x)
    best: torch.Tensor | None = None
    for _ in range(samples):
        delta = perturbation * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if power_iterations:
            delta = _toward_top_singular_direction(f, x.detach(), delta, steps=power_iterations)
        ratio = _norms(f(x + delta) - clean) / _norms(delta).clamp_min(_TINY)
        best = ratio if best is None else torch.maximum(best, ratio)
    assert best is not None
    return best.mean() if reduction == "mean" else best


def blockwise_lipschitz(
    model: nn.Module,
    blocks: Sequence[nn.Module],
    x: torch.Tensor,
    *,
    perturbation: float,
    generator: torch.Generator | None = None,
    relative: bool = False,
) -> torch.Tensor:
    """PATROL's block-wise ratios ``[k_1, …, k_n]`` (each a mean over the batch), differentiable.

    ``F_i`` is the output of ``blocks[i]`` (submodules of ``model``, in execution order) when
    ``model`` runs; ``k_1 = ‖ΔF_1‖ / ‖δ‖`` and ``k_i = ‖ΔF_i‖ / ‖ΔF_{i−1}‖`` with
    ``ΔF_i = F_i(x + δ) − F_i(x)`` and Gaussian ``δ`` of std ``perturbation``. So the product of the
    ``k_i`` is the gain of the whole chain, and each factor is one block's share of it.

    ``relative``: each change is measured against how much that output varies between the inputs of
    the batch, ``‖ΔF_i‖ / ‖F_i(x) − mean_batch F_i(x)‖`` (and ``‖δ‖ / ‖x − mean_batch x‖`` for the
    input), so that scaling a block's output or adding a constant to it leaves its ratio as it was.
    The absolute ratios can be driven to zero by shrinking the edge's weights alone: the features
    shrink with them, which makes the edge no harder to invert (an attacker rescales) yet starves
    the cloud. Over the six blocks of he-cnn's relu32 edge PATROL shrank the feature's spread from
    0.09 to 1e-11 that way, and the model fell to chance. The relative ratios leave only the way
    down that privacy asks for: features that move less under a perturbation of the input, for how
    much they tell inputs apart.

    ``model`` runs once, on ``[x; x + δ]``, so both halves see the same BatchNorm batch statistics
    (the difference is due to ``δ`` alone; dropout inside ``model`` would add its own). The pass
    runs on copies of ``model``'s buffers: running statistics are not updated by it.
    """
    if not perturbation > 0 or not blocks:
        raise ValueError(f"blockwise_lipschitz needs perturbation > 0 and at least one block, got {perturbation}")
    delta = perturbation * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    outputs = _block_outputs(model, blocks, torch.cat([x, x + delta]))
    count = len(x)
    previous = _norms(delta) / _spread(x) if relative else _norms(delta)
    ratios = []
    for output in outputs:
        change = _norms(output[count:] - output[:count])
        if relative:
            change = change / _spread(output[:count])
        ratios.append((change / previous.clamp_min(_TINY)).mean())
        previous = change
    return torch.stack(ratios)


def _block_outputs(model: nn.Module, blocks: Sequence[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    captured: dict[int, torch.Tensor] = {}

    def keeper(index: int) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def keep(module: nn.Module, args: object, output: torch.Tensor) -> None:
            captured[index] = output

        return keep

    handles = [block.register_forward_hook(keeper(index)) for index, block in enumerate(blocks)]
    try:
        # Cloned buffers: this extra pass must not count twice in BatchNorm's running statistics.
        functional_call(model, {name: b.clone() for name, b in model.named_buffers()}, (x,))
    finally:
        for handle in handles:
            handle.remove()
    missing = [index for index in range(len(blocks)) if index not in captured]
    if missing:
        raise ValueError(f"blocks {missing} did not run in the model's forward pass; pass submodules it calls")
    return [captured[index] for index in range(len(blocks))]


def _toward_top_singular_direction(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, delta: torch.Tensor, *, steps: int
) -> torch.Tensor:
    """Power iteration ``δ ← Jᵀ(f(x + δ) − f(x))``, each step rescaled to ``δ``'s initial norm per sample.

    The forward difference is ``Jδ`` exactly for a linear ``f`` and at the perturbation's scale
    otherwise (the scale the ratio is measured at, as in virtual adversarial training); using it
    instead of forward-mode AD also keeps to reverse mode, which every layer supports.
    """
    scale = _norms(delta)
    with torch.enable_grad():
        anchor = x.detach().requires_grad_()
        output = f(anchor)
        clean = output.detach()
        for _ in range(steps):
            with torch.no_grad():
                change = f(anchor + delta) - clean
            (delta,) = torch.autograd.grad(output, anchor, change, retain_graph=True)
            delta = delta * _per_sample(scale / _norms(delta).clamp_min(_TINY), delta)
    return delta.detach()


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _spread(t: torch.Tensor) -> torch.Tensor:
    """Per sample, its distance from the batch mean: how much this tensor tells the inputs apart."""
    return _norms(t - t.mean(0, keepdim=True)).clamp_min(_TINY)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.ndim - 1)))

"""Where a deployed defense's randomness comes from: noise, dropout masks, attention-shaped noise.

A stochastic block draws through :func:`randn_like` / :func:`uniform_like` from its ``noise_source``:

* ``None`` (the default): torch's global generator. Under ``splitveil.seeding.seeded`` this makes
  training, the audit and every attacker's queries reproducible, which the figures need.
* a ``torch.Generator``: that generator, for a caller that keeps its own stream.
* ``"secure"``: every draw comes from a generator freshly seeded with 64 bits of the operating
  system's CSPRNG (``secrets``), as a device must draw: the cloud cannot predict or replay the noise,
  since no state carries over from one call to the next (opacus' ``secure_mode`` is the model; it
  draws from torchcsprng, which is not available here). The edge client sets it on every block of the
  edge it runs (:func:`use_noise_source`).
* ``"silent"``: no noise at all; each block passes its input on as if its magnitude were 0 (a
  bounded block still bounds). Only training sets it, for a defense's task-only epochs
  (:class:`splitveil.train.WarmUp`); :func:`randn_like` and :func:`uniform_like` refuse it, so a
  block that forgets to check fails loudly rather than drawing.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Literal, Protocol, TypeAlias, cast

import torch
from torch import nn

NoiseSource: TypeAlias = torch.Generator | Literal["secure", "silent"] | None
SILENT: Literal["silent"] = "silent"


class _DrawsNoise(Protocol):
    """A stochastic block: one with a ``noise_source`` attribute."""

    noise_source: NoiseSource


def randn_like(x: torch.Tensor, source: NoiseSource) -> torch.Tensor:
    """Standard normal values shaped like ``x``, drawn from ``source``."""
    _refuse_silent(source)
    if source is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=_generator(source, x.device), dtype=x.dtype, device=x.device)


def uniform_like(x: torch.Tensor, source: NoiseSource, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Values uniform on [low, high) shaped like ``x``, drawn from ``source`` (``rand_like`` at the defaults)."""
    _refuse_silent(source)
    if source is None and torch.onnx.is_in_onnx_export():
        # In-place uniform_ has no ONNX form; rand_like exports as RandomUniformLike. Outside export the
        # draw below is kept: its values differ from this one in the last bit, and figures must not move.
        return torch.rand_like(x) * (high - low) + low
    generator = None if source is None else _generator(source, x.device)
    return torch.empty_like(x).uniform_(low, high, generator=generator)


def draws_noise(module: nn.Module) -> bool:
    """Whether ``module`` is a stochastic block (it has a ``noise_source``)."""
    return hasattr(module, "noise_source")


def use_noise_source(module: nn.Module, source: NoiseSource) -> int:
    """Make every stochastic block inside ``module`` draw from ``source``; how many blocks there are."""
    if not (source is None or source in ("secure", SILENT) or isinstance(source, torch.Generator)):
        raise ValueError(f"a noise source is None, 'secure', 'silent' or a torch.Generator, not {source!r}")
    blocks = _stochastic_blocks(module)
    for block in blocks:
        block.noise_source = source
    return len(blocks)


def silence_noise(module: nn.Module) -> Callable[[], None]:
    """Make every stochastic block inside ``module`` silent; returns the call that restores their sources."""
    blocks = _stochastic_blocks(module)
    sources = [block.noise_source for block in blocks]
    for block in blocks:
        block.noise_source = SILENT

    def restore() -> None:
        for block, source in zip(blocks, sources, strict=True):
            block.noise_source = source

    return restore


def _stochastic_blocks(module: nn.Module) -> list[_DrawsNoise]:
    return [cast(_DrawsNoise, block) for block in module.modules() if draws_noise(block)]


def _refuse_silent(source: NoiseSource) -> None:
    if source == SILENT:
        raise ValueError("a silent noise source draws nothing: the block must pass its input on unchanged")


def _generator(source: torch.Generator | Literal["secure", "silent"], device: torch.device) -> torch.Generator:
    if isinstance(source, torch.Generator):
        return source
    return torch.Generator(device=device).manual_seed(secrets.randbits(64))

"""Audit what a server captured: the attacker is fitted once, then the capture is inverted chunk by chunk.

A capture can outgrow memory (a busy server writes hundreds of MB a minute), so nothing here holds
it whole: a first pass reads only the frames' headers (shape and sample count, checked before any
training), a second decodes the frames one at a time and inverts them in chunks of
``chunk_samples``. What is kept is bounded by the chunk, not the file: the first ``preview``
reconstructions for the grid, and running sums of the per-image scores when the originals are known.

The count of the first pass is the audit's: frames a live server appends meanwhile are left for the
next audit, so the reconstructions always line up with the originals given.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from splitveil.audit import fit_attack
from splitveil.config import AttackSpec
from splitveil.data import DatasetSplits
from splitveil.errors import ConfigError, WireFormatError
from splitveil.metrics import mse, psnr, ssim
from splitveil.serve.capture_reader import CaptureDamage, CaptureReader
from splitveil.split import SplitModel

#: Samples inverted at once: a few MB of features and reconstructions at any cut of the models here.
DEFAULT_CHUNK_SAMPLES = 1024


@dataclass(frozen=True)
class CaptureSurvey:
    """What a capture holds, read from its frames' headers alone."""

    frames: int
    samples: int
    feature_shape: tuple[int, ...]


@dataclass(frozen=True)
class CaptureScore:
    """Mean per-image scores of the reconstructions against the originals sent."""

    ssim: float
    psnr: float
    mse: float


@dataclass(frozen=True)
class CaptureAudit:
    """One attack on a whole capture: how many samples it inverted, a preview, the score if it could be scored."""

    samples: int
    preview: torch.Tensor
    score: CaptureScore | None
    damage: tuple[CaptureDamage, ...]
    seconds: float


def survey_capture(path: str | Path, expected_shape: tuple[int, ...]) -> CaptureSurvey:
    """Count the samples at ``path`` (and its rotated files) from the frame headers; refuse a capture
    that is empty or whose features are not the ``expected_shape`` the deployment sends."""
    frames = samples = 0
    for header in CaptureReader(path).headers():
        if tuple(header.shape[1:]) != tuple(expected_shape):
            raise ConfigError(
                f"{path} holds features of shape {tuple(header.shape[1:])}, but this deployment sends {tuple(expected_shape)}; "
                "attack with the spec, cut and defense the server's bundle was exported from"
            )
        frames, samples = frames + 1, samples + header.shape[0]
    if samples == 0:
        raise ConfigError(f"{path} holds no captured requests yet; send the server requests first")
    return CaptureSurvey(frames=frames, samples=samples, feature_shape=tuple(expected_shape))


def captured_chunks(reader: CaptureReader, *, limit: int, chunk_samples: int) -> Iterator[torch.Tensor]:
    """The first ``limit`` captured samples in arrival order, decoded, as tensors of ``chunk_samples``
    (the last one shorter); at most one chunk and one frame are held at a time."""
    if chunk_samples < 1:
        raise ValueError(f"chunk_samples must be at least 1, got {chunk_samples}")
    pending: list[torch.Tensor] = []
    held = taken = 0
    for tensor in reader.tensors():
        tensor = tensor[: limit - taken]
        pending.append(tensor)
        held, taken = held + len(tensor), taken + len(tensor)
        if held >= chunk_samples:  # one concatenation per frame, however many chunks it completes
            joined = torch.cat(pending)
            full = held - held % chunk_samples
            yield from joined[:full].split(chunk_samples)
            pending, held = ([joined[full:]] if full < held else []), held - full
        if taken >= limit:
            break
    if held:
        yield torch.cat(pending)


def audit_capture(
    split: SplitModel,
    attack: AttackSpec,
    path: str | Path,
    *,
    data: DatasetSplits,
    seed: int,
    progress: bool,
    originals: torch.Tensor | None = None,
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
    preview: int = 8,
) -> CaptureAudit:
    """Fit ``attack`` against the deployed ``split`` and invert every sample captured at ``path``.

    ``originals`` (the images behind the captured features, in the order they were sent) make the
    audit score the reconstructions; there must be exactly one per captured sample.
    """
    started = time.perf_counter()
    with torch.no_grad():
        feature_shape = tuple(split.edge(data.test.images[:1]).shape[1:])
    survey = survey_capture(path, feature_shape)
    if originals is not None and len(originals) != survey.samples:
        raise ConfigError(
            f"{len(originals)} original images were given but the capture holds {survey.samples} samples; "
            "give one image per captured sample, in the order they were sent"
        )
    attacker = fit_attack(split, attack, data=data, seed=seed, progress=progress)
    reader = CaptureReader(path)
    shown: list[torch.Tensor] = []
    sums = torch.zeros(3, dtype=torch.float64)
    done = 0
    for features in captured_chunks(reader, limit=survey.samples, chunk_samples=chunk_samples):
        x_hat = attacker.invert(features).detach().clamp(0, 1)  # rMLE optimises inside: no no_grad here
        if done < preview:
            shown.append(x_hat[: preview - done])
        if originals is not None:
            sent = originals[done : done + len(x_hat)]
            per_image = [metric(x_hat, sent, reduction="none") for metric in (ssim, psnr, mse)]
            sums += torch.stack([values.double().sum() for values in per_image])
        done += len(x_hat)
    if done != survey.samples:
        raise WireFormatError(
            f"{path} changed while it was audited: {done} of {survey.samples} samples could be read again"
        )
    score = None if originals is None else CaptureScore(*(float(total / done) for total in sums))
    return CaptureAudit(
        samples=done,
        preview=torch.cat(shown),
        score=score,
        damage=tuple(reader.damage),
        seconds=time.perf_counter() - started,
    )

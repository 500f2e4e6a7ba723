"""``splitveil attack``: one attack on one deployed cut, on test images or on what a server captured."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from splitveil.errors import ConfigError


def attack(
    spec: Annotated[Path, typer.Argument(help="YAML spec naming the model, data, training and defenses.")],
    cut_name: Annotated[str, typer.Option("--cut", help="Cut point to attack (see `splitveil profile MODEL`).")],
    attack_name: Annotated[str, typer.Option("--attack", help="Attack name: rmle, inverse-network, ...")],
    option: Annotated[list[str] | None, typer.Option("--set", help="Attack option KEY=VALUE (repeatable).")] = None,
    defense: Annotated[str | None, typer.Option(help="Label of the spec's defense in place (default: none).")] = None,
    strength: Annotated[float | None, typer.Option(help="Defense strength (default: the defense's first).")] = None,
    capture: Annotated[
        Path | None, typer.Option(help="Invert the features in this capture file (`splitveil serve --capture`).")
    ] = None,
    originals: Annotated[
        list[Path] | None,
        typer.Option(help="The images behind the captured features, in order (PNG/JPEG/.npy), to score against."),
    ] = None,
    targets: Annotated[int, typer.Option(min=1, help="Number of test images to reconstruct (without --capture).")] = 16,
    out: Annotated[
        Path, typer.Option(dir_okay=False, help="PNG file for the grid of originals and reconstructions.")
    ] = Path("attack.png"),
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run one attack on one cut of the spec's deployed model and save the reconstruction grid.

    The attacker is trained exactly as the bench trains it, against the defense in place. With
    --capture it inverts the features a real server received instead of test images' features.
    """
    from splitveil.bench.audit import invert_features, run_attack, score_reconstruction, transmitted_features
    from splitveil.bench.figures import reconstruction_grid
    from splitveil.checkpoint import CheckpointCache
    from splitveil.config import load_spec, parse_attack
    from splitveil.serve.deployment import deployment_from_spec

    if originals and capture is None:
        raise ConfigError("--originals scores a capture's reconstructions; give --capture FILE too")
    resolved = load_spec(spec)
    attack_spec = parse_attack(attack_name, parse_assignments(option or []), source="--attack/--set")
    cache = CheckpointCache.default(cache_dir)
    deployment = deployment_from_spec(
        resolved, cut_name, defense=defense, strength=strength, cache=cache, progress=progress
    )
    split, data = deployment.deployed.split.eval(), deployment.trained.data
    import torch

    torch.manual_seed(resolved.seed)  # a noisy edge draws its noise as the bench's cells do: reproducibly
    options = {"data": data, "seed": resolved.seed, "progress": progress}
    if capture is None:
        chosen = data.test.take(targets)
        outcome = run_attack(split, attack_spec, targets=chosen, evaluator=None, reid=resolved.audit.reid, **options)
        original, reconstruction = chosen.images, outcome.reconstruction
        source = f"{len(chosen)} test images"
    else:
        features = _captured_features(capture, tuple(transmitted_features(split, data.test.images[:1]).shape[1:]))
        reconstruction = invert_features(split, attack_spec, features=features, **options)
        original, outcome = None, None
        if originals:
            original = _original_images(originals, data.input_shape, len(features))
            outcome = score_reconstruction(reconstruction, original)
        source = f"{len(features)} captured requests' samples from {capture}"
    out.parent.mkdir(parents=True, exist_ok=True)
    shown = None if original is None else original[:8]
    out.write_bytes(reconstruction_grid(shown, {attack_name: reconstruction[:8]}))
    label = f"{attack_name} at {cut_name} ({defense or 'undefended'}) on {source}"
    if outcome is None:
        typer.echo(f"{label}: no originals given, so no score; grid: {out}")
    else:
        reid = (
            ""
            if outcome.reid is None
            else (
                f", re-identified top-1 {outcome.reid.top1:.3f} / top-5 {outcome.reid.top5:.3f} of {outcome.reid.candidates}"
                f" (chance {outcome.reid.chance_top1:.3f}; {outcome.reid.distance} distance)"
            )
        )
        typer.echo(
            f"{label}: SSIM {outcome.ssim:.3f}, PSNR {outcome.psnr:.2f} dB, MSE {outcome.mse:.4f}{reid}; grid: {out}"
        )


def _captured_features(capture: Path, expected: tuple[int, ...]):
    """The features of the capture at ``capture`` and its rotated files, read one frame at a time.

    Only the decoded features are kept, never the file's bytes, and a wrong shape stops the read at
    the first frame. Damaged stretches of the file (a torn last frame, corrupt bytes) are reported
    on stderr, one line each; every whole frame around them is used.
    """
    import torch

    from splitveil.serve.capture_reader import CaptureReader

    reader = CaptureReader(capture)
    features = []
    for tensor in reader.tensors():
        if tuple(tensor.shape[1:]) != expected:
            raise ConfigError(
                f"{capture} holds features of shape {tuple(tensor.shape[1:])}, but this deployment sends {expected}; "
                "attack with the spec, cut and defense the server's bundle was exported from"
            )
        features.append(tensor)
    for damage in reader.damage:
        typer.echo(f"warning: {damage}", err=True)
    if not features:
        raise ConfigError(f"{capture} holds no captured requests yet; send the server requests first")
    return torch.cat(features)


def _original_images(paths: list[Path], input_shape: tuple[int, int, int], count: int):
    from splitveil.serve_commands import read_images

    images, _ = read_images(paths, input_shape)
    if len(images) != count:
        raise ConfigError(
            f"--originals hold {len(images)} images but the capture holds {count} samples; "
            "give the images in the order they were sent"
        )
    return images


#: 1e-2 and the like: YAML 1.1 reads them as text (it wants 1.0e-2), but on a command line they are numbers.
EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_assignments(assignments: list[str]) -> dict[str, object]:
    """``["steps=200", "lr=1e-2"]`` -> ``{"steps": 200, "lr": 0.01}`` (values parsed as YAML scalars)."""
    import yaml

    parsed: dict[str, object] = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {assignment!r}")
        try:
            parsed[key] = yaml.safe_load(value)
        except (yaml.YAMLError, ValueError, RecursionError):
            raise typer.BadParameter(
                f"the value of {assignment!r} is not valid YAML; give a number, a word or a list such as [16, 32]"
            ) from None
        if isinstance(parsed[key], str) and EXPONENT_NUMBER.fullmatch(value.strip()):
            parsed[key] = float(value)
    return parsed

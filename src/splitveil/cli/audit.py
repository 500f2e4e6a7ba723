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
    edge_onnx: Annotated[
        Path | None,
        typer.Option(
            "--edge-onnx",
            exists=True,
            dir_okay=False,
            help="Attack this exported edge (edge.onnx, edge.int8.onnx) of the deployment instead of its torch edge.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(dir_okay=False, help="PNG file for the grid of originals and reconstructions.")
    ] = Path("attack.png"),
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run one attack on one cut of the spec's deployed model and save the reconstruction grid.

    The attacker is trained exactly as the bench trains it, against the defense in place. With
    --capture it inverts the features a real server received instead of test images' features. With
    --edge-onnx the targets and the attacker's queries go through that ONNX edge file (black-box attacks).
    """
    import torch

    from splitveil.audit import run_attack
    from splitveil.bench.capture_audit import audit_capture
    from splitveil.checkpoint import CheckpointCache
    from splitveil.config import load_spec, parse_attack
    from splitveil.edge.images import read_image_files
    from splitveil.seeding import seed_process
    from splitveil.serve.deployment import deployment_from_spec
    from splitveil.serve.onnx_edge_module import check_black_box, check_edge_metadata, onnx_edge_split, spec_record

    if originals and capture is None:
        raise ConfigError("--originals scores a capture's reconstructions; give --capture FILE too")
    resolved = load_spec(spec)
    attack_spec = parse_attack(attack_name, parse_assignments(option or []), source="--attack/--set")
    if edge_onnx is not None:  # refused before anything is trained
        check_black_box(attack_name)
        check_edge_metadata(edge_onnx, spec_record(resolved, cut_name))
    cache = CheckpointCache.default(cache_dir)
    deployment = deployment_from_spec(
        resolved, cut_name, defense=defense, strength=strength, cache=cache, progress=progress
    )
    split, data = deployment.deployed.split.eval(), deployment.trained.data
    if edge_onnx is not None:
        split = onnx_edge_split(deployment, edge_onnx)
    seed_process(resolved.seed)  # a noisy edge draws its noise as the bench's cells do: reproducibly
    attacker_seed = resolved.audit.attacker_seed(resolved.seed)
    label = f"{attack_name} at {cut_name} ({defense or 'undefended'})"
    if edge_onnx is not None:
        label += f" through {edge_onnx}"
    if capture is None:
        chosen = data.test.take(targets)
        outcome = run_attack(
            split, attack_spec, data=data, seed=attacker_seed, progress=progress, targets=chosen,
            evaluator=None, reid=resolved.audit.reid,
        )  # fmt: skip
        _write_grid(out, chosen.images[:8], {attack_name: outcome.reconstruction[:8]})
        reid = "" if outcome.reid is None else f", {_reid_summary(outcome.reid)}"
        score = f"SSIM {outcome.ssim:.3f}, PSNR {outcome.psnr:.2f} dB, MSE {outcome.mse:.4f}{reid}"
        typer.echo(f"{label} on {len(chosen)} test images: {score}; grid: {out}")
        return
    sent = None if not originals else torch.from_numpy(read_image_files(originals, data.input_shape)[0])
    audit = audit_capture(split, attack_spec, capture, data=data, seed=attacker_seed, progress=progress, originals=sent)
    for damage in audit.damage:
        typer.echo(f"warning: {damage}", err=True)
    _write_grid(out, None if sent is None else sent[: len(audit.preview)], {attack_name: audit.preview})
    source = f"{label} on {audit.samples} captured requests' samples from {capture}"
    if audit.score is None:
        typer.echo(f"{source}: no originals given, so no score; grid: {out}")
    else:
        found = audit.score
        typer.echo(f"{source}: SSIM {found.ssim:.3f}, PSNR {found.psnr:.2f} dB, MSE {found.mse:.4f}; grid: {out}")


def _write_grid(out: Path, originals, reconstructions: dict) -> None:
    from splitveil.bench.figures import reconstruction_grid

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(reconstruction_grid(originals, reconstructions))


def _reid_summary(reid) -> str:
    return (
        f"re-identified top-1 {reid.top1:.3f} / top-5 {reid.top5:.3f} of {reid.candidates}"
        f" (chance {reid.chance_top1:.3f}; {reid.distance} distance)"
    )


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

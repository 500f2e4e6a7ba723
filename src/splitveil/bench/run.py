"""``splitveil bench run``: model × cuts × defenses × strengths × attacks, one row per cell, then the report.

Cells whose rows are already in ``results.jsonl`` are skipped, so re-running a spec (or resuming a
killed run) finishes the missing cells only. The trained model comes from the checkpoint cache.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from splitveil.bench.audit import feature_mutual_information, output_privacy, run_attack
from splitveil.bench.report import build_report
from splitveil.bench.results import ResultRow, append_row, cell_id, read_rows
from splitveil.checkpoint import CheckpointCache
from splitveil.config import DefenseSpec, ExperimentSpec, write_resolved
from splitveil.data import load_dataset
from splitveil.deploy import deploy
from splitveil.experiment import check_cuts, train_or_load
from splitveil.metrics import privacy_accuracy, privacy_index, train_evaluation_classifier
from splitveil.split import cut_aliases

RECONSTRUCTIONS_DIR = "reconstructions"


def run_bench(
    spec: ExperimentSpec, out: str | Path, *, cache: CheckpointCache | None = None, progress: bool = True
) -> list[ResultRow]:
    """Run every (cut, attack) cell of ``spec`` not yet in ``out``; write rows, tensors and the report."""
    out = Path(out)
    (out / RECONSTRUCTIONS_DIR).mkdir(parents=True, exist_ok=True)
    write_resolved(spec, out)
    data = load_dataset(spec.data.name, seed=spec.seed, **spec.data.loader_options())
    if spec.cuts:
        check_cuts(spec, data, spec.cuts)
    trained = train_or_load(spec, cache=cache, data=data, progress=progress)
    model = trained.model.eval()
    depth = {name: index for index, name in enumerate(cut_aliases(model))}
    cuts = spec.cuts or list(depth)
    previous = read_rows(out)
    finished = {row.cell_id for row in previous}
    undefended = {(row.cut, row.attack): row for row in previous if row.defense == "none"}
    targets = data.test.take(spec.audit.targets)
    evaluator = None
    if spec.audit.evaluator.enabled and spec.attacks:
        evaluator = train_evaluation_classifier(
            data, model=spec.audit.evaluator.model, epochs=spec.audit.evaluator.epochs, seed=spec.seed
        )
    evaluator_accuracy = None if evaluator is None else privacy_accuracy(evaluator, targets.images, targets.labels)
    for cut_name in cuts:
        for label, defense_spec, strength in spec_variants(spec):
            pending = [a for a in spec.attacks if _cell(spec, cut_name, label, strength, a.name) not in finished]
            if not pending:
                continue
            deployed = deploy(spec, trained, cut_name, defense_spec, strength, cache=cache, progress=progress)
            split = deployed.split
            profile = split.profile(data.input_shape)
            mi_images = data.test.take(spec.audit.mine.samples).images
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.seed)  # a noisy edge samples its noise as deployed, reproducibly
                mi = feature_mutual_information(split, mi_images, spec.audit.mine, seed=spec.seed)
            outputs = output_privacy(split, spec.audit.output, data=data, seed=spec.seed, progress=progress)
            for attack in pending:
                outcome = run_attack(
                    split, attack, data=data, targets=targets, evaluator=evaluator, seed=spec.seed, progress=progress
                )
                identifier = _cell(spec, cut_name, label, strength, attack.name)
                shown = spec.audit.grid_images
                save_file(
                    {
                        "original": targets.images[:shown].contiguous(),
                        "reconstruction": outcome.reconstruction[:shown].contiguous(),
                    },
                    str(out / RECONSTRUCTIONS_DIR / f"{identifier}.safetensors"),
                )
                row = ResultRow(
                    model=spec.model.name,
                    dataset=spec.data.name,
                    cut=cut_name,
                    cut_index=depth.get(cut_name, cuts.index(cut_name)),
                    defense=label,
                    strength=strength,
                    attack=attack.name,
                    seed=spec.seed,
                    accuracy=deployed.accuracy,
                    ssim=outcome.ssim,
                    psnr=outcome.psnr,
                    mse=outcome.mse,
                    mi=mi,
                    privacy_accuracy=outcome.privacy_accuracy,
                    evaluator_accuracy=evaluator_accuracy,
                    privacy_index=_privacy_index(
                        undefended.get((cut_name, attack.name)),
                        outcome.privacy_accuracy,
                        deployed.accuracy,
                        chance=1 / data.num_classes,
                    ),
                    edge_flops=profile.edge_flops,
                    cloud_flops=profile.cloud_flops,
                    edge_params=profile.edge_params,
                    feature_shape=list(profile.feature_shape),
                    feature_bytes=profile.feature_bytes,
                    targets=len(targets),
                    seconds=round(outcome.seconds, 3),
                    reconstruction_file=f"{RECONSTRUCTIONS_DIR}/{identifier}.safetensors",
                    output_privacy=outputs,
                )
                append_row(out, row)
                if label == "none":
                    undefended[(cut_name, attack.name)] = row
    build_report(out)
    return read_rows(out)


def _privacy_index(
    reference: ResultRow | None, privacy_accuracy: float | None, accuracy: float, *, chance: float
) -> float | None:
    """PI of a cell against the undefended cell of the same cut and attack (0 for that cell itself)."""
    if reference is None:  # this is the undefended cell (it always runs first at its cut)
        return None if privacy_accuracy is None else 0.0
    if privacy_accuracy is None or reference.privacy_accuracy is None or reference.accuracy <= chance:
        return None
    return privacy_index(
        pa_defended=privacy_accuracy,
        pa_undefended=reference.privacy_accuracy,
        accuracy_defended=accuracy,
        accuracy_undefended=reference.accuracy,
        chance=chance,
    )


def spec_variants(spec: ExperimentSpec) -> list[tuple[str, DefenseSpec | None, float]]:
    """``(label, defense spec, strength)`` of every defended variant, the undefended split first.

    A strength of 0 is the identity of every defense, so it is the undefended cell and not repeated.
    """
    variants: list[tuple[str, DefenseSpec | None, float]] = [("none", None, 0.0)]
    for defense in spec.defenses:
        variants += [(defense.display_name, defense, strength) for strength in defense.strengths if strength > 0]
    return variants


def _cell(spec: ExperimentSpec, cut_name: str, defense: str, strength: float, attack: str) -> str:
    return cell_id(spec.model.name, spec.data.name, cut_name, defense, strength, attack)

"""What a worker does for one cell: rebuild what the cell needs from the cache, compute, return the result.

A worker (a process of the local pool or a Ray task) writes nothing in the run directory: it gets
the spec, the checkpoint cache's location and the cell, and returns a JSON-able result plus, for an
attack, the reconstruction tensors as safetensors bytes; the driver stores them. Only the
checkpoint cache is shared, so on a multi-machine Ray cluster ``--cache-dir`` must be on a shared
filesystem. Every cell seeds torch's global generator from the spec's seed and its own id, so its
result does not depend on which worker ran it or what that worker ran before.
"""

from __future__ import annotations

import functools
import json
import time
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import save

from splitveil.bench.cell_results import AttackResult, DeployResult, EvaluatorResult, TrainResult
from splitveil.bench.cells import Cell, evaluator_fingerprint
from splitveil.checkpoint import CheckpointCache, load_weights
from splitveil.config import AttackSpec, ExperimentSpec, parse_spec
from splitveil.seeding import seeded


@dataclass(frozen=True)
class CellRequest:
    spec: dict[str, Any]  # the resolved spec, as JSON (a pydantic model pickles less portably)
    cache_root: str  # the checkpoint cache's directory (CheckpointCache.root)
    cell: Cell
    threads: int


@dataclass(frozen=True)
class CellOutcome:
    result: dict[str, Any]
    seconds: float
    worker: str
    tensors: bytes | None = None  # an attack's originals and reconstructions (safetensors)


class CellError(Exception):
    """A cell failed in its worker; the message carries the worker's traceback."""


def execute_cell(request: CellRequest) -> CellOutcome:
    """Run one cell (the function the executors ship to their workers)."""
    from splitveil.bench.store import worker_name

    started = time.perf_counter()
    torch.set_num_threads(request.threads)
    try:
        context = _context(_freeze(request.spec), request.cache_root)
        torch.manual_seed(zlib.crc32(f"{_cell_seed(context.spec, request.cell)}/{request.cell.id}".encode()))
        compute = {"train": _train, "evaluator": _evaluator, "deploy": _deploy, "attack": _attack}[request.cell.kind]
        result, tensors = compute(context, request.cell)
    except Exception:
        raise CellError(traceback.format_exc()) from None
    return CellOutcome(result, time.perf_counter() - started, worker_name(), tensors)


def _cell_seed(spec: ExperimentSpec, cell: Cell) -> int:
    """The seed of a cell's global generator: an attack cell's is its attackers' (``audit.attack_seed``)."""
    return spec.audit.attacker_seed(spec.seed) if cell.kind == "attack" else spec.seed


@dataclass(frozen=True)
class _Context:
    spec: ExperimentSpec
    cache: CheckpointCache
    data: Any  # DatasetSplits


def _freeze(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


@functools.lru_cache(maxsize=2)
def _context(spec_json: str, cache_root: str) -> _Context:
    """The spec and its dataset, loaded once per worker process (datasets take seconds to read)."""
    from splitveil.data import load_dataset

    spec = parse_spec(json.loads(spec_json))
    data = load_dataset(spec.data.name, seed=spec.seed, **spec.data.loader_options())
    return _Context(spec, CheckpointCache(Path(cache_root)), data)


def _trained(context: _Context, *, cached_only: bool = True):
    """The target model; only the train cell may train it, every other cell finds it in the cache."""
    from splitveil.experiment import train_or_load

    options = {"cache": context.cache, "data": context.data, "progress": False, "cached_only": cached_only}
    return train_or_load(context.spec, **options)


def _train(context: _Context, cell: Cell) -> tuple[dict[str, Any], None]:
    from splitveil.split import cut_aliases

    trained = _trained(context, cached_only=False)
    return TrainResult(
        test_accuracy=trained.test_accuracy,
        from_cache=trained.from_cache,
        cut_order=list(cut_aliases(trained.model)),
        num_classes=context.data.num_classes,
    ).to_json(), None


def _evaluator_entry(context: _Context) -> Path:
    return context.cache.path(f"evaluator-{evaluator_fingerprint(context.spec)}")


def _cached_evaluator(context: _Context) -> torch.nn.Module:
    """The evaluator its cell trained (an attack cell runs only after that cell is done)."""
    entry = _evaluator_entry(context)
    if not context.cache.contains(entry.name):
        raise RuntimeError(f"the evaluation classifier is not in the cache at {entry}; its cell must run first")
    return _load_evaluator(context, entry)


def _evaluator(context: _Context, cell: Cell) -> tuple[dict[str, Any], None]:
    from splitveil.metrics import privacy_accuracy, train_evaluation_classifier

    spec, data = context.spec, context.data
    entry = _evaluator_entry(context)
    if context.cache.contains(entry.name):
        evaluator = _load_evaluator(context, entry)
    else:
        evaluator = train_evaluation_classifier(
            data, model=spec.audit.evaluator.model, epochs=spec.audit.evaluator.epochs, seed=spec.seed
        )
        context.cache.store(entry.name, evaluator, {"kind": "evaluator", "model": spec.audit.evaluator.model})
    targets = data.test.take(spec.audit.targets)
    return EvaluatorResult(
        evaluator_accuracy=privacy_accuracy(evaluator, targets.images, targets.labels)
    ).to_json(), None


def _load_evaluator(context: _Context, entry: Path) -> torch.nn.Module:
    from splitveil.models import create_model

    data = context.data
    model = create_model(context.spec.audit.evaluator.model, input_shape=data.input_shape, num_classes=data.num_classes)
    return load_weights(entry, model).eval()


def _deployed(context: _Context, cell: Cell, *, in_deploy_cell: bool):
    """The deployed split. Its deploy cell trains a defended split and measures its accuracy; an attack
    cell finds the split cached and takes the accuracy from that cell's result."""
    from splitveil.deploy import deploy

    cut = cast(str, cell.cut)  # deploy and attack cells name their cut
    return deploy(
        context.spec,
        _trained(context),
        cut,
        cell.defense_spec,
        cell.strength,
        cache=context.cache,
        progress=False,
        cached_only=not in_deploy_cell,
        measure=in_deploy_cell,
    )


def _deploy(context: _Context, cell: Cell) -> tuple[dict[str, Any], None]:
    from splitveil.audit import feature_mutual_information, output_privacy

    spec, data = context.spec, context.data
    deployed = _deployed(context, cell, in_deploy_cell=True)
    split = deployed.split
    profile = split.profile(data.input_shape)
    mi_images = data.test.take(spec.audit.mine.samples).images
    with seeded(spec.seed):  # a noisy edge samples its noise as deployed, reproducibly
        mi = feature_mutual_information(split, mi_images, spec.audit.mine, seed=spec.seed)
    outputs = output_privacy(split, spec.audit.output, data=data, seed=spec.seed, progress=False)
    return DeployResult(
        accuracy=deployed.accuracy,
        from_cache=deployed.from_cache,
        mi=mi,
        output_privacy=outputs,
        edge_flops=profile.edge_flops,
        cloud_flops=profile.cloud_flops,
        edge_params=profile.edge_params,
        feature_shape=list(profile.feature_shape),
        feature_bytes=profile.feature_bytes,
    ).to_json(), None


def _attack(context: _Context, cell: Cell) -> tuple[dict[str, Any], bytes]:
    from splitveil.audit import run_attack

    spec, data = context.spec, context.data
    deployed = _deployed(context, cell, in_deploy_cell=False)
    targets = data.test.take(spec.audit.targets)
    evaluator = _cached_evaluator(context) if spec.audit.evaluator.enabled else None
    attack_spec = cast(AttackSpec, cell.attack_spec)  # an attack cell carries its attack's spec
    outcome = run_attack(
        deployed.split, attack_spec, data=data, targets=targets, evaluator=evaluator,
        seed=spec.audit.attacker_seed(spec.seed), progress=False, reid=spec.audit.reid,
    )  # fmt: skip
    shown = spec.audit.grid_images
    tensors = save(
        {
            "original": targets.images[:shown].contiguous(),
            "reconstruction": outcome.reconstruction[:shown].contiguous(),
        }
    )
    reid = outcome.reid  # None when the audit does not re-identify
    return AttackResult(
        ssim=outcome.ssim,
        psnr=outcome.psnr,
        mse=outcome.mse,
        privacy_accuracy=outcome.privacy_accuracy,
        targets=len(targets),
        attack_seconds=round(outcome.seconds, 3),
        reid_top1=None if reid is None else reid.top1,
        reid_top5=None if reid is None else reid.top5,
        reid_candidates=None if reid is None else reid.candidates,
        reid_distance=None if reid is None else reid.distance,
    ).to_json(), tensors

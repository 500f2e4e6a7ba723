"""From a spec to a deployment: train (or load) the model, deploy a cut with one of its defenses.

``export``, ``bench serve`` and ``attack --capture`` all start here, so the bundle a server runs,
the split a benchmark loads and the split an audit attacks are one and the same (cached) artefact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from splitveil.checkpoint import CheckpointCache, read_metadata
from splitveil.config import DefenseSpec, ExperimentSpec
from splitveil.deploy import DeployedSplit, deploy
from splitveil.edge.runtime import CLOUD_FILE, EDGE_FILE
from splitveil.errors import CheckpointError, ConfigError
from splitveil.experiment import TrainedModel, check_cuts, train_or_load
from splitveil.serve.bundle import export_bundle
from splitveil.serve.onnx_export import OnnxHalves, export_onnx
from splitveil.serve.onnx_quantize import INT8_EDGE_FILE, QuantizedEdge, quantize_edge

#: Test images run through both runtimes when an ONNX export is verified.
PARITY_SAMPLES = 32
#: Target-train images (a seeded draw) whose activation ranges calibrate the int8 edge.
CALIBRATION_IMAGES = 512
#: Test images on which the int8 edge's accuracy is compared with the float32 edge's at export.
INT8_CHECK_IMAGES = 1000


@dataclass(frozen=True)
class Deployment:
    spec: ExperimentSpec
    trained: TrainedModel
    deployed: DeployedSplit
    defense_spec: DefenseSpec | None
    strength: float

    def export(self, out: str | Path) -> Path:
        """Write this deployment as a bundle (edge/ and cloud/) at ``out``."""
        return export_bundle(
            out,
            spec=self.spec,
            trained=self.trained,
            deployed=self.deployed,
            defense_spec=self.defense_spec,
            strength=self.strength,
        )

    def export_onnx(self, bundle: str | Path) -> OnnxHalves:
        """Write ``edge.onnx`` and ``cloud.onnx`` beside the bundle at ``bundle`` (exported first), each
        carrying its half's bundle metadata, verified against this deployment's torch halves."""
        bundle = Path(bundle)
        metadata = {half: read_metadata(bundle / half) for half in ("edge", "cloud")}
        samples = self.trained.data.test.images[:PARITY_SAMPLES]
        halves = export_onnx(self.deployed.split, bundle, samples=samples, metadata=metadata)
        # An int8 edge from an earlier export no longer matches this edge.onnx: quantise it again.
        (bundle / INT8_EDGE_FILE).unlink(missing_ok=True)
        return halves

    def export_int8_edge(self, bundle: str | Path) -> QuantizedEdge:
        """Quantise ``bundle/edge.onnx`` (written by :meth:`export_onnx`) to ``bundle/edge.int8.onnx``:
        calibrated on target-train images, compared with the float32 edge on test images."""
        bundle = Path(bundle)
        if not (bundle / EDGE_FILE).is_file():
            raise CheckpointError(f"{bundle} has no {EDGE_FILE} to quantise; write it first with export_onnx (--onnx)")
        train, check = self.trained.data.train, self.trained.data.test.take(INT8_CHECK_IMAGES)
        # A seeded draw, not the first rows: a split stored in class order would calibrate on few classes.
        chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.spec.seed))
        return quantize_edge(
            bundle / EDGE_FILE,
            bundle / CLOUD_FILE,
            calibration=train.images[chosen[:CALIBRATION_IMAGES]].numpy(),
            check_images=check.images.numpy(),
            check_labels=check.labels.numpy(),
            seed=self.spec.seed,
        )


def deployment_from_spec(
    spec: ExperimentSpec,
    cut_name: str,
    *,
    defense: str | None = None,
    strength: float | None = None,
    cache: CheckpointCache | None = None,
    progress: bool = True,
    cached_only: bool = False,
) -> Deployment:
    """``cut_name`` of the spec's model, defended by the spec's defense labelled ``defense`` (None: undefended).

    The model and the defended split come from the checkpoint cache when they were built before;
    ``cached_only`` makes a missing one an error instead of training it. ``strength`` defaults to
    the defense's first.
    """
    from splitveil.data import load_dataset

    defense_spec = None
    if defense is None and strength:
        raise ConfigError(f"a strength ({strength:g}) was given without a defense; name one with --defense")
    if defense is not None:
        labels = {entry.display_name: entry for entry in spec.defenses}
        if defense not in labels:
            raise ConfigError(f"the spec has no defense labelled {defense!r}; it has: {', '.join(labels) or 'none'}")
        defense_spec = labels[defense]
        strength = defense_spec.strengths[0] if strength is None else strength
    level = strength or 0.0
    data = load_dataset(spec.data.name, seed=spec.seed, **spec.data.loader_options())
    check_cuts(spec, data, [cut_name])
    trained = train_or_load(spec, cache=cache, data=data, progress=progress, cached_only=cached_only)
    deployed = deploy(
        spec, trained, cut_name, defense_spec, level, cache=cache, progress=progress, cached_only=cached_only
    )
    return Deployment(spec, trained, deployed, defense_spec, level)


def load_deployment(
    run_dir: str | Path, cell_id: str, *, cache: CheckpointCache | None = None, measure: bool = False
) -> Deployment:
    """The split a bench run deployed for ``cell_id``, as the bench evaluated it, from the checkpoint
    cache; nothing is trained (a checkpoint missing from ``cache`` is an error).

    ``cell_id`` is a deploy cell (``deploy/relu22/nopeek/4``) or an attack cell (its deployed split),
    as ``splitveil bench status`` and the store name them. ``measure`` evaluates the split's test
    accuracy as the deploy cell did (noise drawn from the spec's seed); otherwise it is None.

    Example::

        deployment = load_deployment("runs/defenses", "deploy/relu22/nopeek/4", cache=CheckpointCache.default())
        features = deployment.deployed.split.edge(images)
    """
    from splitveil.bench.cells import deploy_id
    from splitveil.bench.status import cells_of_run
    from splitveil.bench.store import STORE_FILE, ResultStore
    from splitveil.config import load_spec

    run_dir = Path(run_dir)
    specs = sorted(run_dir.glob("spec.resolved*.yaml"), key=lambda path: path.name != "spec.resolved.yaml")
    if not specs or not (run_dir / STORE_FILE).is_file():
        raise ConfigError(
            f"{run_dir} holds no spec.resolved.yaml and {STORE_FILE}: it is not a `splitveil bench run` directory"
        )
    with ResultStore(run_dir) as store:
        stored = store.cells()
    deploys: set[str] = set()
    for path in specs:  # the latest spec first, then those an earlier run of other specs left
        spec = load_spec(path, trust_plugins=False)  # a run directory is not trusted to import code
        cells = {cell.id: cell for cell in cells_of_run(spec, stored)}
        if cell_id in cells:
            break
        deploys |= {cell for cell in cells if cell.startswith("deploy/")}
    else:
        raise ConfigError(
            f"{run_dir} has no cell {cell_id!r}; its deploy cells are: {', '.join(sorted(deploys)) or 'none'} "
            "(attack cells name their deployed split too; see `splitveil bench status`)"
        )
    cell = cells[cell_id]
    if cell.cut is None:
        raise ConfigError(
            f"cell {cell_id!r} deploys no split (it is the {cell.kind} cell); name a deploy or attack cell"
        )
    deploy_cell = cells[deploy_id(cell.cut, cell.defense, cell.strength)]
    cache = cache or CheckpointCache.default()
    from splitveil.data import load_dataset

    data = load_dataset(spec.data.name, seed=spec.seed, **spec.data.loader_options())
    trained = train_or_load(spec, cache=cache, data=data, progress=False, cached_only=True)
    deployed = deploy(
        spec,
        trained,
        cell.cut,
        deploy_cell.defense_spec,
        cell.strength,
        cache=cache,
        progress=False,
        cached_only=True,
        measure=measure,
    )
    return Deployment(spec, trained, deployed, deploy_cell.defense_spec, cell.strength)

"""From a spec to a deployment: train (or load) the model, deploy a cut with one of its defenses.

``export``, ``bench serve`` and ``attack --capture`` all start here, so the bundle a server runs,
the split a benchmark loads and the split an audit attacks are one and the same (cached) artefact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from splitveil.checkpoint import CheckpointCache
from splitveil.config import DefenseSpec, ExperimentSpec
from splitveil.deploy import DeployedSplit, deploy
from splitveil.errors import ConfigError
from splitveil.experiment import TrainedModel, check_cuts, train_or_load
from splitveil.serve.bundle import export_bundle


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


def deployment_from_spec(
    spec: ExperimentSpec,
    cut_name: str,
    *,
    defense: str | None = None,
    strength: float | None = None,
    cache: CheckpointCache | None = None,
    progress: bool = True,
) -> Deployment:
    """``cut_name`` of the spec's model, defended by the spec's defense labelled ``defense`` (None: undefended).

    The model and the defended split come from the checkpoint cache when they were built before.
    ``strength`` defaults to the defense's first.
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
    trained = train_or_load(spec, cache=cache, data=data, progress=progress)
    deployed = deploy(spec, trained, cut_name, defense_spec, level, cache=cache, progress=progress)
    return Deployment(spec, trained, deployed, defense_spec, level)

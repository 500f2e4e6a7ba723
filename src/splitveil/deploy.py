"""The deployed split of one bench cell: the trained model cut at a cut, defended at a strength.

An inference-time defense (noise, dropout) wraps the undefended model's split as it is. A defense
that trains (NoPeek, adversarial training, PATROL; or noise with ``retrain: true``) is trained with
its loss terms and hooks through the one loop (:func:`splitveil.train.fit`), finalised (PATROL
prunes here), fine-tuned, and cached like every trained model: the key hashes the undefended
model's key, the cut, the defense's full description and the training settings.

Either way the accuracy reported is the deployed split's, measured on the test set with the
defense active as deployed (noise sampled, from a generator seeded by the spec).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from splitveil.checkpoint import (
    CACHE_FORMAT,
    CheckpointCache,
    config_hash,
    environment_versions,
    load_weights,
    read_metadata,
)
from splitveil.config import DefenseSpec, ExperimentSpec, TrainConfig
from splitveil.defenses import Defense, NoDefense, create_defense
from splitveil.errors import CheckpointError
from splitveil.experiment import TrainedModel, build_model
from splitveil.seeding import seeded
from splitveil.split import SplitModel, cut
from splitveil.train import LossTerm, WarmUp, distillation, evaluate, fit, steps_per_epoch


@dataclass
class DeployedSplit:
    """A split as deployed, with its defense and its test accuracy under that defense."""

    split: SplitModel
    defense: Defense
    accuracy: float | None  # None when the caller asked not to measure it (deploy(measure=False))
    from_cache: bool
    #: The defense's structural record (:meth:`Defense.finalize`), to rebuild the split elsewhere.
    finalize_record: dict[str, Any] = field(default_factory=dict)


def deploy(
    spec: ExperimentSpec,
    trained: TrainedModel,
    cut_name: str,
    defense_spec: DefenseSpec | None = None,
    strength: float = 0.0,
    *,
    cache: CheckpointCache | None = None,
    progress: bool = True,
    cached_only: bool = False,
    measure: bool = True,
) -> DeployedSplit:
    """The split of ``trained`` at ``cut_name`` with ``defense_spec`` at ``strength`` (None: undefended).

    ``cached_only``: a defended split that trains must already be in the cache (an error otherwise).
    ``measure=False`` skips the test-set evaluation (a caller that has the accuracy already).
    """
    if defense_spec is None:
        defense: Defense = NoDefense(strength=0.0)
    else:
        defense = create_defense(defense_spec.name, strength=strength, **defense_spec.options)
    needs_training = defense_spec is not None and strength > 0 and _trains(defense_spec, defense)
    record: dict[str, Any] = {}
    if defense_spec is not None and needs_training:
        split, from_cache, record = _train_defended(
            spec, trained, cut_name, defense_spec, defense, cache, progress, cached_only
        )
    else:
        split, from_cache = defense.apply(cut(trained.model, at=cut_name)), True
    split.eval()
    accuracy = None
    if measure:
        with seeded(spec.seed):  # noise defenses draw from the global generator, as deployed
            accuracy = evaluate(split, trained.data.test, batch_size=spec.train.eval_batch_size)["accuracy"]
    return DeployedSplit(split=split, defense=defense, accuracy=accuracy, from_cache=from_cache, finalize_record=record)


def _trains(defense_spec: DefenseSpec, defense: Defense) -> bool:
    return defense.requires_training if defense_spec.retrain is None else defense_spec.retrain


def defended_cache_key(
    trained: TrainedModel, cut_name: str, defense_spec: DefenseSpec, defense: Defense, training: TrainConfig
) -> str:
    """What determines a defended split's weights: the base model, the cut, the defense and its training."""
    return config_hash(
        {
            "format": CACHE_FORMAT,
            "base": trained.metadata["cache_key"],
            "cut": cut_name,
            "defense": defense.describe(),
            "init": defense_spec.init,
            "epochs": training.epochs,
            "lr": training.lr,
            "schedule": training.schedule,
            "warmup_epochs": defense_spec.warmup_epochs,
            "distill": defense_spec.distill,
            "distill_temperature": defense_spec.distill_temperature if defense_spec.distill > 0 else None,
            # only when set, so that the checkpoints cached before the field existed keep their keys
            **({"task_only_epochs": defense_spec.task_only_epochs} if defense_spec.task_only_epochs > 0 else {}),
        }
    )


class _FitOptions(TypedDict):
    """The keyword options of :func:`splitveil.train.fit` shared by a defense's training and fine-tuning."""

    seed: int
    loss_terms: Sequence[LossTerm]
    keep: Literal["best", "last"]
    progress: bool


def _train_defended(
    spec: ExperimentSpec,
    trained: TrainedModel,
    cut_name: str,
    defense_spec: DefenseSpec,
    defense: Defense,
    cache: CheckpointCache | None,
    progress: bool,
    cached_only: bool = False,
) -> tuple[SplitModel, bool, dict[str, Any]]:
    cache = cache or CheckpointCache.default()
    config = defense_spec.training(spec.train)
    key = defended_cache_key(trained, cut_name, defense_spec, defense, config)
    entry = cache.path(key)
    model = build_model(spec, trained.data)
    if defense_spec.init == "pretrained":
        model.load_state_dict(trained.model.state_dict())
    split = defense.apply(cut(model, at=cut_name))
    if cache.contains(key):
        record = read_metadata(entry).get("finalize", {})
        defense.restore(split, record)
        load_weights(entry, split)
        return split, True, record
    if cached_only:
        raise CheckpointError(
            f"the {defense_spec.display_name} split at {cut_name} is not in the checkpoint cache at {entry}; "
            "its deploy cell must run first (on several machines, --cache-dir must be on a shared filesystem)"
            + cache.miss_suffix()
        )
    train: _FitOptions = {"seed": spec.seed, "loss_terms": [defense.loss_terms], "keep": "last", "progress": progress}
    hooks = defense.hooks()
    if defense_spec.warmup_epochs > 0 or defense_spec.task_only_epochs > 0:
        per_epoch = steps_per_epoch(trained.data, config)
        warmup = WarmUp(
            round(defense_spec.warmup_epochs * per_epoch),
            delay=round(defense_spec.task_only_epochs * per_epoch),
            quiet=split,
        )
        hooks = [warmup, *hooks]
        train = {**train, "loss_terms": [warmup.scaled(defense.loss_terms)]}
    if defense_spec.distill > 0:  # the undefended model teaches, in training and in fine-tuning after pruning
        teacher = distillation(trained.model, weight=defense_spec.distill, temperature=defense_spec.distill_temperature)
        train = {**train, "loss_terms": [*train["loss_terms"], teacher]}
    result = fit(split, trained.data, config, hooks=hooks, **train)
    record = defense.finalize(split, model=build_model(spec, trained.data), input_shape=trained.data.input_shape)
    if record and defense.finetune_epochs > 0:
        finetune = defense_spec.training(spec.train).model_copy(update={"epochs": defense.finetune_epochs})
        result = fit(split, trained.data, finetune, hooks=defense.hooks(), **train)
    metadata: dict[str, Any] = {
        "cache_key": key,
        "base_cache_key": trained.metadata["cache_key"],
        "cut": cut_name,
        "defense": defense.describe(),
        "defense_spec": defense_spec.model_dump(mode="json"),
        "finalize": record,
        "seed": spec.seed,
        "metrics": result.metrics(),
        "versions": environment_versions(),
    }
    cache.store(key, split, metadata)
    return split, False, record

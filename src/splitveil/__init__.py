"""splitveil: split inference, its privacy attacks, its defenses, and their costs.

The public API is imported lazily, so ``import splitveil`` stays cheap and has no side effects.

Example:
    >>> import splitveil
    >>> model = splitveil.create_model("he-cnn", input_shape=(1, 28, 28), num_classes=10)
    >>> split = splitveil.cut(model, at="relu22")
    >>> split.profile((1, 28, 28)).feature_shape
    (32, 14, 14)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Registry": "splitveil.registry",
    "SplitModel": "splitveil.split",
    "cut": "splitveil.split",
    "valid_cuts": "splitveil.split",
    "CostProfile": "splitveil.profile",
    "profile_cuts": "splitveil.profile",
    "MODELS": "splitveil.models",
    "create_model": "splitveil.models",
    "list_models": "splitveil.models",
    "DATASETS": "splitveil.data",
    "load_dataset": "splitveil.data",
    "ImageSet": "splitveil.data",
    "DatasetSplits": "splitveil.data",
    "ExperimentSpec": "splitveil.config",
    "TrainConfig": "splitveil.config",
    "load_spec": "splitveil.config",
    "fit": "splitveil.train",
    "evaluate": "splitveil.train",
    "TrainHook": "splitveil.train",
    "train_or_load": "splitveil.experiment",
    "CheckpointCache": "splitveil.checkpoint",
    "SplitveilError": "splitveil.errors",
    "ATTACKS": "splitveil.attacks",
    "AttackerView": "splitveil.attacks",
    "Capability": "splitveil.attacks",
    "create_attack": "splitveil.attacks",
    "DEFENSES": "splitveil.defenses",
    "Defense": "splitveil.defenses",
    "create_defense": "splitveil.defenses",
    "deploy": "splitveil.deploy",
    "Deployment": "splitveil.serve.deployment",
    "load_deployment": "splitveil.serve.deployment",
    "METRICS": "splitveil.metrics",
    "mse": "splitveil.metrics",
    "psnr": "splitveil.metrics",
    "ssim": "splitveil.metrics",
    "estimate_mi": "splitveil.metrics",
    "privacy_accuracy": "splitveil.metrics",
    "run_bench": "splitveil.bench",
    "build_report": "splitveil.bench",
    "TuneSpec": "splitveil.tune",
    "load_tune_spec": "splitveil.tune",
    "run_tune": "splitveil.tune",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'splitveil' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

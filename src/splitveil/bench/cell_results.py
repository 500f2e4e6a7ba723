"""What each kind of cell returns, typed: the one schema the tasks write and the export and status read.

A cell's result is stored as JSON in the run's store (:mod:`splitveil.bench.store`). These frozen
models are that JSON's shape: a task builds one and stores ``model_dump(mode="json")``; a reader
validates the stored JSON back into one, so a field the reader needs and the writer did not store
fails loudly instead of reading ``None``. Fields added after runs were stored (re-identification)
default to None, so stores of earlier runs still read.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _CellResult(BaseModel):
    # Unknown keys are dropped, not refused: a store written by another version still reads (the
    # writers are checked by the type checker, which sees these fields as keyword arguments).
    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class TrainResult(_CellResult):
    """The ``train`` cell: the trained model's test accuracy and its cuts in depth order."""

    test_accuracy: float | None
    from_cache: bool
    cut_order: list[str]
    num_classes: int


class EvaluatorResult(_CellResult):
    """The ``evaluator`` cell: the independent classifier's accuracy on the clean targets."""

    evaluator_accuracy: float | None


class DeployResult(_CellResult):
    """A ``deploy`` cell: the deployed split's accuracy, costs, I(x; z) and output-privacy audit."""

    accuracy: float
    from_cache: bool
    mi: float | None
    output_privacy: dict[str, dict[str, float | str | None]] | None
    edge_flops: int
    cloud_flops: int
    edge_params: int
    feature_shape: list[int]
    feature_bytes: int


class AttackResult(_CellResult):
    """An ``attack`` cell: the reconstruction's figures; ``reconstruction_file`` is set by the driver."""

    ssim: float
    psnr: float
    mse: float
    privacy_accuracy: float | None
    targets: int
    attack_seconds: float
    reid_top1: float | None = None
    reid_top5: float | None = None
    reid_candidates: int | None = None
    reid_distance: str | None = None
    reconstruction_file: str | None = None

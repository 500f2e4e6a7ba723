"""The typed cell results: what the tasks store is what the export reads, and old stores still read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from splitveil.bench.cell_results import AttackResult, DeployResult, TrainResult

ATTACK = {"ssim": 0.5, "psnr": 18.0, "mse": 0.02, "privacy_accuracy": 0.7, "targets": 8, "attack_seconds": 1.5}


def test_an_attack_result_stored_before_re_identification_reads_with_none() -> None:
    result = AttackResult.model_validate({**ATTACK, "reconstruction_file": "reconstructions/x.safetensors"})
    assert result.reid_top1 is None and result.reid_candidates is None
    assert result.to_json()["reconstruction_file"] == "reconstructions/x.safetensors"


def test_a_result_missing_a_figure_the_export_needs_fails_loudly() -> None:
    with pytest.raises(ValidationError, match="ssim"):
        AttackResult.model_validate({k: v for k, v in ATTACK.items() if k != "ssim"})
    with pytest.raises(ValidationError, match="feature_bytes"):
        DeployResult.model_validate(
            {"accuracy": 0.9, "from_cache": False, "mi": None, "output_privacy": None, "edge_flops": 1,
             "cloud_flops": 1, "edge_params": 1, "feature_shape": [4]}
        )  # fmt: skip


def test_results_are_frozen_and_round_trip_through_json() -> None:
    train = TrainResult(test_accuracy=0.9, from_cache=True, cut_order=["conv11", "relu11"], num_classes=10)
    assert TrainResult.model_validate(train.to_json()) == train
    with pytest.raises(ValidationError):
        train.num_classes = 3  # type: ignore[misc]  # assigning to a frozen field is what is tested

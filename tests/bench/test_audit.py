"""One attack on one deployed split: the label oracle's labels, and re-identification in the audit."""

from __future__ import annotations

import pytest
import torch

from splitveil.audit import invert_features, reidentify, run_attack, transmitted_features
from splitveil.config import AttackSpec, ReidSpec
from splitveil.errors import ConfigError
from splitveil.models import create_model
from splitveil.split import cut


@pytest.fixture
def split():
    torch.manual_seed(0)
    model = create_model("he-cnn", input_shape=(1, 12, 12), num_classes=3, widths=(4, 8, 8), hidden=16)
    return cut(model.eval(), "relu22")


def test_captured_features_cannot_feed_the_label_oracle(split, tiny_data):
    features = transmitted_features(split, tiny_data.test.images[:4])
    oracle = AttackSpec(name="label-oracle", options={"steps": 2})
    with pytest.raises(ConfigError, match="needs the true labels"):
        invert_features(split, oracle, data=tiny_data, features=features, seed=0, progress=False)


def test_the_label_oracle_reconstructs_each_target_from_its_own_label(split, tiny_data):
    targets = tiny_data.test.take(6)
    spec = AttackSpec(name="label-oracle", options={"metric": "mse"})
    outcome = run_attack(split, spec, data=tiny_data, targets=targets, evaluator=None, seed=0, progress=False)
    aux = tiny_data.aux
    for reconstruction, label in zip(outcome.reconstruction, targets.labels, strict=True):
        assert torch.allclose(reconstruction, aux.images[aux.labels == label].mean(dim=0))


def test_reidentification_in_the_audit_uses_the_pool_it_has(split, tiny_data):
    targets = tiny_data.test.take(8)
    found = reidentify(targets.images, targets, pool=tiny_data.test, spec=ReidSpec(), evaluator=None, seed=0)
    smallest = min(int((tiny_data.test.labels == label).sum()) for label in targets.labels.unique())
    assert found.candidates == min(100, smallest)  # 32 test images in 3 classes: N is what the pool holds
    assert found.top1 == 1.0  # exact reconstructions
    with pytest.raises(ValueError, match="first images of the candidate pool"):
        reidentify(targets.images, tiny_data.test.take(8), pool=tiny_data.aux, spec=ReidSpec(), evaluator=None, seed=0)

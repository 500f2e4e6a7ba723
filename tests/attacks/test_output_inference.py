"""Output inference: the cloud's view of each query, and classifiers trained on it."""

from __future__ import annotations

import pytest
import torch

from splitveil.attacks.output_inference import (
    CloudView,
    OutputInferenceAttack,
    audit_output_privacy,
    observe_queries,
)
from splitveil.config import TrainConfig
from splitveil.defenses import create_defense
from splitveil.models import create_model
from splitveil.split import cut
from splitveil.train import evaluate, fit


@pytest.fixture(autouse=True)
def _on_one_thread(one_thread: None) -> None:
    """Tiny tensors: one thread."""


def _split(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model("he-cnn", input_shape=(1, 12, 12), num_classes=3, widths=(4, 8, 8), hidden=16)
    return cut(model, "relu22")


def _trained(split, data, epochs: int = 60):
    fit(split, data, TrainConfig(epochs=epochs, batch_size=32, lr=3e-3), seed=0, progress=False)
    return split.eval()


def test_the_view_of_an_unsalted_split_has_no_salts_and_its_argmax_is_the_prediction(tiny_data) -> None:
    split = _trained(_split(), tiny_data, epochs=10)
    seen = observe_queries(split, tiny_data.test.images)
    assert seen.salts is None and seen.z.shape[0] == seen.logits.shape[0] == len(tiny_data.test)
    result = audit_output_privacy(split, aux=tiny_data.aux, targets=tiny_data.test, epochs=5, progress=False)
    assert result.argmax_accuracy == pytest.approx(evaluate(split, tiny_data.test)["accuracy"])
    assert result.label_chance == pytest.approx(1 / 3) and result.salt_accuracy is None


def test_salted_queries_record_their_salts_and_the_cloud_argmax_is_not_the_label(tiny_data) -> None:
    split = create_defense("salted", strength=1.0, salt_at="relu11").apply(_split())
    split = _trained(split, tiny_data)
    torch.manual_seed(0)
    seen = observe_queries(split, tiny_data.test.images)
    assert seen.salts is not None and seen.salts.shape == (len(tiny_data.test),)
    decoded = split.edge.code.decode_labels(seen.logits.argmax(dim=1), seen.salts)
    client_accuracy = float((decoded == tiny_data.test.labels).float().mean())
    cloud_accuracy = float((seen.logits.argmax(dim=1) == tiny_data.test.labels).float().mean())
    assert client_accuracy > 0.7 and cloud_accuracy < client_accuracy - 0.3


def test_an_attacker_that_sees_the_features_recovers_the_label(tiny_data) -> None:
    # The blobs' brightness is their class and survives into z: features can give the label away
    # whatever the output says, which is why the audit reports each observation separately.
    split = _trained(_split(), tiny_data, epochs=10)
    features = audit_output_privacy(
        split, aux=tiny_data.train, targets=tiny_data.test, observe="features", epochs=30, progress=False
    )
    assert features.label_accuracy > 0.6  # chance is 1/3


def test_observations_have_the_documented_widths() -> None:
    seen = CloudView(z=torch.zeros(4, 2, 3, 3), logits=torch.zeros(4, 5), salts=None)
    assert seen.observation("logits").shape == (4, 5)
    assert seen.observation("features").shape == (4, 18)
    assert seen.observation("both").shape == (4, 23)
    with pytest.raises(ValueError, match="observe must be one of"):
        seen.observation("gradients")  # type: ignore[arg-type]


def test_predicting_before_fitting_is_a_clear_error() -> None:
    seen = CloudView(z=torch.zeros(2, 3), logits=torch.zeros(2, 3), salts=None)
    with pytest.raises(RuntimeError, match="fit"):
        OutputInferenceAttack().predict_labels(seen)

import pytest
import torch
from torch import nn

from splitveil.data import DatasetSplits, ImageSet
from splitveil.metrics import privacy_accuracy, train_evaluation_classifier
from splitveil.train import evaluate


class BrightnessClassifier(nn.Module):
    """Classifies the conftest ``tiny_data`` blobs perfectly: class k has mean brightness 0.15 + 0.3 k."""

    centres: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("centres", torch.tensor([0.15, 0.45, 0.75]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(x.mean(dim=(1, 2, 3)).unsqueeze(1) - self.centres).abs()


def _brightness_images(count: int, seed: int, *, size: int = 12) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (count,), generator=g)
    images = (torch.rand(count, 1, size, size, generator=g) * 0.3 + labels.view(-1, 1, 1, 1) * 0.3).clamp(0, 1)
    return ImageSet(images=images, labels=labels)


def _splits_whose_train_labels_are_wrong() -> DatasetSplits:
    """Brightness-coded classes; only ``train`` (the target's data) has its labels reversed.

    An evaluator that learnt from ``train`` would get only the middle class right on ``test``
    (about 1/3); one that learnt from ``aux``, as it must, scores high.
    """
    train = _brightness_images(240, seed=1)
    return DatasetSplits(
        name="brightness",
        train=ImageSet(train.images, 2 - train.labels),
        val=_brightness_images(60, seed=2),
        test=_brightness_images(90, seed=3),
        aux=_brightness_images(240, seed=4),
        num_classes=3,
        class_names=("dark", "mid", "bright"),
        seed=0,
    )


FAST = {"epochs": 5, "batch_size": 32, "lr": 3e-3}


def test_pa_of_perfect_reconstructions_is_the_clean_accuracy(tiny_data):
    classifier = BrightnessClassifier()
    clean = evaluate(classifier, tiny_data.test)["accuracy"]
    assert clean == 1.0
    assert privacy_accuracy(classifier, tiny_data.test.images, tiny_data.test.labels) == clean


def test_pa_equals_evaluate_for_an_imperfect_classifier(tiny_data):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = nn.Sequential(nn.Flatten(), nn.Linear(144, 3))
    clean = evaluate(untrained, tiny_data.test)["accuracy"]
    assert privacy_accuracy(untrained, tiny_data.test.images, tiny_data.test.labels, batch_size=5) == clean


def test_pa_of_constant_grey_images_is_lower(tiny_data):
    test = tiny_data.test
    grey = torch.full_like(test.images, 0.5)
    pa = privacy_accuracy(BrightnessClassifier(), grey, test.labels)
    # Every grey image is called "mid": PA is the share of that class, about chance (1/3).
    assert pa == pytest.approx(float((test.labels == 1).float().mean()))
    assert pa < 0.5


def test_pa_restores_the_classifier_mode_and_validates_inputs():
    classifier = BrightnessClassifier().train()
    images = torch.rand(4, 1, 12, 12)
    privacy_accuracy(classifier, images, torch.zeros(4, dtype=torch.int64))
    assert classifier.training
    with pytest.raises(ValueError, match="one label per reconstruction"):
        privacy_accuracy(classifier, images, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="NCHW"):
        privacy_accuracy(classifier, images[0], torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty"):
        privacy_accuracy(classifier, images[:0], torch.zeros(0, dtype=torch.int64))


def test_evaluation_classifier_learns_from_aux_never_from_the_target_train_split():
    data = _splits_whose_train_labels_are_wrong()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    classifier = train_evaluation_classifier(data, seed=0, **FAST)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's RNG is untouched
    assert not classifier.training
    assert type(classifier).__name__ == "LeNet"
    accuracy = privacy_accuracy(classifier, data.test.images, data.test.labels)
    assert accuracy > 0.9
    assert privacy_accuracy(classifier, torch.full_like(data.test.images, 0.5), data.test.labels) < accuracy


def test_evaluation_classifier_is_reproducible_and_accepts_an_image_set():
    images = _brightness_images(120, seed=5)
    first = train_evaluation_classifier(images, seed=3, epochs=1)
    second = train_evaluation_classifier(images, seed=3, epochs=1)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert first.state_dict()["fc3.bias"].shape == (3,)  # classes inferred from the labels
    wider = train_evaluation_classifier(images, seed=3, epochs=1, num_classes=5)
    assert wider.state_dict()["fc3.bias"].shape == (5,)


def test_evaluation_classifier_rejects_too_little_data():
    with pytest.raises(ValueError, match="at least 2 images"):
        train_evaluation_classifier(_brightness_images(1, seed=6))

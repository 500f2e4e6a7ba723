"""The privacy index PI = G · U, its edge cases, and PA as its privacy measure."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from splitveil.data import ImageSet
from splitveil.metrics import privacy_accuracy, privacy_index
from splitveil.train import evaluate

CHANCE = 0.1


def pi(pa_defended: float, accuracy_defended: float, *, pa_undefended: float = 0.9, accuracy_undefended: float = 0.9):
    return privacy_index(
        pa_defended=pa_defended,
        pa_undefended=pa_undefended,
        accuracy_defended=accuracy_defended,
        accuracy_undefended=accuracy_undefended,
        chance=CHANCE,
    )


def test_no_defense_scores_zero() -> None:
    assert pi(0.9, 0.9) == 0.0


def test_perfect_privacy_without_accuracy_loss_scores_the_maximum_one() -> None:
    assert pi(CHANCE, 0.9) == 1.0
    assert pi(0.0, 0.95) == 1.0  # below-chance PA and a gain in accuracy are clipped, not rewarded beyond 1


def test_losing_accuracy_without_gaining_privacy_scores_zero() -> None:
    assert pi(0.9, 0.5) == 0.0
    assert pi(0.95, 0.5) == 0.0  # a defense that makes reconstructions *more* recognisable gains nothing


def test_destroying_the_model_scores_zero_whatever_the_privacy() -> None:
    assert pi(CHANCE, CHANCE) == 0.0
    assert pi(CHANCE, 0.0) == 0.0


def test_privacy_and_utility_trade_off_as_a_product() -> None:
    assert pi(0.5, 0.9) == pytest.approx(0.5)  # half the privacy at no cost
    assert pi(CHANCE, 0.5) == pytest.approx(0.5)  # full privacy at half the utility
    assert pi(0.5, 0.5) == pytest.approx(0.25)


def test_no_privacy_to_gain_when_the_undefended_attack_is_already_at_chance() -> None:
    assert pi(0.05, 0.9, pa_undefended=CHANCE) == 0.0
    assert pi(0.05, 0.9, pa_undefended=0.08) == 0.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pa_defended": 1.5}, "pa_defended"),
        ({"accuracy_defended": float("nan")}, "accuracy_defended"),
        ({"pa_undefended": -0.1}, "pa_undefended"),
        ({"accuracy_undefended": True}, "accuracy_undefended"),
        ({"chance": 0.0}, "chance"),
        ({"chance": 1.0}, "chance"),
        ({"accuracy_undefended": 0.1}, "no better than chance"),
    ],
)
def test_invalid_values_are_value_errors(overrides: dict[str, object], message: str) -> None:
    values = {
        "pa_defended": 0.5,
        "pa_undefended": 0.9,
        "accuracy_defended": 0.8,
        "accuracy_undefended": 0.9,
        "chance": CHANCE,
        **overrides,
    }
    with pytest.raises(ValueError, match=message):
        privacy_index(**values)  # type: ignore[arg-type]


fractions = st.floats(min_value=0.0, max_value=1.0)


@settings(max_examples=200, deadline=None)
@given(pa_a=fractions, pa_b=fractions, acc_a=fractions, acc_b=fractions, pa_u=fractions)
def test_is_bounded_and_monotone(pa_a: float, pa_b: float, acc_a: float, acc_b: float, pa_u: float) -> None:
    low_pa, high_pa = sorted((pa_a, pa_b))
    low_acc, high_acc = sorted((acc_a, acc_b))
    values = [pi(p, a, pa_undefended=pa_u) for p in (low_pa, high_pa) for a in (low_acc, high_acc)]
    assert all(0.0 <= v <= 1.0 for v in values)
    at_low_pa_low_acc, at_low_pa_high_acc, at_high_pa_low_acc, at_high_pa_high_acc = values
    assert at_low_pa_high_acc >= at_high_pa_high_acc  # more recognisable reconstructions: no higher PI
    assert at_low_pa_high_acc >= at_low_pa_low_acc  # more accuracy kept: no lower PI


class _Threshold(nn.Module):
    """A deterministic, imperfect evaluation classifier: class 1 iff the mean pixel exceeds 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.mean(dim=(1, 2, 3)) - 0.5
        return torch.stack([-score, score], dim=1)


def test_pa_of_perfect_reconstructions_is_the_clean_accuracy_and_scores_no_privacy(tiny_data) -> None:
    classifier = _Threshold()
    images, labels = tiny_data.test.images, (tiny_data.test.labels > 0).long()  # dark vs mid/bright
    labels[:5] = 1 - labels[:5]  # some wrong labels, so the clean accuracy is not 1
    clean_accuracy = evaluate(classifier, ImageSet(images, labels))["accuracy"]
    assert 0.5 < clean_accuracy < 1.0
    pa = privacy_accuracy(classifier, images.clone(), labels)  # x_hat == x: a perfect reconstruction
    assert pa == clean_accuracy
    no_gain = privacy_index(
        pa_defended=pa, pa_undefended=clean_accuracy, accuracy_defended=0.9, accuracy_undefended=0.9, chance=0.5
    )
    assert no_gain == 0.0

"""Instance re-identification against brute force and its two anchors: exact reconstructions always
re-identify, class-mean reconstructions do no better than chance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from splitveil.metrics import candidate_sets, classifier_embedding, reidentification, ssim


def _synthetic_classes(classes: int = 4, per_class: int = 300, size: int = 12, seed: int = 0):
    """Images of a class share a template; each instance adds its own smooth variation."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, 1, size, size, generator=generator)
    labels = torch.arange(classes).repeat_interleave(per_class)
    variation = torch.nn.functional.avg_pool2d(
        torch.randn(len(labels), 1, size, size, generator=generator), 3, stride=1, padding=1
    )
    images = (0.7 * templates[labels] + 0.3 * variation.sigmoid()).clamp(0, 1)
    return images, labels


def test_candidate_sets_hold_the_target_first_then_distinct_same_class_others():
    _, labels = _synthetic_classes()
    targets = torch.arange(0, 1200, 97)
    sets = candidate_sets(labels, targets, candidates=50, seed=3)
    assert sets.shape == (len(targets), 50)
    assert torch.equal(sets[:, 0], targets)
    for row, target in zip(sets, targets, strict=True):
        assert len(row.unique()) == 50
        assert bool((labels[row] == labels[target]).all())
    assert torch.equal(sets, candidate_sets(labels, targets, candidates=50, seed=3))


def test_too_few_same_class_images_is_a_clear_error():
    labels = torch.tensor([0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="fewer than the 2 re-identification needs"):
        candidate_sets(labels, torch.tensor([0]), candidates=3)


def test_exact_reconstructions_reidentify_every_target():
    images, labels = _synthetic_classes()
    targets = torch.arange(0, 1200, 7)
    sets = candidate_sets(labels, targets, candidates=100)
    embed = classifier_embedding(nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.ReLU(), nn.Linear(16, 4)))
    result = reidentification(images[targets], images, sets, embed=embed)
    assert result.top1 == 1.0 and result.top5 == 1.0
    assert set(result.by_distance) == {"l2", "ssim", "embedding"}
    assert all(top1 == 1.0 for top1, _ in result.by_distance.values())


def test_class_mean_reconstructions_score_chance():
    images, labels = _synthetic_classes(classes=4, per_class=1500)
    targets = torch.arange(len(labels))  # every image a target: 6,000 draws make the estimate tight
    sets = candidate_sets(labels, targets, candidates=100, seed=1)
    means = torch.stack([images[labels == c].mean(dim=0) for c in range(4)])
    result = reidentification(means[labels[targets]], images, sets, distances=("l2", "ssim"))
    assert result.candidates == 100
    assert abs(result.top1 - 1 / 100) <= 2 / 100
    assert abs(result.top5 - 5 / 100) <= 2 / 100


def test_ties_count_against_the_attacker():
    pool = torch.zeros(4, 1, 12, 12)  # every candidate identical: no distance can single one out
    result = reidentification(pool[:1], pool, torch.tensor([[0, 1, 2, 3]]), distances=("l2",))
    assert result.top1 == 0.0 and result.top5 == 1.0


def test_matches_a_brute_force_ranking():
    images, labels = _synthetic_classes(per_class=40)
    generator = torch.Generator().manual_seed(5)
    targets = torch.arange(0, 160, 3)
    sets = candidate_sets(labels, targets, candidates=20, seed=2)
    x_hat = (images[targets] + 0.4 * torch.randn(images[targets].shape, generator=generator)).clamp(0, 1)
    result = reidentification(x_hat, images, sets, distances=("l2", "ssim"))
    for name, distance in {
        "l2": lambda a, b: float(((a - b) ** 2).sum()),
        "ssim": lambda a, b: 1 - float(ssim(a[None], b[None])),
    }.items():
        hits1 = hits5 = 0
        for reconstruction, row in zip(x_hat, sets, strict=True):
            values = [distance(reconstruction, images[index]) for index in row]
            nearer = sum(value <= values[0] for value in values[1:])
            hits1 += nearer < 1
            hits5 += nearer < 5
        assert result.by_distance[name] == pytest.approx((hits1 / len(sets), hits5 / len(sets)))
    assert result.top1 == max(top1 for top1, _ in result.by_distance.values())


def test_embedding_is_the_last_linear_layers_input_and_restores_the_mode():
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).train()
    x = torch.rand(5, 1, 2, 2)
    expected = classifier[:3](x)
    assert torch.allclose(classifier_embedding(classifier, batch_size=2)(x), expected)
    assert classifier.training


def test_bad_shapes_and_distances_are_refused():
    pool = torch.rand(4, 1, 12, 12)
    with pytest.raises(ValueError, match="one candidate set per reconstruction"):
        reidentification(pool[:2], pool, torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="needs embed="):
        reidentification(pool[:1], pool, torch.tensor([[0, 1, 2]]), distances=("embedding",))

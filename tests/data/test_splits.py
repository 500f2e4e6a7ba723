"""ImageSet / DatasetSplits containers and the seeded make_splits helper."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splitveil.data import DatasetSplits, ImageSet, make_splits
from splitveil.errors import ConfigError


def image_set(n: int, c: int = 1, side: int = 4) -> ImageSet:
    images = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, c, side, side)
    return ImageSet(images.contiguous() / max(n, 1), torch.arange(n) % 3)


def test_image_set_defaults_source_index():
    s = image_set(5)
    assert len(s) == 5
    assert s.source_index is not None
    assert s.source_index.tolist() == [0, 1, 2, 3, 4]


def test_subset_and_take_keep_rows_together():
    s = image_set(6)
    sub = s.subset([4, 1])
    assert sub.indices.tolist() == [4, 1]
    assert sub.labels.tolist() == [1, 1]
    assert torch.equal(sub.images[0], s.images[4])
    assert s.subset(torch.tensor([2])).indices.tolist() == [2]
    assert len(s.take(2)) == 2 and s.take(2).indices.tolist() == [0, 1]
    assert len(s.take(100)) == 6
    assert len(s.take(0)) == 0


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (torch.zeros(2, 1, 4, 4, dtype=torch.float64), torch.zeros(2, dtype=torch.int64), "float32"),
        (torch.zeros(2, 4, 4), torch.zeros(2, dtype=torch.int64), r"\[N, C, H, W\]"),
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int32), "int64"),
        (torch.zeros(2, 1, 4, 4), torch.zeros(3, dtype=torch.int64), "2 images but 3 labels"),
    ],
)
def test_image_set_validation(images, labels, match):
    with pytest.raises(ValueError, match=match):
        ImageSet(images, labels)


def test_image_set_rejects_bad_source_index():
    with pytest.raises(ValueError, match="source_index"):
        ImageSet(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))


def test_dataset_splits_input_shape_and_checks():
    s = image_set(4, c=3)
    splits = DatasetSplits("toy", s, s, s, s, num_classes=3, class_names=("a", "b", "c"), seed=0)
    assert splits.input_shape == (3, 4, 4)
    assert list(splits.as_dict()) == ["train", "val", "test", "aux"]
    with pytest.raises(ValueError, match="class names"):
        DatasetSplits("toy", s, s, s, s, num_classes=2, class_names=("a",), seed=0)
    with pytest.raises(ValueError, match="image shape"):
        DatasetSplits("toy", s, s, s, image_set(4, c=1), 3, ("a", "b", "c"), 0)
    with pytest.raises(ValueError, match="labels fall outside"):
        DatasetSplits("toy", s, s, s, s, 2, ("a", "b"), 0)


def test_make_splits_sizes_and_determinism():
    a = make_splits(100, {"aux": 0.2, "val": 0.1}, seed=3)
    b = make_splits(100, {"aux": 0.2, "val": 0.1}, seed=3)
    c = make_splits(100, {"aux": 0.2, "val": 0.1}, seed=4)
    assert {k: len(v) for k, v in a.items()} == {"aux": 20, "val": 10, "train": 70}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["train"], c["train"])


def test_make_splits_ignores_and_preserves_global_rng():
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = make_splits(50, {"val": 0.2}, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(2)
    b = make_splits(50, {"val": 0.2}, seed=0)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_make_splits_stratified_keeps_class_balance():
    labels = torch.arange(200) // 100  # sorted: 100 of class 0 then 100 of class 1
    splits = make_splits(200, {"test": 0.2, "val": 0.1}, seed=0, stratify=labels)
    assert torch.bincount(labels[splits["test"]]).tolist() == [20, 20]
    assert torch.bincount(labels[splits["val"]]).tolist() == [10, 10]
    # shuffled within the split, so a prefix is mixed too
    assert set(labels[splits["test"][:10]].tolist()) == {0, 1}


def test_make_splits_limit_per_split():
    splits = make_splits(100, {"aux": 0.5}, seed=0, limit_per_split=7)
    assert {k: len(v) for k, v in splits.items()} == {"aux": 7, "train": 7}


@pytest.mark.parametrize(
    ("fractions", "match"),
    [
        ({"aux": 1.0}, "aux_fraction must be in"),
        ({"val": -0.1}, "val_fraction must be in"),
        ({"val": "0.1"}, "val_fraction must be a number"),
        ({"aux": 0.6, "val": 0.5}, "aux_fraction \\+ val_fraction must sum to less than 1"),
    ],
)
def test_make_splits_rejects_bad_fractions(fractions, match):
    with pytest.raises(ConfigError, match=match):
        make_splits(10, fractions, seed=0)


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_make_splits_rejects_bad_limit(limit):
    with pytest.raises(ConfigError, match="limit"):
        make_splits(10, {"aux": 0.1}, seed=0, limit_per_split=limit)


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(0, 300),
    aux=st.floats(0, 0.45),
    val=st.floats(0, 0.45),
    seed=st.integers(0, 2**31),
)
def test_make_splits_is_a_partition(n, aux, val, seed):
    splits = make_splits(n, {"aux": aux, "val": val}, seed=seed)
    joined = torch.cat(list(splits.values()))
    assert sorted(joined.tolist()) == list(range(n))

import json

import pytest
import torch
from torch import nn

from splitveil.checkpoint import (
    WEIGHTS_FILE,
    CheckpointCache,
    config_hash,
    load_weights,
    read_metadata,
    save_checkpoint,
)
from splitveil.errors import CheckpointError


def test_config_hash_ignores_key_order_and_sees_values():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    save_checkpoint(tmp_path / "ck", model, {"seed": 3})
    fresh = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    load_weights(tmp_path / "ck", fresh)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert read_metadata(tmp_path / "ck") == {"seed": 3}
    assert not list(tmp_path.glob(".ck.*")), "staging directory left behind"


def test_weights_file_is_not_a_pickle(tmp_path):
    save_checkpoint(tmp_path / "ck", nn.Linear(2, 2), {})
    header_length = int.from_bytes((tmp_path / "ck" / WEIGHTS_FILE).read_bytes()[:8], "little")
    header = json.loads((tmp_path / "ck" / WEIGHTS_FILE).read_bytes()[8 : 8 + header_length])
    assert set(header) >= {"weight", "bias"}


def test_mismatched_model_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "ck", nn.Linear(2, 2), {})
    with pytest.raises(CheckpointError, match="do not fit Linear.*wrong shape"):
        load_weights(tmp_path / "ck", nn.Linear(2, 3))


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="train the model first"):
        load_weights(tmp_path / "none", nn.Linear(2, 2))
    save_checkpoint(tmp_path / "ck", nn.Linear(2, 2), {})
    (tmp_path / "ck" / WEIGHTS_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_weights(tmp_path / "ck", nn.Linear(2, 2))


def test_cache_contains_only_complete_entries(tmp_path):
    cache = CheckpointCache(tmp_path)
    assert not cache.contains("k")
    cache.path("k").mkdir(parents=True)
    (cache.path("k") / WEIGHTS_FILE).write_bytes(b"")
    assert not cache.contains("k")  # no metadata: an interrupted write is not a finished entry
    save_checkpoint(cache.path("k"), nn.Linear(1, 1), {})
    assert cache.contains("k")


def test_a_cache_built_directly_and_by_default_from_one_directory_is_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLITVEIL_CACHE", str(tmp_path / "elsewhere"))
    assert CheckpointCache(tmp_path) == CheckpointCache.default(tmp_path)
    assert CheckpointCache.default() == CheckpointCache(tmp_path / "elsewhere")
    assert CheckpointCache(tmp_path).path("k") == tmp_path / "checkpoints" / "k"


def test_entries_of_another_cache_format_are_named_on_a_miss(tmp_path):
    from splitveil.checkpoint import CACHE_FORMAT

    cache = CheckpointCache(tmp_path)
    assert cache.stale_entries() == [] and cache.miss_note() == ""
    written = cache.store("current", nn.Linear(2, 2), {"kind": "test"})
    assert read_metadata(written)["cache_format"] == CACHE_FORMAT
    old = save_checkpoint(cache.path("old"), nn.Linear(2, 2), {"kind": "test"})  # as format 1 wrote entries
    assert cache.stale_entries() == [old]
    assert cache.miss_note().startswith(f"1 checkpoint(s) in {cache.checkpoints} were written with another cache")

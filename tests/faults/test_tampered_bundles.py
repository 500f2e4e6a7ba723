"""Tampered bundles: real files edited as an attacker or a careless operator would, each refused at load.

A bundle is exported once per module (a tiny trained model, and a salted one whose edge-side salt
layers are built from options), then copied and edited per test. Every refusal is one
``CheckpointError`` line naming the file and the field, raised before a model of the tampered size
is built; ``splitveil serve`` and ``splitveil infer`` print that line and exit 2.
"""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from splitveil.checkpoint import CheckpointCache
from splitveil.config import DefenseSpec, parse_spec
from splitveil.data import DatasetSplits, ImageSet
from splitveil.deploy import deploy
from splitveil.errors import CheckpointError
from splitveil.experiment import train_or_load
from splitveil.serve import export_bundle, load_half
from splitveil.serve.bundle_metadata import MAX_METADATA_BYTES
from splitveil.serve.process import free_port

SPEC = parse_spec(
    {
        "model": {"name": "he-cnn", "options": {"widths": [4, 8, 8], "hidden": 16}},
        "train": {"epochs": 1, "batch_size": 32, "lr": 3e-3},
    }
)
SALTED = DefenseSpec(name="salted", strengths=[0.5], options={"key": "k"}, epochs=1)


def _blobs(count: int, generator: torch.Generator) -> ImageSet:
    labels = torch.randint(0, 3, (count,), generator=generator)
    images = (torch.rand(count, 1, 12, 12, generator=generator) * 0.3 + labels.view(-1, 1, 1, 1) * 0.3).clamp(0, 1)
    return ImageSet(images=images, labels=labels)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``{"none": bundle, "salted": bundle}``, exported once; tests edit copies."""
    root = tmp_path_factory.mktemp("tampered")
    generator = torch.Generator().manual_seed(0)
    splits = {name: _blobs(32 if name != "train" else 96, generator) for name in ("train", "val", "test", "aux")}
    data = DatasetSplits(name="blobs", num_classes=3, class_names=("dark", "mid", "bright"), seed=0, **splits)
    cache = CheckpointCache(root / "cache")
    trained = train_or_load(SPEC, cache=cache, data=data, progress=False)
    bundles = {}
    for name, defense, strength in (("none", None, 0.0), ("salted", SALTED, 0.5)):
        deployed = deploy(SPEC, trained, "relu22", defense, strength, cache=cache, progress=False)
        bundles[name] = export_bundle(
            root / name, spec=SPEC, trained=trained, deployed=deployed, defense_spec=defense, strength=strength
        )
    return bundles


@pytest.fixture
def bundle(exported, tmp_path):
    return shutil.copytree(exported["none"], tmp_path / "bundle")


def _edit_meta(bundle, edit, half="cloud"):
    path = bundle / half / "meta.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _refusal(bundle, half="cloud") -> str:
    with pytest.raises(CheckpointError) as refused:
        load_half(bundle, half)
    message = str(refused.value)
    assert "\n" not in message and "splitveil export" in message  # one line, with the fix
    return message


def _set(field: str, value):
    """An edit setting the dotted ``field`` of the metadata to ``value``."""

    def edit(meta):
        *parents, last = field.split(".")
        for part in parents:
            meta = meta[part]
        meta[last] = value

    return edit


def test_the_untampered_bundle_loads(bundle):
    assert load_half(bundle, "cloud").feature_shape == (8, 6, 6)
    assert load_half(bundle, "edge").feature_shape == (8, 6, 6)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        # Edited: a shape the cloud half could run but the edge never sends (correct requests got 422).
        ("feature_shape", [8, 6, 7], r"feature_shape \[8, 6, 7\] is not what the edge .* outputs \(\[8, 6, 6\]\)"),
        ("feature_shape", [8, 3, 3], r"feature_shape \[8, 3, 3\] is not what the edge"),
        # Inflated: this one raised a server's body limit to 258 TB.
        ("feature_shape", [8, 60000, 60000], "holds 28800000000 values per sample, more than the 4194304 allowed"),
        ("feature_shape", [8, 0, 6], "feature_shape must be an integer from 1 to"),
        ("feature_shape", [8, "6", 6], "feature_shape must be an integer"),
        ("feature_shape", [1] * 9, "feature_shape must list 1 to 7 sizes"),
        ("input_shape", [1, 12], "input_shape must list 3 sizes"),
        ("num_classes", True, "num_classes must be an integer from 1 to 65536, not True"),
        ("class_names", ["dark"], "class_names must list num_classes=3 names"),
        ("strength", float("inf"), "strength must be a finite number >= 0"),
        ("cut", "no-such-layer", "cut does not build"),
        ("spec.model.name", "resnet9000", "spec.model.name 'resnet9000' is not a model of this version"),
        ("spec.model.options.hidden", 10**12, r"spec.model.options.hidden must be an integer from 0 to 65536"),
        ("spec.model.options.depth", 3, "has 'depth', which model 'he-cnn' does not take"),
        ("spec.model.options.widths", list(range(1, 100)), "widths nests more than 64 items"),
        ("finalize", None, "finalize must be a JSON object"),
    ],
)
def test_a_tampered_field_is_refused_at_load_by_name(bundle, field, value, message):
    _edit_meta(bundle, _set(field, value))
    refusal = _refusal(bundle)
    assert str(bundle / "cloud" / "meta.json") in refusal
    assert field.split(".")[0] in refusal
    assert re.search(message, refusal), refusal


def test_a_missing_field_is_named(bundle):
    _edit_meta(bundle, lambda meta: meta.pop("num_classes"))
    assert "num_classes is missing" in _refusal(bundle)


def test_huge_model_options_are_refused_before_they_are_allocated(bundle):
    # 65536-wide convolutions pass the per-option cap, but the model would need 150 GB: the build
    # runs under a tensor budget that refuses the first such allocation before it is made.
    _edit_meta(bundle, _set("spec.model.options.widths", [65536, 65536, 65536]))
    assert "spec.model asks for too large a model" in _refusal(bundle)


def test_huge_defense_options_are_refused_before_they_are_allocated(exported, tmp_path):
    salted = shutil.copytree(exported["salted"], tmp_path / "salted")
    assert load_half(salted, "cloud").feature_shape == (8, 6, 6)
    # The cloud's metadata still builds the edge-side salt layers: tile x tile kernels per salt.
    _edit_meta(salted, _set("defense.options.tile", 60000))
    assert "defense asks for too large a model" in _refusal(salted)
    _edit_meta(salted, _set("defense.options.tile", float("nan")))
    assert "defense.options.tile must be finite" in _refusal(salted)


def _rewrite_weights(bundle, change, half="cloud"):
    path = bundle / half / "model.safetensors"
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


def test_weights_of_the_wrong_shape_are_refused_from_the_header(bundle):
    _rewrite_weights(bundle, lambda state: state.update({"fc2.weight": torch.zeros(4, 16)}))
    message = _refusal(bundle)
    assert (
        "model.safetensors: tensor 'fc2.weight' is F32 [4, 16], but the model in meta.json needs F32 [3, 16]" in message
    )


def test_weights_that_fit_another_num_classes_are_refused(bundle):
    # meta.json edited consistently (4 classes, 4 names): the weights still hold 3.
    _edit_meta(bundle, _set("num_classes", 4))
    _edit_meta(bundle, _set("class_names", ["a", "b", "c", "d"]))
    message = _refusal(bundle)
    assert "tensor 'fc2.weight' is F32 [3, 16], but the model in meta.json needs F32 [4, 16]" in message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda state: state.pop("fc1.bias"), "lacks tensor 'fc1.bias', which the model in meta.json has"),
        (
            lambda state: state.update(stowaway=torch.zeros(1)),
            "has tensor 'stowaway', which the model in meta.json does not",
        ),
        (lambda state: state.update({"fc1.bias": state["fc1.bias"].half()}), "tensor 'fc1.bias' is F16 [16]"),
    ],
    ids=["missing", "extra", "float16"],
)
def test_missing_extra_and_half_precision_weights_are_refused(bundle, change, message):
    _rewrite_weights(bundle, change)
    assert message in _refusal(bundle)


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_not_served(bundle, poison):
    _rewrite_weights(bundle, lambda state: state.update({k: torch.full_like(v, poison) for k, v in state.items()}))
    assert "holds NaN or infinite values" in _refusal(bundle)


def test_weights_that_overflow_in_the_dry_run_are_refused(bundle):
    # Finite, so the file passes; but two layers of 1e30 weights overflow float32 on any sample.
    _rewrite_weights(bundle, lambda state: state.update({k: torch.full_like(v, 1e30) for k, v in state.items()}))
    assert "the cloud half's weights compute NaN or infinity" in _refusal(bundle)


def test_truncated_and_oversized_files_are_refused_with_bounded_reads(bundle):
    meta = bundle / "cloud" / "meta.json"
    original = meta.read_bytes()
    meta.write_bytes(original[: len(original) // 2])
    assert "meta.json is not valid JSON" in _refusal(bundle)
    meta.write_bytes(original + b" " * MAX_METADATA_BYTES)  # valid JSON, but no bundle's metadata is a megabyte
    assert f"is larger than {MAX_METADATA_BYTES} bytes" in _refusal(bundle)
    meta.write_bytes(b"[1, 2, 3]")
    assert "holds a JSON list, not an object" in _refusal(bundle)
    meta.write_bytes(original)
    weights = bundle / "cloud" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    assert "model.safetensors is not a safetensors file" in _refusal(bundle)
    weights.write_bytes(data + b"\x00" * (2 << 20))  # 2 MiB more than the model's weights could need
    assert "model.safetensors is" in _refusal(bundle) and "bytes of weights" in _refusal(bundle)


def test_the_edge_half_is_checked_as_well(bundle):
    _edit_meta(bundle, _set("feature_shape", [8, 6, 7]), half="edge")
    assert "feature_shape [8, 6, 7] is not what the edge" in _refusal(bundle, half="edge")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "splitveil.cli", *args], capture_output=True, text=True, timeout=120)


def test_serve_and_infer_refuse_a_tampered_bundle_in_one_line(bundle, tmp_path):
    _edit_meta(bundle, _set("feature_shape", [8, 60000, 60000]))
    _edit_meta(bundle, _set("feature_shape", [8, 6, 7]), half="edge")
    served = _cli("serve", "--checkpoint", str(bundle), "--no-auth", "--port", str(free_port()))
    images = tmp_path / "image.npy"
    np.save(images, torch.rand(1, 1, 12, 12).numpy())
    inferred = _cli("infer", str(images), "--checkpoint", str(bundle), "--url", "http://127.0.0.1:1")
    for result, message in ((served, "feature_shape"), (inferred, "feature_shape [8, 6, 7]")):
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr

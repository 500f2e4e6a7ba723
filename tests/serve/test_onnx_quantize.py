"""The int8 edge: smaller, close to the float32 edge, run by OnnxEdge, with the defense still in the graph."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from splitveil.defenses import create_defense
from splitveil.edge import OnnxEdge, read_onnx_metadata, secure_session
from splitveil.errors import CheckpointError
from splitveil.models import create_model
from splitveil.serve.onnx_export import RANDOM_OPS, export_onnx
from splitveil.serve.onnx_quantize import INT8_EDGE_FILE, QuantizedEdge, quantize_edge
from splitveil.split import cut

METADATA: dict[str, dict[str, Any]] = {"edge": {"cut": "x", "defense": None}, "cloud": {"cut": "x"}}
#: Mean |int8 − float32| of the feature as a share of mean |float32|. Each of the eight quantised
#: tensors of he-cnn's relu32 edge (four conv inputs, four weight sets) is rounded to half a step of
#: 1/255 of its calibrated range, which measures about 1% over seeds 0-2 for an untrained model on
#: in-distribution images (3-5% for trained ones); a wrong scale or zero point costs tens of percent.
FEATURE_TOLERANCE = 0.03


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _quantized(split, directory, *, calibration: int = 64) -> QuantizedEdge:
    halves = export_onnx(split, directory, samples=_images(4, 0), metadata=METADATA)
    check = _images(32, 2).numpy()
    return quantize_edge(
        halves.edge,
        halves.cloud,
        calibration=_images(calibration, 1).numpy(),
        check_images=check,
        check_labels=np.arange(32) % 10,
    )


def _random_ops(path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(path).graph.node if node.op_type in RANDOM_OPS)


@pytest.fixture(scope="module")
def relu32_int8(tmp_path_factory):
    """he-cnn cut at relu32: 72k weights, so that weights, not the graph's structure, dominate the file."""
    torch.manual_seed(0)
    return _quantized(cut(create_model("he-cnn").eval(), "relu32"), tmp_path_factory.mktemp("relu32"))


def test_the_int8_edge_runs_on_the_device_and_keeps_the_float32_metadata(relu32_int8) -> None:
    path = relu32_int8.path
    assert path.name == INT8_EDGE_FILE
    edge = OnnxEdge(path)
    features, salts = edge.features(_images(3, 5).numpy())
    assert features.shape == (3, 64, 7, 7) and salts is None and np.isfinite(features).all()
    fp32, int8 = read_onnx_metadata(path.with_name("edge.onnx")), read_onnx_metadata(path)
    assert fp32["precision"] == "float32" and int8["precision"] == "int8"
    assert int8["quantization"]["format"] == "QOperator" and int8["quantization"]["calibration"]["images"] == 64
    kept = {key: value for key, value in int8.items() if key not in ("precision", "quantization", "opset")}
    assert kept == {key: value for key, value in fp32.items() if key not in ("precision", "opset")}


def test_the_int8_file_is_over_three_times_smaller_when_weights_dominate(relu32_int8) -> None:
    # int8 weights are a quarter of float32's; scales and zero points take some back.
    assert relu32_int8.size == relu32_int8.path.stat().st_size
    assert relu32_int8.size_ratio > 3


def test_a_small_edge_with_a_defense_is_still_over_three_times_smaller(tmp_path) -> None:
    # relu22's edge has 16k weights, and feature dropout adds float32 ops: the fixed bytes of the graph
    # weigh here, so the int8 file must carry nothing the device does not need (no shape annotations).
    torch.manual_seed(0)
    split = create_defense("feature-dropout", strength=0.4).apply(cut(create_model("he-cnn").eval(), "relu22"))
    quantized = _quantized(split, tmp_path)
    assert not onnx.load(quantized.path).graph.value_info
    assert quantized.size_ratio > 3


def test_int8_features_agree_with_float32_within_the_quantisation_step(relu32_int8) -> None:
    images = {"image": _images(32, 7).numpy()}  # not the calibration images
    reference = secure_session(relu32_int8.path.with_name("edge.onnx")).run(None, images)[0]
    quantized = secure_session(relu32_int8.path).run(None, images)[0]
    error = np.abs(quantized - reference).mean() / np.abs(reference).mean()
    assert 0 < error <= FEATURE_TOLERANCE  # not zero: the graph really was quantised
    assert relu32_int8.feature_error is not None and relu32_int8.feature_error <= FEATURE_TOLERANCE
    assert 0 <= relu32_int8.accuracy <= 1 and relu32_int8.checked == 32


@pytest.mark.parametrize(
    ("defense", "options"), [("gaussian-noise", {}), ("gaussian-noise", {"where": "input"}), ("feature-dropout", {})]
)
def test_a_noise_defenses_random_ops_survive_quantisation(tmp_path, defense: str, options: dict) -> None:
    torch.manual_seed(0)
    split = create_defense(defense, strength=0.5, **options).apply(cut(create_model("he-cnn").eval(), "relu22"))
    quantized = _quantized(split, tmp_path)
    assert _random_ops(quantized.path) == _random_ops(tmp_path / "edge.onnx") != Counter()
    assert quantized.feature_error is None  # draws differ anyway: no gap is claimed
    x = {"image": _images(1, 9).numpy()}
    fp32, int8 = secure_session(tmp_path / "edge.onnx"), secure_session(quantized.path)
    fp32_draws = np.stack([fp32.run(None, x)[0] for _ in range(400)])
    int8_draws = np.stack([int8.run(None, x)[0] for _ in range(400)])
    assert not np.array_equal(int8_draws[0], int8_draws[1])
    # The spread over draws is the defense's: quantisation moves the feature it is applied to by ~1%
    # (FEATURE_TOLERANCE), not the spread of the noise or mask drawn in float32.
    assert int8_draws.std(0).mean() == pytest.approx(fp32_draws.std(0).mean(), rel=0.1)


def test_a_salted_edge_keeps_its_salt_input_and_decodes_on_the_device(tmp_path) -> None:
    torch.manual_seed(0)
    split = create_defense("salted", strength=0.5, num_classes=10).apply(cut(create_model("he-cnn").eval(), "relu22"))
    quantized = _quantized(split, tmp_path)
    edge = OnnxEdge(quantized.path)
    assert edge.salted and read_onnx_metadata(quantized.path)["inputs"] == ["image", "salt"]
    features, salts = edge.features(_images(4, 3).numpy())
    answer = secure_session(tmp_path / "cloud.onnx").run(None, {"feature": features})[0]
    assert salts is not None and edge.decode(answer, salts).shape == (4, 10)
    assert quantized.feature_error is not None and quantized.feature_error <= FEATURE_TOLERANCE


def test_only_a_float32_edge_is_quantised(relu32_int8) -> None:
    directory = relu32_int8.path.parent
    images, labels = _images(4, 1).numpy(), np.zeros(4, dtype=np.int64)
    for path in (directory / "cloud.onnx", relu32_int8.path):
        with pytest.raises(CheckpointError, match="is not a float32 edge"):
            quantize_edge(path, directory / "cloud.onnx", calibration=images, check_images=images, check_labels=labels)


def test_a_deployment_writes_a_checked_int8_edge_beside_its_bundle(make_bundle, trained, tiny_data) -> None:
    from splitveil.serve.deployment import Deployment

    from .conftest import SPEC

    out, deployed = make_bundle()
    deployment = Deployment(SPEC, trained, deployed, None, 0.0)
    with pytest.raises(CheckpointError, match="has no edge.onnx to quantise"):
        deployment.export_int8_edge(out)
    deployment.export_onnx(out)
    quantized = deployment.export_int8_edge(out)
    assert quantized.path == out / INT8_EDGE_FILE and quantized.checked == len(tiny_data.test)
    assert 0 <= quantized.accuracy <= 1 and 0 <= quantized.fp32_accuracy <= 1
    calibration = read_onnx_metadata(quantized.path)["quantization"]["calibration"]
    assert calibration == {"method": "minmax", "images": len(tiny_data.train), "seed": SPEC.seed}
    deployment.export_onnx(out)  # a new edge.onnx: the old int8 edge no longer matches it
    assert not quantized.path.exists()

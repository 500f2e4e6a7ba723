"""An int8 edge: ``edge.onnx`` statically quantised by ONNX Runtime into ``edge.int8.onnx``.

The weights (``Conv``, ``MatMul``, ``Gemm``) become int8, per output channel, and their input
activations uint8 (the pairing ONNX Runtime's CPU kernels are fastest with), in the operator format:
standard integer operators (``QLinearConv``, ``QLinearMatMul``) that carry their scales, with
``ReLU`` and ``MaxPool`` computed on the uint8 values between them. The QDQ format would wrap every
tensor in a ``QuantizeLinear``/``DequantizeLinear`` pair instead, which on a small edge is a third
of the file (he-cnn's relu22: 2.5x smaller than float32 in QDQ, 3.2x in this format). Nothing else
is quantised, so what a defense adds to the graph runs in float32 as exported: the random ops that
draw noise and dropout masks, the salt input and its gather, the adds and multiplies. The int8 edge
is the same defense, computed on coarser weights.

Activation ranges are calibrated (min and max) on images the caller passes: the target-train images,
the distribution the edge sees, never the test images its accuracy is then measured on.

The file is verified before it is kept: ONNX Runtime loads it through :class:`OnnxEdge`, it takes
the same inputs, draws with the same random ops and outputs the same feature shape as the float32
edge, and both edges' accuracy (with ``cloud.onnx``) is measured on the check images. It carries the
float32 edge's ``splitveil`` metadata with ``"precision": "int8"`` and the quantisation settings.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitveil.edge.runtime import METADATA_KEY, OnnxEdge, read_onnx_metadata, secure_session
from splitveil.errors import CheckpointError
from splitveil.serve.onnx_export import RANDOM_OPS

INT8_EDGE_FILE = "edge.int8.onnx"
#: The ops whose weights and inputs are quantised; every other op (a defense's) stays float32.
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm", "Relu", "MaxPool")
#: Images per calibration run: large enough to be quick, small enough to keep calibration's memory low.
CALIBRATION_BATCH = 32
#: Images per batch when the accuracy of an edge is measured.
ACCURACY_BATCH = 256


@dataclass(frozen=True)
class QuantizedEdge:
    """The written int8 edge and what its verification measured beside the float32 edge."""

    path: Path
    #: File sizes in bytes.
    size: int
    fp32_size: int
    #: Test accuracy of edge + ``cloud.onnx`` over ``checked`` images, with each edge.
    accuracy: float
    fp32_accuracy: float
    checked: int
    #: Mean |int8 − float32| of the feature as a share of the mean |float32| feature, on the check
    #: images; None for a stochastic edge, whose two runs differ by their draws anyway.
    feature_error: float | None

    @property
    def size_ratio(self) -> float:
        """How many times smaller the int8 file is than the float32 one."""
        return self.fp32_size / self.size


def quantize_edge(
    edge: str | Path,
    cloud: str | Path,
    *,
    calibration: np.ndarray,
    check_images: np.ndarray,
    check_labels: np.ndarray,
    seed: int = 0,
    per_channel: bool = True,
) -> QuantizedEdge:
    """Quantise ``edge`` (an exported ``edge.onnx``) to ``edge.int8.onnx`` beside it, verified.

    ``calibration`` are images ``[N, C, H, W]`` in [0, 1] whose activation ranges set the scales;
    ``check_images`` and ``check_labels`` are test images on which both edges, followed by ``cloud``,
    are compared. ``seed`` draws the salts of a salted edge during calibration and checks. Raises
    CheckpointError when the file is not a float32 edge or the int8 graph loses part of the defense.
    """
    import onnx

    _require_quantization()
    edge = Path(edge)
    metadata = read_onnx_metadata(edge)
    if metadata.get("half") != "edge" or metadata.get("precision", "float32") != "float32":
        raise CheckpointError(
            f"{edge} is not a float32 edge ({metadata.get('half')}, {metadata.get('precision', 'float32')}); "
            "quantise the edge.onnx written by `splitveil export --onnx`"
        )
    settings = {
        "format": "QOperator",
        "weights": "int8 per channel" if per_channel else "int8 per tensor",
        "activations": "uint8",
        "quantized_ops": list(QUANTIZED_OPS),
        "calibration": {"method": "minmax", "images": len(calibration), "seed": seed},
    }
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / INT8_EDGE_FILE
        _quantize(edge, raw, _CalibrationFeeds(calibration, metadata, seed), per_channel=per_channel)
        model = onnx.load(raw)
    # The quantiser's shape inference leaves an annotation per intermediate tensor. ONNX Runtime infers
    # shapes on load anyway and the float32 export carries none, so they are bytes the device is sent
    # for nothing: at relu22 with feature dropout, 0.8 of 23 KiB (3.06x smaller than float32 without them, 2.95x with).
    del model.graph.value_info[:]
    _check_defense_survives(onnx.load(edge), model)
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    onnx.helper.set_model_props(
        model,
        {METADATA_KEY: json.dumps({**metadata, "precision": "int8", "opset": opset, "quantization": settings})},
    )
    out = edge.with_name(INT8_EDGE_FILE)
    out.write_bytes(model.SerializeToString())
    try:
        feature_error = _compare_features(
            edge, out, check_images, seed, stochastic=bool(metadata.get("stochastic_edge"))
        )
        accuracy = edge_accuracy(out, cloud, check_images, check_labels)
    except Exception:
        out.unlink()  # an unverified int8 edge is not left where a device would pick it up
        raise
    return QuantizedEdge(
        path=out,
        size=out.stat().st_size,
        fp32_size=edge.stat().st_size,
        accuracy=accuracy,
        fp32_accuracy=edge_accuracy(edge, cloud, check_images, check_labels),
        checked=len(check_images),
        feature_error=feature_error,
    )


def edge_accuracy(
    edge: str | Path, cloud: str | Path, images: np.ndarray, labels: np.ndarray, *, batch: int = ACCURACY_BATCH
) -> float:
    """Top-1 accuracy of ``edge`` then ``cloud`` (two exported halves) as a device runs them: the
    salt drawn and kept by the edge, the cloud's answer decoded with it."""
    device, server = OnnxEdge(edge), secure_session(cloud)
    correct = 0
    for start in range(0, len(images), batch):
        features, salts = device.features(images[start : start + batch])
        answer = np.asarray(server.run(None, {"feature": features})[0])
        correct += int((device.decode(answer, salts).argmax(1) == labels[start : start + batch]).sum())
    return correct / max(len(images), 1)


class _CalibrationFeeds:
    """ONNX Runtime's calibration data reader (``get_next`` returns feeds until it returns None)."""

    def __init__(self, images: np.ndarray, metadata: dict[str, Any], seed: int) -> None:
        salt = metadata.get("salt")
        salts = (
            None
            if salt is None
            else np.random.default_rng(seed).integers(0, salt["num_salts"], len(images), dtype=np.int64)
        )
        batches = []
        for start in range(0, len(images), CALIBRATION_BATCH):
            feeds: dict[str, np.ndarray] = {
                "image": np.ascontiguousarray(images[start : start + CALIBRATION_BATCH], dtype=np.float32)
            }
            if salts is not None:
                feeds["salt"] = salts[start : start + CALIBRATION_BATCH]
            batches.append(feeds)
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _quantize(source: Path, target: Path, feeds: _CalibrationFeeds, *, per_channel: bool) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with _without_preprocessing_advice():
        quantize_static(
            str(source),
            str(target),
            feeds,  # a duck-typed reader: ONNX Runtime only calls get_next
            quant_format=QuantFormat.QOperator,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )


def _check_defense_survives(fp32: Any, int8: Any) -> None:
    """The int8 graph takes the same inputs and draws with the same random ops as the float32 one."""
    inputs = ([value.name for value in model.graph.input] for model in (fp32, int8))
    if next(inputs) != next(inputs):
        raise CheckpointError("the int8 edge lost an input of the float32 edge (the salt?); report it with the model")
    draws = [Counter(node.op_type for node in model.graph.node if node.op_type in RANDOM_OPS) for model in (fp32, int8)]
    if draws[0] != draws[1]:
        raise CheckpointError(
            f"quantisation changed the edge's random ops ({dict(draws[0])} became {dict(draws[1])}): its defense "
            "would not be the one audited; report it with the model and defense"
        )


def _compare_features(fp32: Path, int8: Path, images: np.ndarray, seed: int, *, stochastic: bool) -> float | None:
    """The int8 feature's shape equals the float32 one's, and (deterministic edges) their relative gap."""
    edges = OnnxEdge(fp32), OnnxEdge(int8)
    feeds: dict[str, np.ndarray] = {"image": np.ascontiguousarray(images, dtype=np.float32)}
    if edges[0].salted:  # the same salts for both, so that the features are comparable
        salts = edges[0].metadata["salt"]["num_salts"]
        feeds["salt"] = np.random.default_rng(seed).integers(0, salts, len(images), dtype=np.int64)
    reference, quantized = (np.asarray(edge.session.run(None, feeds)[0]) for edge in edges)
    if quantized.shape != reference.shape:
        raise CheckpointError(
            f"the int8 edge outputs features of shape {list(quantized.shape[1:])}, the float32 edge "
            f"{list(reference.shape[1:])}; report it with the model and cut"
        )
    if not np.isfinite(quantized).all():
        raise CheckpointError("the int8 edge outputs non-finite features; report it with the model and cut")
    if stochastic:
        return None
    return float(np.abs(quantized - reference).mean() / max(float(np.abs(reference).mean()), 1e-12))


@contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """Silence the quantiser's advice to pre-process the model, logged on the root logger.

    Pre-processing (shape inference and graph optimisation) would not change these graphs, which the
    exporter already shape-checks. The handler stops ``logging.warning`` from configuring the root
    logger on its own (which would send later warnings of the whole process to stderr).
    """
    root = logging.getLogger()
    placeholder = logging.NullHandler() if not root.handlers else None
    root.addFilter(_not_advice)
    if placeholder is not None:
        root.addHandler(placeholder)
    try:
        yield
    finally:
        root.removeFilter(_not_advice)
        if placeholder is not None:
            root.removeHandler(placeholder)


def _not_advice(record: logging.LogRecord) -> bool:
    return "pre-process" not in record.getMessage()


def _require_quantization() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        raise CheckpointError("int8 quantisation needs onnx and onnxruntime: pip install 'splitveil[onnx]'") from None

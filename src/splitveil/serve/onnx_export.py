"""ONNX halves of a deployed split: ``edge.onnx`` for the device, ``cloud.onnx`` for the server.

The defense is inside the edge graph, so what a device runs is what the audit attacked: noise is
drawn by ONNX random ops (``RandomNormalLike``, ``RandomUniformLike``: feature dropout and Laplace
noise too), and a secret-keeping edge (Salted DNNs) takes its salt as a second input, ``salt``,
which the device fills from its own secret source and never sends. Each file carries its metadata
under the ``splitveil`` key of the model's metadata properties (JSON): the half, the cut, the input
and feature shapes, the wire format, the defense as the bundle records it, and versions.

Export is verified before a file is kept: the ONNX checker with strict shape inference, then a
parity run through ONNX Runtime against the torch half on real samples. A deterministic half must
agree within :data:`PARITY_TOLERANCE`; a stochastic edge (one whose graph draws random numbers)
must match the torch edge's mean and standard deviation of the feature over repeated draws within
:data:`STOCHASTIC_TOLERANCE` of that standard deviation, and must not repeat a draw.

A device running a stochastic edge must seed ONNX Runtime's random ops from a secure source before
it creates the session (:func:`splitveil.edge.secure_session`); otherwise the cloud could replay a
known stream. A salted edge's file also carries the salt code's table, with which a device without
torch decodes the cloud's answer (:class:`splitveil.edge.OnnxEdge`).
"""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from splitveil import __version__
from splitveil.blocks.noise_source import use_noise_source
from splitveil.client_side import SecretKeepingEdge
from splitveil.edge.runtime import CLOUD_FILE, EDGE_FILE, METADATA_KEY, secure_session
from splitveil.errors import CheckpointError
from splitveil.seeding import seeded
from splitveil.serve.codec import CODECS, MEDIA_TYPE, WIRE_VERSION
from splitveil.split import SplitModel

#: 17 has every operator the zoo and the defenses need, and ONNX Runtime 1.14+ and most device runtimes run it.
OPSET = 17
#: Largest difference allowed between a deterministic ONNX half and its torch original, relative to the
#: largest magnitude of the torch output when that exceeds 1 (absolute below).
PARITY_TOLERANCE = 1e-5
#: Largest difference allowed between the feature's mean and std over draws, ONNX vs torch, as a share
#: of torch's standard deviation.
STOCHASTIC_TOLERANCE = 0.05
#: Ops that make a graph stochastic: each run draws afresh.
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial"}
)


@dataclass(frozen=True)
class OnnxHalves:
    """The written files and what their verification measured."""

    edge: Path
    cloud: Path
    #: Largest |ONNX − torch| of the cloud's logits, and of the edge's feature when it is deterministic.
    max_difference: dict[str, float]
    #: Whether the edge graph draws random numbers (noise, dropout masks).
    stochastic_edge: bool


def export_onnx(
    split: SplitModel, out: str | Path, *, samples: torch.Tensor, metadata: dict[str, dict[str, Any]]
) -> OnnxHalves:
    """Write ``split``'s edge and cloud to ``out/edge.onnx`` and ``out/cloud.onnx``, verified.

    ``samples`` are a few real inputs ``[N, C, H, W]`` for the parity run; ``metadata["edge"]`` and
    ``metadata["cloud"]`` are recorded in each half's file (the bundle's metadata of that half: the
    cloud's without the device's secrets), beside the input and wire formats and what export measures.
    Raises CheckpointError, naming the half, when a graph fails the checker or disagrees with torch.
    """
    _require_onnx()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # A copy drawing from torch's generator: that is what exports as ONNX random ops (a device seeds
    # them securely, see secure_session); the caller's edge keeps its own source.
    edge, cloud = copy.deepcopy(split.edge).eval(), split.cloud.eval()
    use_noise_source(edge, None)
    keeper = edge if isinstance(edge, SecretKeepingEdge) else None
    salts = None if keeper is None else torch.arange(len(samples)) % keeper.num_secrets
    edge_inputs = (samples,) if salts is None else (samples, salts)
    with torch.no_grad(), seeded():
        features = edge(*edge_inputs)
    edge_names = ["image"] if keeper is None else ["image", "salt"]
    edge_bytes = _exported(edge, edge_inputs, edge_names, "feature")
    cloud_bytes = _exported(cloud, (features,), ["feature"], "logits")
    stochastic = _draws_randomness(edge_bytes)
    measured = {
        "input_shape": list(samples.shape[1:]),
        "feature_shape": list(features.shape[1:]),
        "stochastic_edge": stochastic,
        "inputs": edge_names,
        "input_format": {"dtype": "float32", "layout": "NCHW", "range": [0.0, 1.0]},
        "wire": {"media_type": MEDIA_TYPE, "wire_version": WIRE_VERSION, "codecs": list(CODECS)},
        "opset": OPSET,
        # float32 here; `splitveil export --int8` writes edge.int8.onnx (splitveil.serve.onnx_quantize).
        "precision": "float32",
        "splitveil_version": __version__,
    }
    differences: dict[str, float] = {}
    if stochastic:
        _check_draws(edge, edge_bytes, edge_inputs, edge_names)
    else:
        differences["edge"] = _check_parity("edge", edge_bytes, edge_inputs, edge_names, features)
    with torch.no_grad():
        logits = cloud(features)
    differences["cloud"] = _check_parity("cloud", cloud_bytes, (features,), ["feature"], logits)
    paths = {}
    for half, graph in (("edge", edge_bytes), ("cloud", cloud_bytes)):
        paths[half] = out / (EDGE_FILE if half == "edge" else CLOUD_FILE)
        own = {"salt": _salt_code(keeper)} if half == "edge" and keeper is not None else {}
        paths[half].write_bytes(_with_metadata(graph, {**metadata[half], **measured, **own, "half": half}))
    return OnnxHalves(paths["edge"], paths["cloud"], differences, stochastic)


def _exported(module: nn.Module, inputs: tuple[torch.Tensor, ...], input_names: list[str], output: str) -> bytes:
    import onnx

    batch_axes = {name: {0: "batch"} for name in [*input_names, output]}
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings(), torch.no_grad():
        path = Path(scratch) / "graph.onnx"
        # The TorchScript exporter warns about its own deprecation and about constant folding; neither
        # changes the graph, whose parity is checked below.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            path,
            dynamo=False,
            opset_version=OPSET,
            input_names=input_names,
            output_names=[output],
            dynamic_axes=batch_axes,
        )
        graph = path.read_bytes()
    model = onnx.load_from_string(graph)
    try:
        onnx.checker.check_model(model)
        onnx.shape_inference.infer_shapes(model, strict_mode=True, check_type=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise CheckpointError(f"the exported {output} graph fails the ONNX checker: {error}") from None
    return graph


def _salt_code(keeper: SecretKeepingEdge) -> dict[str, Any]:
    """The salt code as a table ``T`` (``decoded[:, y] = answer[:, T[s, y]]``), for a device without torch.

    Read off the edge's own decoding (of the answer ``0, 1, …, K−1`` under each salt) and checked
    against it on random answers: a decoding that is not such a permutation cannot be exported.
    """
    classes, count = keeper.answer_classes, keeper.num_secrets
    salts = torch.arange(count)
    table = keeper.decode_answer(torch.arange(classes, dtype=torch.float32).expand(count, -1), salts).long()
    answer = torch.randn(count, classes, generator=torch.Generator().manual_seed(0))
    if not torch.equal(keeper.decode_answer(answer, salts), answer.gather(1, table)):
        raise CheckpointError("the edge decodes its answer other than by a salt's permutation; it cannot be exported")
    # The table is derived from the client's key: it goes into edge.onnx, which stays on the device.
    return {"num_salts": count, "table": table.tolist()}


def _draws_randomness(graph: bytes) -> bool:
    import onnx

    return any(node.op_type in RANDOM_OPS for node in onnx.load_from_string(graph).graph.node)


def _check_parity(
    half: str, graph: bytes, inputs: tuple[torch.Tensor, ...], names: list[str], expected: torch.Tensor
) -> float:
    got = _run(graph, inputs, names)
    reference = expected.numpy()
    difference = float(np.abs(got - reference).max())
    # float32 rounding grows with the values' magnitude: logits of 30 carry errors of 1e-5 where a
    # feature in [0, 1] carries 1e-7, with the same operators. The bound is absolute up to magnitude 1.
    tolerance = PARITY_TOLERANCE * max(1.0, float(np.abs(reference).max()))
    if not difference <= tolerance:
        raise CheckpointError(
            f"the ONNX {half} differs from the torch {half} by up to {difference:.3g} (tolerance {tolerance:.3g}); "
            "an operator exports with other semantics: report it with the model and cut"
        )
    return difference


def _check_draws(edge: nn.Module, graph: bytes, inputs: tuple[torch.Tensor, ...], names: list[str]) -> None:
    """Mean and std of the feature over repeated draws agree with torch's; two draws are not equal."""
    session = secure_session(graph)
    feeds = {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)}
    onnx_draws = np.stack([session.run(None, feeds)[0] for _ in range(16)])
    with torch.no_grad(), seeded():
        torch_draws = torch.stack([edge(*inputs) for _ in range(16)]).numpy()
    if np.array_equal(onnx_draws[0], onnx_draws[1]):
        raise CheckpointError("the ONNX edge's random ops repeat their draw: the noise would be replayable")
    # The mean is judged on the scale of the spread: a feature averaging near 0 under noise of std 0.5
    # cannot be compared in relative terms.
    spread = float(torch_draws.std())
    gaps = {
        "mean": abs(float(onnx_draws.mean()) - float(torch_draws.mean())) / max(spread, 1e-12),
        "std": abs(float(onnx_draws.std()) - spread) / max(spread, 1e-12),
    }
    for statistic, gap in gaps.items():
        if gap > STOCHASTIC_TOLERANCE:
            raise CheckpointError(
                f"the ONNX edge's feature {statistic} over draws differs from the torch edge's by {gap:.1%} of its "
                f"standard deviation, beyond {STOCHASTIC_TOLERANCE:.0%}: its noise exports with other semantics"
            )


def _run(graph: bytes, inputs: tuple[torch.Tensor, ...], names: list[str]) -> np.ndarray:
    session = secure_session(graph)
    try:
        return np.asarray(session.run(None, {name: t.numpy() for name, t in zip(names, inputs, strict=True)})[0])
    except Exception as error:  # noqa: BLE001 (ONNX Runtime raises its own classes from its kernels)
        problem = " ".join(str(error).split())[:300]
        raise CheckpointError(
            f"ONNX Runtime cannot run the exported graph ({problem}); an operator exports with other "
            "semantics: report it with the model, cut and defense"
        ) from None


def _with_metadata(graph: bytes, metadata: dict[str, Any]) -> bytes:
    import onnx

    model = onnx.load_from_string(graph)
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    return bytes(model.SerializeToString())


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise CheckpointError("ONNX export needs onnx and onnxruntime: pip install 'splitveil[onnx]'") from None

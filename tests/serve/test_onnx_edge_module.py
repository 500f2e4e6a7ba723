"""An exported edge file standing in for the torch edge of a split, as `attack --edge-onnx` uses it."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from splitveil.attacks import ATTACKS
from splitveil.audit import fit_attack, run_attack
from splitveil.client_side import DeviceSide, SecretKeepingEdge
from splitveil.config import AttackSpec, DefenseSpec
from splitveil.defenses import create_defense
from splitveil.errors import CapabilityError, CheckpointError
from splitveil.models import create_model
from splitveil.serve import onnx_edge_module
from splitveil.serve.deployment import Deployment
from splitveil.serve.onnx_edge_module import (
    OnnxEdgeModule,
    SaltedOnnxEdgeModule,
    black_box_attacks,
    check_black_box,
    check_edge_metadata,
    deployment_record,
    load_onnx_edge,
    onnx_edge_split,
)
from splitveil.serve.onnx_export import export_onnx
from splitveil.split import SplitModel, cut

from .conftest import SPEC

METADATA: dict[str, dict[str, Any]] = {"edge": {"cut": "relu22", "defense": None}, "cloud": {}}


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _exported(split: SplitModel, directory) -> OnnxEdgeModule:
    return load_onnx_edge(export_onnx(split, directory, samples=_images(4, 0), metadata=METADATA).edge)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> tuple[SplitModel, OnnxEdgeModule]:
    torch.manual_seed(0)
    split = cut(create_model("he-cnn").eval(), "relu22")
    return split, _exported(split, tmp_path_factory.mktemp("plain"))


def test_the_onnx_edge_computes_the_torch_edge_in_batches(plain, monkeypatch) -> None:
    split, edge = plain
    monkeypatch.setattr(onnx_edge_module, "BATCH", 3)  # 8 images: three ONNX Runtime calls
    images = _images(8, 1)
    with torch.no_grad():
        expected = split.edge(images)
    got = edge(images)
    assert type(edge) is OnnxEdgeModule and got.dtype == torch.float32 and got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5
    assert edge(images[:0]).shape == (0, *expected.shape[1:])


def test_the_onnx_edge_stands_in_for_the_torch_edge_in_a_split(plain) -> None:
    split, edge = plain
    onnx_split = SplitModel(edge, split.cloud, cut_name="relu22")
    images = _images(5, 2)
    with torch.no_grad():
        assert (onnx_split(images) - split(images)).abs().max() <= 1e-4


def test_the_onnx_edge_refuses_gradients_and_other_shapes(plain) -> None:
    _, edge = plain
    with pytest.raises(CapabilityError, match="computes no gradients"):
        edge(_images(2, 3).requires_grad_(True))
    with pytest.raises(ValueError, match=r"images of shape \[N, 1, 28, 28\]"):
        edge(torch.rand(2, 1, 14, 14))


def test_a_noisy_onnx_edge_draws_fresh_noise_at_every_call(tmp_path) -> None:
    torch.manual_seed(0)
    edge = _exported(
        create_defense("gaussian-noise", strength=0.5).apply(cut(create_model("he-cnn").eval(), "relu22")), tmp_path
    )
    images = _images(2, 4)
    assert not torch.equal(edge(images), edge(images))


def test_a_salted_onnx_edge_draws_salts_as_the_torch_edge_does_and_decodes(tmp_path) -> None:
    torch.manual_seed(0)
    split = create_defense("salted", strength=0.5, num_classes=10).apply(cut(create_model("he-cnn").eval(), "relu22"))
    edge = _exported(split, tmp_path)
    assert isinstance(edge, SaltedOnnxEdgeModule) and isinstance(edge, SecretKeepingEdge)
    assert edge.num_secrets == split.edge.num_secrets and edge.answer_classes == 10
    images, salts = _images(6, 5), torch.arange(6) % edge.num_secrets
    with torch.no_grad():
        assert (edge(images, salts) - split.edge(images, salts)).abs().max() <= 1e-5
        torch.manual_seed(7)
        drawn_by_torch = split.edge(images)  # draws its salts from torch's global generator
        torch.manual_seed(7)
        assert (edge(images) - drawn_by_torch).abs().max() <= 1e-5
    answer = torch.randn(6, 10)
    assert torch.equal(edge.decode_answer(answer, salts), split.edge.decode_answer(answer, salts))
    z, secret = DeviceSide(edge).encode(images)  # the device side plays it as any secret-keeping edge
    assert secret is not None and z.shape == (6, *edge.metadata["feature_shape"])
    with pytest.raises(ValueError, match=r"salts must lie in \[0, "):
        edge(images, torch.full((6,), edge.num_secrets))


def test_only_attacks_that_query_the_edge_run_on_an_onnx_edge(plain, tiny_data) -> None:
    runnable = black_box_attacks()
    assert {"inverse-network", "joint-inverse-network", "output-oracle"} <= set(runnable)
    assert not {"rmle", "learned-prior-whitebox", "query-free"} & set(runnable)
    assert set(runnable) < set(ATTACKS.names())
    check_black_box("inverse-network")
    with pytest.raises(CapabilityError, match="needs the edge's weights and gradients") as refused:
        check_black_box("rmle")
    assert "inverse-network" in str(refused.value) and "without --edge-onnx" in str(refused.value)
    with pytest.raises(CapabilityError, match="architecture as a torch module"):
        check_black_box("query-free")
    # The audit refuses it too, whoever calls it (the bench's capture audit, a script).
    split, edge = plain
    onnx_split = SplitModel(edge, split.cloud, cut_name="relu22")
    with pytest.raises(CapabilityError, match="'rmle' needs"):
        fit_attack(onnx_split, AttackSpec(name="rmle"), data=tiny_data, seed=0, progress=False)


def test_an_edge_file_of_another_deployment_is_refused_naming_the_fields(plain) -> None:
    path = plain[1].path
    check_edge_metadata(path, {"half": "edge", "cut": "relu22", "defense": None})
    with pytest.raises(CheckpointError, match=r'cut \("relu22" in the file, "relu32" here\)') as refused:
        check_edge_metadata(path, {"cut": "relu32", "base_cache_key": "abc"})
    assert "base_cache_key (missing in the file" in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1


def test_a_deployments_exported_edge_is_attacked_through_onnx(make_onnx_bundle, trained, tiny_data, one_thread) -> None:
    bundle, deployed = make_onnx_bundle()
    deployment = Deployment(SPEC, trained, deployed, None, 0.0)
    split = onnx_edge_split(deployment, bundle / "edge.onnx")
    assert isinstance(split.edge, OnnxEdgeModule) and split.cloud is deployed.split.cloud
    outcome = run_attack(
        split,
        AttackSpec(name="inverse-network", options={"epochs": 1, "width": 8, "blocks": 0}),
        data=tiny_data,
        targets=tiny_data.test.take(4),
        evaluator=None,
        seed=0,
        progress=False,
    )
    assert outcome.reconstruction.shape == (4, *tiny_data.input_shape) and 0 <= outcome.ssim <= 1
    nopeek = DefenseSpec(name="nopeek", strengths=[1.0], epochs=1)
    defended = Deployment(SPEC, trained, deployed, nopeek, 1.0)
    with pytest.raises(CheckpointError, match=r"defense\.name \(missing in the file, \"nopeek\" here\)"):
        check_edge_metadata(bundle / "edge.onnx", deployment_record(defended))

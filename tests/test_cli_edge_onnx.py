"""`splitveil attack --edge-onnx`: the audit attacks the exported (int8) edge a device runs."""

from __future__ import annotations

import pytest

from .test_cli import assert_one_line_refusal, run_main

SPEC = """
seed: 0
data: {name: fashion-mnist, limit: 128}
model: {name: he-cnn, options: {widths: [4, 8, 8], hidden: 16}}
train: {epochs: 1, batch_size: 64}
cuts: [relu22]
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The spec, its checkpoint cache and a bundle with edge.onnx and edge.int8.onnx beside it."""
    root = tmp_path_factory.mktemp("edge-onnx")
    spec, cache, bundle = root / "tiny.yaml", root / "cache", root / "bundle"
    spec.write_text(SPEC)
    args = ["export", str(spec), "--cut", "relu22", "--out", str(bundle), "--onnx", "--int8"]
    code, _, stderr = run_main(*args, "--cache-dir", str(cache), "--no-progress")
    assert code == 0, stderr
    return spec, cache, bundle


def _attack(spec, cache, *options: str) -> list[str]:
    return ["attack", str(spec), "--cut", "relu22", *options, "--cache-dir", str(cache), "--no-progress"]


def test_an_inverse_network_attacks_the_int8_edge_end_to_end(exported, tmp_path) -> None:
    spec, cache, bundle = exported
    png = tmp_path / "grid.png"
    options = ("--attack", "inverse-network", "--set", "epochs=1", "--set", "width=8", "--targets", "4")
    code, stdout, stderr = run_main(
        *_attack(spec, cache, *options, "--edge-onnx", str(bundle / "edge.int8.onnx")), "--out", str(png)
    )
    assert code == 0, stderr
    assert f"through {bundle / 'edge.int8.onnx'}" in stdout and "SSIM" in stdout, stdout
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_white_box_attack_is_refused_before_anything_is_trained(exported, tmp_path) -> None:
    spec, _, bundle = exported
    fresh = tmp_path / "fresh-cache"
    line = assert_one_line_refusal(
        _attack(spec, fresh, "--attack", "rmle", "--edge-onnx", str(bundle / "edge.int8.onnx")),
        "'rmle' needs the edge's weights and gradients",
        "inverse-network",
    )
    assert "joint-inverse-network" in line and "output-oracle" in line
    assert not fresh.exists()


def test_an_edge_file_of_another_deployment_is_refused(exported, tmp_path) -> None:
    spec, cache, bundle = exported
    reseeded = tmp_path / "seed1.yaml"
    reseeded.write_text(SPEC.replace("seed: 0", "seed: 1"))
    assert_one_line_refusal(
        _attack(reseeded, cache, "--attack", "inverse-network", "--edge-onnx", str(bundle / "edge.onnx")),
        "was exported from another deployment",
        "spec (",
    )
    defended = tmp_path / "defended.yaml"
    defended.write_text(SPEC + "defenses:\n  - {name: gaussian-noise, strengths: [0.5]}\n")
    assert_one_line_refusal(
        _attack(defended, cache, "--attack", "inverse-network", "--defense", "gaussian-noise")
        + ["--edge-onnx", str(bundle / "edge.onnx")],
        "defense.name (missing in the file",
        "strength (0.0 in the file, 0.5 here)",
    )

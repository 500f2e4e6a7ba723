"""The edge on a device without torch: OnnxEdge runs edge.onnx, keeps the salt, decodes the answer."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from splitveil.defenses import create_defense
from splitveil.edge import OnnxEdge, secure_session
from splitveil.errors import CheckpointError, ServeError
from splitveil.models import create_model
from splitveil.serve.onnx_export import export_onnx
from splitveil.split import cut

METADATA = {"edge": {}, "cloud": {}}


@pytest.fixture(scope="module")
def salted_halves(tmp_path_factory):
    torch.manual_seed(0)
    split = create_defense("salted", strength=0.5, num_classes=10).apply(cut(create_model("he-cnn").eval(), "relu22"))
    out = tmp_path_factory.mktemp("salted")
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    return split, export_onnx(split, out, samples=images, metadata=METADATA), images


def test_a_salted_answer_decodes_on_the_device_to_the_torch_splits_labels(salted_halves) -> None:
    split, halves, images = salted_halves
    edge = OnnxEdge(halves.edge)
    assert edge.salted and edge.input_shape == (1, 28, 28)
    features, salts = edge.features(images.numpy())
    assert salts is not None and salts.dtype == np.int64 and ((0 <= salts) & (salts < 10)).all()
    answer = secure_session(halves.cloud).run(None, {"feature": features})[0]
    with torch.no_grad():
        expected = split.edge.decode_answer(
            split.cloud(split.edge(images, torch.from_numpy(salts))), torch.from_numpy(salts)
        )
    assert np.allclose(edge.decode(answer, salts), expected.numpy(), atol=1e-5)
    assert np.array_equal(edge.decode(answer, salts).argmax(1), expected.argmax(1).numpy())


def test_the_device_refuses_what_it_cannot_run(salted_halves, tmp_path) -> None:
    _, halves, images = salted_halves
    edge = OnnxEdge(halves.edge)
    with pytest.raises(ServeError, match=r"expected images of shape \[N, 1, 28, 28\]"):
        edge.features(np.zeros((2, 3, 28, 28), np.float32))
    features, salts = edge.features(images.numpy()[:2])
    with pytest.raises(ServeError, match="needs the salt of every image"):
        edge.decode(np.zeros((2, 10), np.float32), None)
    with pytest.raises(CheckpointError, match="is the 'cloud' half; the device runs edge.onnx"):
        OnnxEdge(halves.cloud)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not an ONNX model ONNX Runtime can load"):
        OnnxEdge(tmp_path / "junk.onnx")


def test_the_edge_runs_where_torch_cannot_be_imported(tmp_path) -> None:
    """In a process where ``import torch`` fails, the device runs a noised edge.onnx and encodes the
    feature for the wire: the edge package, the runtime and the codec never touch torch."""
    split = create_defense("gaussian-noise", strength=0.5).apply(cut(create_model("he-cnn").eval(), "relu22"))
    halves = export_onnx(split, tmp_path, samples=torch.rand(4, 1, 28, 28), metadata=METADATA)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        import numpy as np
        from splitveil.edge import OnnxEdge
        from splitveil.serve.codec import decode_array, encode_array
        edge = OnnxEdge({str(halves.edge)!r})
        features, salts = edge.features(np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32))
        body = encode_array(features, codec="int8", compress=True)
        assert decode_array(body).shape == (3, 32, 14, 14) and salts is None
        print("ran without torch")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ran without torch" in result.stdout

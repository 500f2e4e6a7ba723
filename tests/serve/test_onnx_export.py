"""ONNX halves: the defense inside the edge graph, verified against torch, with its metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splitveil.defenses import create_defense
from splitveil.edge import read_onnx_metadata, secure_session
from splitveil.errors import CheckpointError
from splitveil.models import MODELS, create_model
from splitveil.serve.onnx_export import PARITY_TOLERANCE, export_onnx
from splitveil.split import cut

#: Models whose every cut must export with the defense-free edge equal to torch's within tolerance.
PARITY_MODELS = ["he-cnn", "resnet20"]
METADATA = {"edge": {"cut": "x"}, "cloud": {"cut": "x"}}


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def _run(path, **feeds: torch.Tensor) -> np.ndarray:
    return secure_session(path).run(None, {name: tensor.numpy() for name, tensor in feeds.items()})[0]


@pytest.mark.parametrize(
    ("defense", "options"), [("nopeek", {}), ("siftfunnel", {"funnel_channels": 4, "replace_last_conv": True})]
)
def test_a_deterministic_defense_exports_equal_to_torch(tmp_path, defense: str, options: dict) -> None:
    torch.manual_seed(0)
    split = create_defense(defense, strength=1.0, **options).apply(cut(create_model("he-cnn").eval(), "relu22"))
    halves = export_onnx(split, tmp_path, samples=_images(4, (1, 28, 28)), metadata=METADATA)
    assert not halves.stochastic_edge and max(halves.max_difference.values()) <= PARITY_TOLERANCE


@pytest.mark.parametrize(
    ("model_name", "cut_name"),
    [(m, c) for m in PARITY_MODELS for c in MODELS.info(m)["cut_points"]],
)
def test_every_cut_exports_with_both_halves_equal_to_torch(tmp_path, model_name: str, cut_name: str) -> None:
    shape = tuple(MODELS.info(model_name)["input_shape"])
    torch.manual_seed(0)
    split = cut(create_model(model_name, input_shape=shape).eval(), cut_name)
    x = _images(4, shape)
    halves = export_onnx(split, tmp_path, samples=x, metadata=METADATA)
    assert not halves.stochastic_edge
    assert max(halves.max_difference.values()) <= PARITY_TOLERANCE
    z = _run(halves.edge, image=_images(3, shape, seed=1))  # a batch size export never saw
    with torch.no_grad():
        expected = split.edge(_images(3, shape, seed=1))
        assert np.abs(z - expected.numpy()).max() <= PARITY_TOLERANCE
        logits = _run(halves.cloud, feature=expected)
        assert np.abs(logits - split.cloud(expected).numpy()).max() <= PARITY_TOLERANCE


@pytest.mark.parametrize(
    ("defense", "options"),
    [
        ("gaussian-noise", {}),
        ("gaussian-noise", {"where": "input"}),
        ("laplace-noise", {}),
        ("feature-dropout", {}),
        ("bounded-noise", {}),
        ("pripro", {}),
    ],
)
def test_noise_is_drawn_by_the_graph_with_torchs_distribution(tmp_path, defense: str, options: dict) -> None:
    torch.manual_seed(0)
    model = create_model("he-cnn", widths=[8, 16, 16], hidden=32).eval()  # narrow: 10,000 draws stay quick
    split = create_defense(defense, strength=0.5, **options).apply(cut(model, "relu22"))
    x = _images(8, (1, 28, 28))
    halves = export_onnx(split, tmp_path, samples=x, metadata=METADATA)
    assert halves.stochastic_edge and "edge" not in halves.max_difference
    session = secure_session(halves.edge)
    image = x[:1].expand(DRAWS_PER_RUN, -1, -1, -1)  # every row of a run is a fresh draw on the same image
    onnx_draws, torch_draws = _Moments(), _Moments()
    for _ in range(DRAWS // DRAWS_PER_RUN):
        onnx_draws.add(session.run(None, {"image": image.numpy()})[0])
        with torch.no_grad():
            torch_draws.add(split.edge(image).numpy())
    # Per element over 10,000 draws: the mean (the feature the noise is centred on, or scaled down by
    # dropout) within 5% of the noise's spread, and the spread itself within 5%.
    spread = torch_draws.std
    assert np.abs(onnx_draws.mean - torch_draws.mean).mean() <= 0.05 * spread.mean()
    assert onnx_draws.std.mean() == pytest.approx(spread.mean(), rel=0.05)
    first, second = session.run(None, {"image": x[:1].numpy()})[0], session.run(None, {"image": x[:1].numpy()})[0]
    assert not np.array_equal(first, second)


#: Draws of the noise compared per element (the issue's figure), in runs of a batch each.
DRAWS, DRAWS_PER_RUN = 10_000, 1_000


class _Moments:
    """Per-element mean and standard deviation of batches of draws, accumulated in float64."""

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, 0.0, 0.0

    def add(self, draws: np.ndarray) -> None:
        values = draws.astype(np.float64)
        self.count += len(values)
        self.total = self.total + values.sum(0)
        self.squares = self.squares + (values**2).sum(0)

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.total) / self.count

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(np.asarray(self.squares) / self.count - self.mean**2, 0.0))


def test_a_secure_session_draws_a_stream_the_cloud_cannot_replay(tmp_path) -> None:
    split = create_defense("gaussian-noise", strength=1.0).apply(cut(create_model("he-cnn").eval(), "relu22"))
    halves = export_onnx(split, tmp_path, samples=_images(4, (1, 28, 28)), metadata=METADATA)
    x = _images(1, (1, 28, 28))
    first, second = _run(halves.edge, image=x), _run(halves.edge, image=x)  # two sessions, as two devices
    assert not np.array_equal(first, second)


# pool1's 14x14 map is not a whole number of 4x4 salt tiles: the maps are cropped, a shape the export
# must compute as torch does.
# Stacked last after an input defense (a funnel), the salt is an input of the edge graph all the same.
@pytest.mark.parametrize(
    ("salt_at", "stacked_after"),
    [
        (None, None),
        ("pool1", None),
        (None, {"name": "siftfunnel", "options": {"funnel_channels": 4, "replace_last_conv": True}}),
    ],
    ids=["first-point", "pool1", "after-a-funnel"],
)
def test_the_salt_is_an_input_of_the_edge_graph(tmp_path, salt_at: str | None, stacked_after: dict | None) -> None:
    torch.manual_seed(0)
    salt_options = {"num_classes": 10, **({"salt_at": salt_at} if salt_at else {})}
    salted = (
        create_defense("salted", strength=0.5, **salt_options)
        if stacked_after is None
        else create_defense(
            "stack", strength=1.0, layers=[stacked_after, {"name": "salted", "strength": 0.5, "options": salt_options}]
        )
    )
    split = salted.apply(cut(create_model("he-cnn").eval(), "relu22"))
    x = _images(6, (1, 28, 28))
    halves = export_onnx(split, tmp_path, samples=x, metadata=METADATA)
    assert read_onnx_metadata(halves.edge)["inputs"] == ["image", "salt"]
    salts = torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        expected = split.edge(x, salts)
    feature = _run(halves.edge, image=x, salt=salts)
    assert np.abs(feature - expected.numpy()).max() <= PARITY_TOLERANCE
    # The device decodes the cloud's salted answer with the salt it kept: the labels are the torch split's.
    answer = torch.from_numpy(_run(halves.cloud, feature=torch.from_numpy(feature)))
    with torch.no_grad():
        torch_labels = split.edge.decode_answer(split.cloud(expected), salts).argmax(1)
    assert torch.equal(split.edge.decode_answer(answer, salts).argmax(1), torch_labels)


def test_each_half_carries_its_own_metadata_and_the_formats(tmp_path) -> None:
    split = cut(create_model("he-cnn").eval(), "pool1")
    metadata = {"edge": {"defense": {"name": "salted", "key": 7}}, "cloud": {"defense": {"name": "salted"}}}
    halves = export_onnx(split, tmp_path, samples=_images(2, (1, 28, 28)), metadata=metadata)
    edge, cloud = read_onnx_metadata(halves.edge), read_onnx_metadata(halves.cloud)
    assert edge["half"] == "edge" and cloud["half"] == "cloud"
    assert edge["defense"]["key"] == 7 and "key" not in cloud["defense"]  # the device's secret stays on the device
    assert edge["feature_shape"] == list(split.edge(_images(1, (1, 28, 28))).shape[1:])
    assert edge["input_format"] == {"dtype": "float32", "layout": "NCHW", "range": [0.0, 1.0]}
    assert "float32" in edge["wire"]["codecs"] and edge["opset"] == 17


def test_a_file_without_metadata_is_refused_with_the_fix(tmp_path) -> None:
    import onnx

    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    output = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "foreign", [value], [output])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "foreign.onnx")
    with pytest.raises(CheckpointError, match="no splitveil metadata; export it with `splitveil export --onnx`"):
        read_onnx_metadata(tmp_path / "foreign.onnx")


def test_a_deployment_writes_verified_onnx_halves_beside_its_bundle(make_bundle, trained, tiny_data) -> None:
    from splitveil.serve.deployment import Deployment

    from .conftest import SPEC

    out, deployed = make_bundle()
    deployment = Deployment(SPEC, trained, deployed, None, 0.0)
    halves = deployment.export_onnx(out)
    assert halves.edge == out / "edge.onnx" and halves.cloud == out / "cloud.onnx"
    x = tiny_data.test.images[:5]
    logits = _run(halves.cloud, feature=torch.from_numpy(_run(halves.edge, image=x)))
    with torch.no_grad():
        assert np.array_equal(logits.argmax(1), deployed.split(x).argmax(1).numpy())
    assert read_onnx_metadata(halves.edge)["cut"] == "relu22"

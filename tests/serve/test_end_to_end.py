"""Real server processes on loopback classify real Fashion-MNIST images through EdgeClient."""

import json
import signal
import subprocess
import sys
import threading
import time

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml

from splitveil.checkpoint import CheckpointCache, read_metadata
from splitveil.config import parse_spec
from splitveil.deploy import deploy
from splitveil.edge import EdgeClient as OnnxEdgeClient
from splitveil.errors import ServeError
from splitveil.experiment import train_or_load
from splitveil.salt.sources import KeyedSalts
from splitveil.serve import export_bundle
from splitveil.serve.client import EdgeClient
from splitveil.serve.onnx_export import export_onnx
from splitveil.serve.process import ServerProcess, free_port

from .certificates import self_signed_certificate

pytestmark = pytest.mark.slow

TOKEN = "e2e-token"
SPEC_DATA = {
    "name": "serve-e2e",
    "data": {"name": "fashion-mnist", "limit": 3000},
    "model": {"name": "he-cnn", "options": {"widths": [8, 16, 16], "hidden": 32}},
    "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3},
    "defenses": [
        {"name": "nopeek", "strengths": [1.0], "epochs": 2},
        {
            "name": "salted",
            "strengths": [0.5],
            "epochs": 8,
            "options": {"key": "device-secret", "salt_at": "pool1"},
        },
    ],
}
SPEC = parse_spec(SPEC_DATA)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def trained(root):
    return train_or_load(SPEC, cache=CheckpointCache(root / "cache"), progress=False)


@pytest.fixture(scope="module")
def deployments(root, trained):
    """Bundles of the undefended, NoPeek-defended and salted splits at relu22, with their in-process splits."""
    cache = CheckpointCache(root / "cache")
    out = {}
    for defense in [None, *SPEC.defenses]:
        strength = defense.strengths[0] if defense else 0.0
        deployed = deploy(SPEC, trained, "relu22", defense, strength, cache=cache, progress=False)
        name = defense.name if defense else "none"
        bundle = export_bundle(
            root / name, spec=SPEC, trained=trained, deployed=deployed, defense_spec=defense, strength=strength
        )
        split = deployed.split.eval()
        # edge.onnx and cloud.onnx beside each bundle, as `splitveil export --onnx` writes them.
        metadata = {half: read_metadata(bundle / half) for half in ("edge", "cloud")}
        export_onnx(split, bundle, samples=trained.data.test.images[:8], metadata=metadata)
        out[name] = (bundle, split)
    tokens = root / "tokens"
    tokens.write_text(f"# clients\n{TOKEN}\n")
    return out, tokens, trained.data.test.take(48)


def _reference(name, split, images, salts):
    with torch.no_grad():
        if name == "salted":
            salt = salts.draw(len(images))
            return split.decode(split.salted_forward(images, salt)[1], salt)
        return split(images)


@pytest.mark.parametrize("name", ["none", "nopeek", "salted"])
def test_remote_predictions_equal_the_in_process_split(deployments, name):
    bundles, tokens, test = deployments
    bundle, split = bundles[name]
    salts = {"salts": KeyedSalts(10, secret="device-secret")} if name == "salted" else {}
    expected = _reference(name, split, test.images, KeyedSalts(10, secret="device-secret"))
    with ServerProcess(bundle, extra=["--tokens-file", str(tokens)]) as server:
        url = server.url
        with EdgeClient.from_bundle(bundle, url, token=TOKEN, **salts) as client:
            remote = torch.cat([client.logits(test.images[i : i + 16]) for i in range(0, len(test.images), 16)])
    assert torch.allclose(remote, expected, atol=1e-5)
    assert torch.equal(remote.argmax(1), expected.argmax(1))
    accuracy = (remote.argmax(1) == test.labels).float().mean().item()
    assert accuracy > 0.3, accuracy  # real images, really classified (chance: 0.1)


@pytest.mark.parametrize("name", ["none", "nopeek", "salted"])
def test_the_torch_free_client_gets_the_in_process_splits_answers(deployments, name):
    """The ONNX edge client (what `pip install 'splitveil[edge]'` runs) over a real server answers what
    the torch split computes in process; a salted edge's salts are drawn on the device and decoded there."""
    bundles, tokens, test = deployments
    bundle, split = bundles[name]
    images = test.images[:32]
    with ServerProcess(bundle, extra=["--tokens-file", str(tokens)]) as server:
        with OnnxEdgeClient.from_bundle(bundle, server.url, token=TOKEN) as client:
            features, salts = client.features(images.numpy())
            remote = client.edge.decode(client.send(features), salts)
            labels = client.predict(images.numpy())
    with torch.no_grad():
        if name == "salted":
            salt = torch.from_numpy(salts)
            expected = split.decode(split.salted_forward(images, salt)[1], salt)
        else:
            expected = split(images)
    assert np.allclose(remote, expected.numpy(), atol=1e-4)
    assert np.array_equal(remote.argmax(1), expected.argmax(1).numpy())
    if name != "salted":  # fresh salts per call may move a borderline image; the rest is deterministic
        assert np.array_equal(labels, expected.argmax(1).numpy())


def test_tls_with_a_self_signed_certificate(deployments, tmp_path):
    bundles, tokens, test = deployments
    bundle, split = bundles["none"]
    tls = self_signed_certificate(tmp_path)
    with ServerProcess(bundle, extra=["--tokens-file", str(tokens)], tls=tls) as server:
        url = server.url
        assert url.startswith("https://")
        with EdgeClient.from_bundle(bundle, url, token=TOKEN, verify=tls[0]) as client:
            remote = client.logits(test.images[:16])
        with torch.no_grad():
            assert torch.allclose(remote, split(test.images[:16]), atol=1e-5)
        with EdgeClient.from_bundle(bundle, url, token=TOKEN, retries=0) as untrusting:
            with pytest.raises(ServeError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
                untrusting.predict(test.images[:1])


def test_wrong_token_is_refused_with_401(deployments):
    bundles, tokens, test = deployments
    bundle, _ = bundles["none"]
    with ServerProcess(bundle, extra=["--tokens-file", str(tokens)]) as server:
        url = server.url
        with EdgeClient.from_bundle(bundle, url, token="not-the-token") as client:
            with pytest.raises(ServeError, match="HTTP 401.*invalid bearer token"):
                client.predict(test.images[:1])


def test_infer_command_classifies_image_files(deployments, tmp_path):
    bundles, tokens, test = deployments
    bundle, split = bundles["none"]
    pngs = []
    for i in range(3):
        path = tmp_path / f"image{i}.png"
        iio.imwrite(path, (test.images[i, 0].numpy() * 255).round().astype(np.uint8))
        pngs.append(str(path))
    np.save(tmp_path / "batch.npy", test.images[3:6].numpy())
    (tmp_path / "token").write_text(TOKEN)
    with ServerProcess(bundle, extra=["--tokens-file", str(tokens)]) as server:
        url = server.url
        result = subprocess.run(
            [sys.executable, "-m", "splitveil.cli", "infer", *pngs, str(tmp_path / "batch.npy"), "--checkpoint",
             str(bundle), "--url", url, "--token-file", str(tmp_path / "token"), "--codec", "int8", "--zstd", "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [*pngs, *(f"{tmp_path / 'batch.npy'}[{i}]" for i in range(3))]
    with torch.no_grad():
        expected = split(test.images[:6]).argmax(1).tolist()
    agreement = sum(line["label"] == label for line, label in zip(lines, expected, strict=True))
    assert agreement >= 5  # int8 features may flip a borderline image, not more


def test_shutdown_drains_the_request_in_flight(deployments):
    bundles, tokens, test = deployments
    bundle, split = bundles["none"]
    answers = []
    # A long batching window keeps the request inside the server when SIGTERM arrives.
    with ServerProcess(bundle, extra=["--tokens-file", str(tokens), "--max-wait-ms", "800"]) as server:
        url, process = server.url, server.process
        client = EdgeClient.from_bundle(bundle, url, token=TOKEN, retries=0)
        worker = threading.Thread(target=lambda: answers.append(client.logits(test.images[:4])))
        worker.start()
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        worker.join(timeout=30)
        # uvicorn re-raises the signal once drained, so the exit status says "ended by SIGTERM".
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    with torch.no_grad():
        assert len(answers) == 1 and torch.allclose(answers[0], split(test.images[:4]), atol=1e-5)


def test_unreachable_server_is_retried_then_named(deployments):
    bundles, _, test = deployments
    url = f"http://127.0.0.1:{free_port()}"
    with EdgeClient.from_bundle(bundles["none"][0], url, retries=2, backoff=0.01) as client:
        with pytest.raises(ServeError, match=r"could not reach the cloud at .* after 3 tries: ConnectError"):
            client.predict(test.images[:1])


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_attack_on_captured_features_matches_the_in_process_audit(deployments, trained, root, tmp_path, runtime):
    """What a device really sends, captured by the server and attacked, scores as the in-process audit
    of the same deployment: whether the torch edge or the exported edge.onnx computed it."""
    from splitveil.audit import run_attack
    from splitveil.config import AttackSpec

    bundles, tokens, test = deployments
    bundle, split = bundles["nopeek"]
    targets = test.take(16)
    capture = tmp_path / "wire.cap"
    client_class = OnnxEdgeClient if runtime == "onnx" else EdgeClient
    images = targets.images.numpy() if runtime == "onnx" else targets.images
    with ServerProcess(bundle, extra=["--tokens-file", str(tokens), "--capture", str(capture)]) as server:
        with client_class.from_bundle(bundle, server.url, token=TOKEN) as client:
            for start in range(0, 16, 4):
                client.predict(images[start : start + 4])
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC_DATA))
    np.save(tmp_path / "sent.npy", targets.images.numpy())
    result = subprocess.run(
        [sys.executable, "-m", "splitveil.cli", "attack", str(spec_file), "--cut", "relu22", "--attack",
         "inverse-network", "--set", "epochs=2", "--defense", "nopeek", "--capture", str(capture), "--originals",
         str(tmp_path / "sent.npy"), "--cache-dir", str(root / "cache"), "--out", str(tmp_path / "grid.png"),
         "--no-progress"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "on 16 captured requests' samples" in result.stdout, result.stdout
    remote_ssim = float(result.stdout.split("SSIM ")[1].split(",")[0])
    # The same attacker, trained in process on the same deployment, inverting the features computed here.
    attack = AttackSpec(name="inverse-network", options={"epochs": 2})
    local = run_attack(split, attack, data=trained.data, targets=targets, evaluator=None, seed=SPEC.seed)
    print(f"{runtime} edge: captured {remote_ssim:.4f}, in process {local.ssim:.4f}")
    assert abs(remote_ssim - local.ssim) < 0.01, (remote_ssim, local.ssim)
    assert iio.imread(tmp_path / "grid.png").ndim == 3  # the grid was drawn

"""``serve --runtime onnx``: cloud.onnx served through the same routes, batcher and limits as the torch half."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json

import httpx
import onnx
import pytest
import torch
from fastapi.testclient import TestClient

from splitveil.checkpoint import read_metadata
from splitveil.cli import main
from splitveil.config import DefenseSpec
from splitveil.edge import read_onnx_metadata
from splitveil.errors import CheckpointError
from splitveil.serve import MEDIA_TYPE, decode, encode, load_half
from splitveil.serve.cloud_runtime import load_cloud_runtime
from splitveil.serve.onnx_export import export_onnx
from splitveil.serve.process import ServerProcess
from splitveil.serve.server import ServerSettings, create_app

HEADERS = {"content-type": MEDIA_TYPE}


def _features(bundle, images: torch.Tensor, *salt: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return load_half(bundle, "edge").module(images, *salt)


def test_the_onnx_server_answers_the_torch_runtimes_logits_over_http(make_onnx_bundle, tiny_data):
    bundle, _ = make_onnx_bundle()
    features = _features(bundle, tiny_data.test.images[:5])
    bodies = {"batch": encode(features), "single": encode(features[:1])}
    with ServerProcess(bundle, extra=["--no-auth", "--runtime", "onnx"]) as server:  # a real server, real HTTP
        with httpx.Client(base_url=server.url, headers=HEADERS) as client:
            onnx_answers = {name: client.post("/v1/infer", content=body) for name, body in bodies.items()}
            onnx_description = client.get("/v1/model").json()
    with TestClient(create_app(load_cloud_runtime(bundle, "torch"))) as client:  # the same route, torch computing
        torch_answers = {name: client.post("/v1/infer", content=body, headers=HEADERS) for name, body in bodies.items()}
        torch_description = client.get("/v1/model").json()
    for name in bodies:
        assert onnx_answers[name].status_code == torch_answers[name].status_code == 200, onnx_answers[name].text
        onnx_logits, torch_logits = decode(onnx_answers[name].content), decode(torch_answers[name].content)
        assert torch.allclose(onnx_logits, torch_logits, atol=1e-5, rtol=0), name
    # What a client is told (feature shape, classes, limits) does not depend on the runtime.
    assert onnx_description == torch_description


def test_requests_are_batched_together_through_the_onnx_graph(make_onnx_bundle, tiny_data):
    bundle, _ = make_onnx_bundle()
    torch_half = load_half(bundle, "cloud")
    runtime = load_cloud_runtime(bundle, "onnx")
    # Held open long enough for every concurrent request to join the first batch.
    app = create_app(runtime, ServerSettings(max_wait_ms=200, max_batch=64))
    requests = [_features(bundle, tiny_data.test.images[i : i + 1 + i % 3]) for i in range(8)]

    async def post(features: torch.Tensor) -> tuple[int, bytes]:
        body = encode(features)
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return messages.pop(0)

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/infer",
            "headers": [(b"content-type", MEDIA_TYPE.encode())],
        }
        await app(scope, receive, send)
        return sent[0]["status"], sent[1]["body"]

    async def all_at_once():
        return await asyncio.gather(*(post(features) for features in requests))

    with TestClient(app) as client:
        answers = client.portal.call(all_at_once)
        metrics = client.get("/metrics").text
    samples = sum(len(features) for features in requests)
    assert f"splitveil_batch_samples_sum {float(samples)}" in metrics
    batches = float(
        next(line.split()[1] for line in metrics.splitlines() if line.startswith("splitveil_batch_samples_count"))
    )
    assert batches < len(requests)  # requests shared forward passes
    with torch.no_grad():
        for features, (status, body) in zip(requests, answers, strict=True):
            assert status == 200
            assert torch.allclose(decode(body), torch_half.module(features), atol=1e-5, rtol=0)


def test_a_salted_cloud_graph_answers_salted_logits_like_the_torch_half(make_onnx_bundle, tiny_data):
    salted = DefenseSpec(name="salted", strengths=[0.5], options={"key": "device-secret"}, epochs=1)
    bundle, deployed = make_onnx_bundle(salted, 0.5)
    images, salts = tiny_data.test.images[:6], torch.arange(6) % 3
    features = _features(bundle, images, salts)
    answers = {}
    for runtime in ("torch", "onnx"):
        with TestClient(create_app(load_cloud_runtime(bundle, runtime))) as client:
            response = client.post("/v1/infer", content=encode(features), headers=HEADERS)
        assert response.status_code == 200
        answers[runtime] = decode(response.content)
    assert torch.allclose(answers["onnx"], answers["torch"], atol=1e-5, rtol=0)
    with torch.no_grad():  # the answer is salted: only the device's salt decodes it
        expected = deployed.split.salted_forward(images, salts)[1]
    assert torch.allclose(answers["onnx"], expected, atol=1e-5, rtol=0)
    assert "device-secret" not in str(read_onnx_metadata(bundle / "cloud.onnx"))


def test_a_bundle_without_cloud_onnx_is_refused_with_the_fix(bundle):
    with pytest.raises(CheckpointError, match=r"has no cloud\.onnx .*export it with `splitveil export --onnx`"):
        load_cloud_runtime(bundle / "cloud", "onnx")  # the cloud/ half given: cloud.onnx is looked for beside it
    code, stderr = _run_main("serve", "--checkpoint", str(bundle), "--no-auth", "--runtime", "onnx")
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "export it with `splitveil export --onnx`" in lines[0], stderr


def test_an_unknown_runtime_is_refused_by_the_cli(tmp_path):
    code, stderr = _run_main("serve", "--checkpoint", str(tmp_path), "--no-auth", "--runtime", "tensorrt")
    assert code == 2 and "Invalid value for '--runtime'" in stderr and "tensorrt" in stderr
    spec = tmp_path / "spec.yaml"  # never read: the runtime is checked first
    code, stderr = _run_main("bench", "serve", str(spec), "--cut", "relu22", "--runtime", "onnx", "--runtime", "tvm")
    assert code == 2 and "Invalid value for '--runtime'" in stderr and "'tvm' is not a cloud runtime" in stderr


def test_cloud_onnx_of_another_deployment_is_refused(make_onnx_bundle, tiny_data):
    bundle, deployed = make_onnx_bundle()
    path = bundle / "cloud.onnx"
    model = onnx.load(path)
    metadata = read_onnx_metadata(path)
    onnx.helper.set_model_props(model, {"splitveil": json.dumps({**metadata, "cut": "relu11"})})
    onnx.save(model, path)
    with pytest.raises(CheckpointError, match="differs from cloud/meta.json in cut; export both again"):
        load_cloud_runtime(bundle, "onnx")
    # Right metadata, other weights (a stale file): the probe run tells them apart.
    stale = copy.deepcopy(deployed.split)
    with torch.no_grad():
        list(stale.cloud.parameters())[-1].add_(1.0)  # the last layer's bias: every logit moves by 1
    metadata = {half: read_metadata(bundle / half) for half in ("edge", "cloud")}  # as `export --onnx` records it
    export_onnx(stale, bundle, samples=tiny_data.test.images[:4], metadata=metadata)
    with pytest.raises(CheckpointError, match="computes other logits than the bundle's cloud half"):
        load_cloud_runtime(bundle, "onnx")


def _run_main(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exited,
    ):
        main(list(args))
    return exited.value.code if isinstance(exited.value.code, int) else 1, err.getvalue()

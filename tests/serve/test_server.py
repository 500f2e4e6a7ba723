"""The cloud server in process: answers, refusals with clear messages, metrics, capture."""

import dataclasses
import struct

import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitveil.serve import MEDIA_TYPE, decode, encode, load_half, read_capture
from splitveil.serve.codec import MAGIC, WIRE_VERSION
from splitveil.serve.server import ServerSettings, create_app

SVT = MAGIC + bytes([WIRE_VERSION])  # a header's first four bytes

TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}", "content-type": MEDIA_TYPE}


@pytest.fixture
def halves(bundle):
    return load_half(bundle, "edge"), load_half(bundle, "cloud")


@pytest.fixture
def server(halves, tmp_path):
    app = create_app(
        halves[1], ServerSettings(tokens=frozenset({TOKEN}), max_request_samples=8, capture=tmp_path / "cap.bin")
    )
    with TestClient(app) as client:
        yield client


def _features(halves, x):
    with torch.no_grad():
        return halves[0].module(x)


def test_answers_the_cloud_halfs_logits(server, halves, tiny_data):
    x = tiny_data.test.images[:5]
    z = _features(halves, x)
    response = server.post("/v1/infer", content=encode(z), headers=AUTH)
    assert response.status_code == 200 and response.headers["content-type"] == MEDIA_TYPE
    with torch.no_grad():
        assert torch.allclose(decode(response.content), halves[1].module(z), atol=1e-6)


def test_health_readiness_and_model_description(server, halves):
    assert server.get("/healthz").json() == {"status": "ok"}
    assert server.get("/readyz").status_code == 200
    info = server.get("/v1/model", headers=AUTH).json()
    assert info["feature_shape"] == list(halves[1].feature_shape) and info["max_request_samples"] == 8
    assert "salt" not in str(info).lower()


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}])
def test_missing_or_wrong_token_is_401(server, halves, tiny_data, headers):
    body = encode(_features(halves, tiny_data.test.images[:1]))
    response = server.post("/v1/infer", content=body, headers={"content-type": MEDIA_TYPE, **headers})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert "token" in response.json()["detail"]
    assert server.get("/v1/model", headers=headers).status_code == 401


def test_refusals_name_the_problem(server, halves, tiny_data):
    z = _features(halves, tiny_data.test.images[:1])
    cases = {
        415: (encode(z), {**AUTH, "content-type": "application/json"}, "application/x-splitveil-tensor"),
        400: (SVT + b"\x00\x00", AUTH, "shorter than"),
        422: (encode(z[:, :, :3]), AUTH, "does not match"),
        413: (b"\x00" * 10_000_000, AUTH, "exceeds"),
    }
    for status, (body, headers, message) in cases.items():
        response = server.post("/v1/infer", content=body, headers=headers)
        assert response.status_code == status and message in response.json()["detail"], (status, response.text)
    too_many = encode(torch.zeros(9, *z.shape[1:]), codec="float16")  # small enough, but too many samples
    response = server.post("/v1/infer", content=too_many, headers=AUTH)
    assert response.status_code == 422 and "send 1 to 8" in response.json()["detail"]


def test_metrics_count_requests_errors_and_batches(server, halves, tiny_data):
    body = encode(_features(halves, tiny_data.test.images[:2]))
    for _ in range(3):
        server.post("/v1/infer", content=body, headers=AUTH)
    server.post("/v1/infer", content=body, headers={"content-type": MEDIA_TYPE})
    text = server.get("/metrics").text
    assert 'splitveil_requests_total{status="200"} 3.0' in text
    assert 'splitveil_requests_total{status="401"} 1.0' in text
    assert 'splitveil_errors_total{reason="auth"} 1.0' in text
    assert "splitveil_batch_samples_sum 6.0" in text
    assert "splitveil_samples_total 6.0" in text


def _serving(cloud, forward):
    """A test client of a server whose cloud half computes with ``forward`` instead of its module."""
    return TestClient(create_app(dataclasses.replace(cloud, module=forward), ServerSettings()))


def test_a_failing_forward_pass_is_a_counted_json_500_and_the_server_goes_on(halves, tiny_data):
    working = halves[1].module
    calls = []

    def fails_once(z):
        calls.append(len(z))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return working(z)

    with _serving(halves[1], fails_once) as client:
        body = encode(_features(halves, tiny_data.test.images[:2]))
        failed = client.post("/v1/infer", content=body, headers={"content-type": MEDIA_TYPE})
        assert failed.status_code == 500
        assert failed.json()["detail"] == "the cloud model failed on this request's batch: RuntimeError"
        assert client.post("/v1/infer", content=body, headers={"content-type": MEDIA_TYPE}).status_code == 200
        text = client.get("/metrics").text
    assert 'splitveil_errors_total{reason="model"} 1.0' in text
    assert 'splitveil_requests_total{status="500"} 1.0' in text


def test_non_finite_logits_are_a_counted_json_500(halves, tiny_data):
    with _serving(halves[1], lambda z: torch.full((len(z), 10), float("nan"))) as client:
        body = encode(_features(halves, tiny_data.test.images[:1]))
        failed = client.post("/v1/infer", content=body, headers={"content-type": MEDIA_TYPE})
        text = client.get("/metrics").text
    assert failed.status_code == 500 and "NaN" in failed.json()["detail"]
    assert 'splitveil_errors_total{reason="model"} 1.0' in text


def test_capture_records_exactly_what_arrived(server, halves, tiny_data, tmp_path):
    z = _features(halves, tiny_data.test.images[:3])
    server.post("/v1/infer", content=encode(z, codec="int8"), headers=AUTH)
    server.post("/v1/infer", content=encode(z[:1]), headers=AUTH)
    server.post("/v1/infer", content=b"junk", headers=AUTH)  # refused: not captured
    captured = read_capture(tmp_path / "cap.bin")
    assert captured.shape == (4, *z.shape[1:])
    assert torch.equal(captured[:3], decode(encode(z, codec="int8")))
    assert torch.equal(captured[3:], z[:1])


_header = st.builds(
    lambda magic, version, codec, flags, dims: (
        magic + bytes([version, codec, flags, len(dims)]) + struct.pack(f"<{len(dims)}I", *dims)
    ),
    st.sampled_from([b"SVT", b"XYZ", b"SV"]),
    st.integers(0, 3),
    st.integers(0, 4),
    st.integers(0, 3),
    st.lists(st.integers(0, 2**20), max_size=9),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=_header,
    payload=st.binary(max_size=512),
    content_type=st.sampled_from([MEDIA_TYPE, "application/octet-stream", ""]),
)
def test_fuzzed_requests_get_a_4xx_and_the_server_keeps_serving(
    server, halves, tiny_data, header, payload, content_type
):
    headers = {**AUTH, "content-type": content_type} if content_type else {"authorization": AUTH["authorization"]}
    response = server.post("/v1/infer", content=header + payload, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]
    z = _features(halves, tiny_data.test.images[:1])
    good = server.post("/v1/infer", content=encode(z, codec="float16"), headers=AUTH)
    assert good.status_code == 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=5), codec=st.sampled_from(["float32", "float16", "int8"])
)
def test_well_formed_tensors_of_the_wrong_shape_are_422(server, halves, shape, codec):
    if tuple(shape[1:]) == halves[1].feature_shape:
        shape = [*shape, 1]
    body = encode(torch.rand(*shape), codec=codec)
    response = server.post("/v1/infer", content=body, headers=AUTH)
    if len(body) > server.app.state.max_body:
        assert response.status_code == 413 and "exceeds" in response.json()["detail"]
    else:
        assert response.status_code == 422 and "shape" in response.json()["detail"]


def test_the_inference_route_takes_post_only(server):
    response = server.get("/v1/infer", headers=AUTH)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert "POST" in response.json()["detail"]


def test_the_inference_route_answers_with_a_trailing_slash_too(server, halves, tiny_data):
    body = encode(_features(halves, tiny_data.test.images[:1]))
    response = server.post("/v1/infer/", content=body, headers=AUTH, follow_redirects=False)
    assert response.status_code == 200 and response.headers["content-type"] == MEDIA_TYPE


def _call_asgi(server, messages: list[dict]) -> list[dict]:
    """POST /v1/infer straight into the ASGI app, the body as the given messages; what it sent back."""
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    headers = [(k.encode(), v.encode()) for k, v in AUTH.items()]
    scope = {"type": "http", "method": "POST", "path": "/v1/infer", "headers": headers}
    server.portal.call(server.app, scope, receive, send)
    return sent


def test_a_body_in_several_chunks_is_read_whole(server, halves, tiny_data):
    # Called as ASGI directly, so the body really arrives as three messages (a test client may join them).
    z = _features(halves, tiny_data.test.images[:2])
    body = encode(z)
    pieces = [body[:7], body[7:100], body[100:]]
    messages = [{"type": "http.request", "body": p, "more_body": i < 2} for i, p in enumerate(pieces)]
    sent = _call_asgi(server, messages)
    assert not messages and sent[0]["status"] == 200
    with torch.no_grad():
        assert torch.allclose(decode(sent[1]["body"]), halves[1].module(z), atol=1e-6)


def test_a_client_that_hangs_up_mid_body_gets_no_answer_and_is_counted(server, halves, tiny_data):
    body = encode(_features(halves, tiny_data.test.images[:1]))
    messages = [{"type": "http.request", "body": body[:10], "more_body": True}, {"type": "http.disconnect"}]
    assert _call_asgi(server, messages) == []
    text = server.get("/metrics").text
    assert 'splitveil_requests_total{status="499"} 1.0' in text
    assert 'splitveil_errors_total{reason="disconnect"} 1.0' in text


def test_a_repeated_authorization_header_is_read_by_its_first_value(server, halves, tiny_data):
    body = encode(_features(halves, tiny_data.test.images[:1]))
    first_wrong = [
        ("content-type", MEDIA_TYPE),
        ("authorization", "Bearer wrong"),
        ("authorization", f"Bearer {TOKEN}"),
    ]
    first_right = [
        ("content-type", MEDIA_TYPE),
        ("authorization", f"Bearer {TOKEN}"),
        ("authorization", "Bearer wrong"),
    ]
    assert server.post("/v1/infer", content=body, headers=first_wrong).status_code == 401
    assert server.post("/v1/infer", content=body, headers=first_right).status_code == 200

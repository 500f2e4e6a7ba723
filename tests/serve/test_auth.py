def test_token_refusal_says_what_is_missing_or_wrong():
    from splitveil.serve.auth import token_refusal

    tokens = frozenset({"a"})
    assert token_refusal("Bearer a", tokens) is None and token_refusal(None, None) is None
    assert token_refusal(None, tokens) == "missing bearer token"
    assert token_refusal("Bearer b", tokens) == token_refusal("", tokens) == "invalid bearer token"


def test_the_bearer_scheme_is_case_insensitive():
    # RFC 9110 section 11.1: an authentication scheme is matched case-insensitively; the token is not.
    from splitveil.serve.auth import token_accepted

    tokens = frozenset({"Secret"})
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        assert token_accepted(f"{scheme} Secret", tokens)
        assert not token_accepted(f"{scheme} secret", tokens)
    assert not token_accepted("Basic Secret", tokens) and not token_accepted("Bearer", tokens)
    assert not token_accepted("BearerSecret", tokens) and not token_accepted("Secret", tokens)


def test_a_server_takes_any_case_of_the_scheme_and_the_media_type(bundle):
    import torch
    from fastapi.testclient import TestClient

    from splitveil.serve import encode, load_half
    from splitveil.serve.server import ServerSettings, create_app

    cloud = load_half(bundle, "cloud")
    app = create_app(cloud, ServerSettings(tokens=frozenset({"t0ken"})))
    body = encode(torch.zeros(1, *cloud.feature_shape))
    headers = {"authorization": "BEARER t0ken", "content-type": "Application/X-Splitveil-Tensor; v=2"}
    with TestClient(app) as server:
        assert server.post("/v1/infer", content=body, headers=headers).status_code == 200
        assert server.get("/v1/model", headers={"authorization": "bearer t0ken"}).status_code == 200
        assert (
            server.post("/v1/infer", content=body, headers={**headers, "authorization": "bearer T0KEN"}).status_code
            == 401
        )

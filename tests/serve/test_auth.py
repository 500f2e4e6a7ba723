def test_token_refusal_says_what_is_missing_or_wrong():
    from splitveil.serve.auth import token_refusal

    tokens = frozenset({"a"})
    assert token_refusal("Bearer a", tokens) is None and token_refusal(None, None) is None
    assert token_refusal(None, tokens) == "missing bearer token"
    assert token_refusal("Bearer b", tokens) == token_refusal("", tokens) == "invalid bearer token"

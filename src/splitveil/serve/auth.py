"""Bearer tokens for the cloud server: read from a file or an environment variable."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from splitveil.errors import ConfigError

TOKENS_ENV = "SPLITVEIL_TOKENS"


def load_tokens(path: str | Path | None = None, *, env: str = TOKENS_ENV) -> frozenset[str]:
    """Tokens from ``path`` (one per line, ``#`` comments) or, without a path, the ``env`` variable
    (comma-separated). An empty result is an error: a server must not start open by accident."""
    if path is not None:
        try:
            lines = Path(path).read_text().splitlines()
        except FileNotFoundError:
            raise ConfigError(f"token file {path} does not exist") from None
        tokens = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        source = f"token file {path}"
    else:
        tokens = [part.strip() for part in os.environ.get(env, "").split(",") if part.strip()]
        source = f"environment variable {env}"
    if not tokens:
        raise ConfigError(f"no bearer tokens in {source}; add at least one, or start the server with --no-auth")
    if any(any(c.isspace() for c in token) for token in tokens):
        raise ConfigError(f"{source}: tokens cannot contain whitespace")
    return frozenset(tokens)


def token_accepted(header: str | None, tokens: frozenset[str]) -> bool:
    """Whether an ``Authorization`` header carries one of ``tokens`` (compared in constant time)."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    # RFC 9110 (11.1): the scheme is case-insensitive, so "bearer" and "BEARER" name it too.
    if scheme.lower() != "bearer":
        return False
    offered = credentials.strip().encode()
    # Compare against every token, so the time taken does not tell which one nearly matched.
    matches = [hmac.compare_digest(offered, token.encode()) for token in tokens]
    return any(matches)


def token_refusal(header: str | None, tokens: frozenset[str] | None) -> str | None:
    """Why a request with this ``Authorization`` header is refused (None: it may pass, or no auth)."""
    if tokens is None or token_accepted(header, tokens):
        return None
    return "missing bearer token" if header is None else "invalid bearer token"

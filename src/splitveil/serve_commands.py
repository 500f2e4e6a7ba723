"""``splitveil export``, ``serve`` and ``infer``: thin CLI wrappers over :mod:`splitveil.serve`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from splitveil.errors import ConfigError

TOKEN_ENV = "SPLITVEIL_TOKEN"


def export(
    spec: Annotated[Path, typer.Argument(help="YAML spec naming the model, data, training and defenses.")],
    cut_name: Annotated[str, typer.Option("--cut", help="Cut point of the deployment.")],
    out: Annotated[Path, typer.Option(help="Bundle directory to write (edge/ and cloud/ inside).")],
    defense: Annotated[str | None, typer.Option(help="Label of one of the spec's defenses (default: none).")] = None,
    strength: Annotated[float | None, typer.Option(help="Defense strength (default: the defense's first).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Deploy a cut of the spec's model (trained or cached), defended as the bench evaluates it, as a bundle."""
    from splitveil.checkpoint import CheckpointCache
    from splitveil.config import load_spec
    from splitveil.serve.deployment import deployment_from_spec

    cache = CheckpointCache.default(cache_dir)
    deployment = deployment_from_spec(
        load_spec(spec), cut_name, defense=defense, strength=strength, cache=cache, progress=progress
    )
    deployment.export(out)
    deployed = deployment.deployed
    typer.echo(f"bundle {out}: {cut_name}, {defense or 'undefended'}, test accuracy {deployed.accuracy:.4f}")


def serve(
    checkpoint: Annotated[Path, typer.Option(help="Bundle directory (or its cloud/ half).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    tokens_file: Annotated[
        Path | None, typer.Option(help="Bearer tokens, one per line (default: $SPLITVEIL_TOKENS).")
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept requests without a token (loopback experiments).")
    ] = False,
    cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM); with --key, serve HTTPS.")] = None,
    key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    max_batch: Annotated[int, typer.Option(help="Samples per forward pass; 1 disables batching.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(help="Hold a batch open this long for more requests.")] = 0.0,
    max_request_samples: Annotated[int, typer.Option(help="Samples one request may carry.")] = 64,
    capture: Annotated[Path | None, typer.Option(help="Record every received feature to this capture file.")] = None,
    threads: Annotated[int, typer.Option(help="Torch intra-op threads.")] = 1,
    drain_timeout: Annotated[float, typer.Option(help="Seconds to let requests finish on shutdown.")] = 30.0,
) -> None:
    """Serve the cloud half of a bundle over HTTP(S) until SIGTERM, then drain and exit."""
    from splitveil.serve.auth import load_tokens
    from splitveil.serve.run import serve as run_server
    from splitveil.serve.server import ServerSettings

    if no_auth and tokens_file is not None:
        raise ConfigError("--no-auth and --tokens-file contradict each other; choose one")
    tokens = None if no_auth else load_tokens(tokens_file)
    settings = ServerSettings(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_request_samples=max_request_samples,
        tokens=tokens,
        capture=capture,
    )
    typer.echo(f"serving {checkpoint} on {'https' if cert else 'http'}://{host}:{port}", err=True)
    run_server(
        checkpoint,
        host=host,
        port=port,
        settings=settings,
        certfile=cert,
        keyfile=key,
        threads=threads,
        drain_timeout=drain_timeout,
    )


def infer(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG) or .npy arrays.")],
    checkpoint: Annotated[Path, typer.Option(help="Bundle directory (or its edge/ half).")],
    url: Annotated[str, typer.Option(help="The cloud server, e.g. https://cloud:8443.")],
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the bearer token (default: $SPLITVEIL_TOKEN).")
    ] = None,
    codec: Annotated[str, typer.Option(help="Feature encoding: float32, float16 or int8.")] = "float32",
    zstd: Annotated[bool, typer.Option("--zstd", help="Compress the feature with zstd.")] = False,
    ca_cert: Annotated[
        Path | None, typer.Option(help="CA certificate to trust for HTTPS (e.g. a self-signed one).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Classify images: the edge half runs here, the cloud half on the server."""
    from splitveil.serve import CODECS, load_half
    from splitveil.serve.client import EdgeClient
    from splitveil.serve.images import load_images

    if codec not in CODECS:
        raise typer.BadParameter(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
    token = token_file.read_text().strip() if token_file else os.environ.get(TOKEN_ENV)
    edge = load_half(checkpoint, "edge")
    batch, names = load_images(images, tuple(edge.metadata["input_shape"]))
    options = {"token": token, "codec": codec, "compress": zstd, "timeout": timeout, "verify": ca_cert or True}
    with EdgeClient(edge.module, url, **options) as client:  # type: ignore[arg-type]
        labels = []
        for start in range(0, len(batch), 64):
            labels.extend(client.predict(batch[start : start + 64]).tolist())
    for name, label in zip(names, labels, strict=True):
        cls = edge.class_names[label]
        typer.echo(json.dumps({"image": name, "label": label, "class": cls}) if as_json else f"{name}: {cls} ({label})")

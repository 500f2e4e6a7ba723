"""``splitveil export``, ``serve`` and ``infer``: thin CLI wrappers over :mod:`splitveil.serve`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer

from splitveil.errors import ConfigError

TOKEN_ENV = "SPLITVEIL_TOKEN"
#: What runs the edge half on the device: PyTorch, or the exported edge.onnx on ONNX Runtime.
EdgeRuntime = Literal["torch", "onnx"]

Plugins = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin",
        help="Import this module first: it registers the bundle's components (repeatable; a bundle never imports "
        "code by itself).",
    ),
]


def export(
    spec: Annotated[Path, typer.Argument(help="YAML spec naming the model, data, training and defenses.")],
    cut_name: Annotated[str, typer.Option("--cut", help="Cut point of the deployment.")],
    out: Annotated[Path, typer.Option(help="Bundle directory to write (edge/ and cloud/ inside).")],
    defense: Annotated[str | None, typer.Option(help="Label of one of the spec's defenses (default: none).")] = None,
    strength: Annotated[float | None, typer.Option(help="Defense strength (default: the defense's first).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    onnx: Annotated[
        bool,
        typer.Option(
            "--onnx",
            help="Also write edge.onnx and cloud.onnx beside the bundle, the defense inside the graph, verified "
            "against the torch halves (needs splitveil[onnx]).",
        ),
    ] = False,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="With --onnx: also write edge.int8.onnx, the edge statically quantised to int8 (calibrated on "
            "target-train images; the defense's ops stay float32), and compare its accuracy with edge.onnx's.",
        ),
    ] = False,
) -> None:
    """Deploy a cut of the spec's model (trained or cached), defended as the bench evaluates it, as a bundle."""
    from splitveil.checkpoint import CheckpointCache
    from splitveil.config import load_spec
    from splitveil.serve.deployment import deployment_from_spec

    if int8 and not onnx:  # before training, which can take minutes
        raise ConfigError("--int8 quantises the edge.onnx that --onnx writes: add --onnx")
    check_directory_can_be_made(out, "--out")  # before training, which can take minutes
    cache = CheckpointCache.default(cache_dir)
    deployment = deployment_from_spec(
        load_spec(spec), cut_name, defense=defense, strength=strength, cache=cache, progress=progress
    )
    deployment.export(out)
    deployed = deployment.deployed
    typer.echo(f"bundle {out}: {cut_name}, {defense or 'undefended'}, test accuracy {deployed.accuracy:.4f}")
    if onnx:
        halves = deployment.export_onnx(out)
        checked = ", ".join(f"{half} within {difference:.1g}" for half, difference in halves.max_difference.items())
        draws = (
            "; the edge draws its noise in the graph (mean and std checked over draws)"
            if halves.stochastic_edge
            else ""
        )
        typer.echo(
            f"onnx: {halves.edge.name} and {halves.cloud.name} in {out}, verified against torch ({checked}){draws}"
        )
    if int8:
        quantized = deployment.export_int8_edge(out)
        gap = "" if quantized.feature_error is None else f", feature within {quantized.feature_error:.1%} of float32's"
        typer.echo(
            f"int8: {quantized.path.name} in {out}, {quantized.size / 1024:.1f} KiB vs {quantized.fp32_size / 1024:.1f} "
            f"KiB ({quantized.size_ratio:.2f}x smaller); accuracy {quantized.accuracy:.4f} vs float32 "
            f"{quantized.fp32_accuracy:.4f} on {quantized.checked} test images "
            f"({100 * (quantized.accuracy - quantized.fp32_accuracy):+.2f} points){gap}"
        )


def serve(
    checkpoint: Annotated[Path, typer.Option(exists=True, help="Bundle directory (or its cloud/ half).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    # Port 0 (any free port) is refused too: the printed URL would not say which port clients must use.
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on (1-65535).")] = 8000,
    tokens_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            callback=lambda path: check_text_file(path, "token file"),
            help="Bearer tokens, one per line (default: $SPLITVEIL_TOKENS).",
        ),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept requests without a token (loopback experiments).")
    ] = False,
    cert: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, callback=check_pem_file, help="TLS certificate (PEM); serve HTTPS."),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, callback=check_pem_file, help="TLS private key of --cert (PEM)."),
    ] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Samples per forward pass; 1 disables batching.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="Hold a batch open this long for more requests.")] = 0.0,
    max_request_samples: Annotated[int, typer.Option(min=1, help="Samples one request may carry.")] = 64,
    capture: Annotated[Path | None, typer.Option(help="Record every received feature to this capture file.")] = None,
    capture_errors: Annotated[
        Literal["fail", "skip"],
        typer.Option(
            help="When a capture write fails: 'fail' answers 507 and turns not ready; 'skip' serves uncaptured."
        ),
    ] = "fail",
    capture_max_bytes: Annotated[
        int | None,
        typer.Option(
            min=1, help="Continue in FILE's next numbered file (cap.1.svcap, ...) before one grows past this."
        ),
    ] = None,
    capture_max_files: Annotated[
        int | None,
        typer.Option(
            min=1, help="With --capture-max-bytes: at most this many files; then capture fails (--capture-errors)."
        ),
    ] = None,
    threads: Annotated[
        int, typer.Option(min=1, help="Intra-op threads of the cloud half (torch's, or ONNX Runtime's).")
    ] = 1,
    runtime: Annotated[
        Literal["torch", "onnx"],
        typer.Option(
            help="What computes the cloud half: torch (the bundle's cloud/) or onnx (cloud.onnx beside it, written by "
            "`splitveil export --onnx`, run by ONNX Runtime); the API, limits and answers are the same."
        ),
    ] = "torch",
    drain_timeout: Annotated[float, typer.Option(min=0, help="Seconds to let requests finish on shutdown.")] = 30.0,
    max_connections: Annotated[
        int | None,
        typer.Option(min=1, help="Open connections held at once; more are answered 503 (default: the fd limit)."),
    ] = None,
    header_timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a request's headers may take to arrive; then 408.")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a request's body may take after its headers; then 408.")
    ] = 30.0,
    max_pending_bytes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Bytes of request bodies held at once, over all connections; past it 503 "
            "(default: 256 MiB, or two full requests if more).",
        ),
    ] = None,
    plugin: Plugins = None,
) -> None:
    """Serve the cloud half of a bundle over HTTP(S) until SIGTERM, then drain and exit."""
    from splitveil.plugins import load_plugins

    load_plugins(plugin or [])
    from splitveil.serve.auth import load_tokens
    from splitveil.serve.cloud_runtime import load_cloud_runtime
    from splitveil.serve.connections import ConnectionLimits
    from splitveil.serve.pending_bodies import PendingBodies
    from splitveil.serve.run import serve as run_server
    from splitveil.serve.server import ServerSettings, max_body_bytes

    if no_auth and tokens_file is not None:
        raise ConfigError("--no-auth and --tokens-file contradict each other; choose one")
    if (cert is None) != (key is None):
        raise ConfigError("HTTPS needs both --cert CERT.pem and --key KEY.pem (or neither, for plain HTTP)")
    if cert is not None and key is not None:  # both or neither, checked above
        check_tls_pair(cert, key)
    if capture is None and (capture_max_bytes is not None or capture_max_files is not None):
        raise ConfigError("--capture-max-bytes and --capture-max-files limit a capture; give --capture FILE too")
    if capture_max_files is not None and capture_max_bytes is None:
        raise ConfigError("--capture-max-files counts files rotated at --capture-max-bytes; give that too")
    tokens = None if no_auth else load_tokens(tokens_file)
    settings = ServerSettings(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_request_samples=max_request_samples,
        tokens=tokens,
        capture=capture,
        capture_errors=capture_errors,
        capture_max_bytes=capture_max_bytes,
        capture_max_files=capture_max_files,
        max_pending_bytes=max_pending_bytes,
    )
    # The bundle (and cloud.onnx) and the budget are checked before the address is announced, so that a
    # refusal is the only line printed. The server loads them again: a zoo model's cloud half loads in
    # milliseconds.
    cloud = load_cloud_runtime(checkpoint, runtime, threads=threads)
    PendingBodies.for_server(max_pending_bytes, max_body_bytes(cloud.feature_shape, max_request_samples))
    typer.echo(f"serving {checkpoint} ({runtime}) on {'https' if cert else 'http'}://{host}:{port}", err=True)
    run_server(
        checkpoint,
        host=host,
        port=port,
        settings=settings,
        certfile=cert,
        keyfile=key,
        threads=threads,
        drain_timeout=drain_timeout,
        limits=ConnectionLimits(max_connections, header_timeout, body_timeout),
        runtime=runtime,
    )


def infer(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG) or .npy arrays.")],
    checkpoint: Annotated[
        Path,
        typer.Option(exists=True, help="Bundle directory (or its edge/ half; with --runtime onnx, its edge.onnx)."),
    ],
    url: Annotated[str, typer.Option(help="The cloud server, e.g. https://cloud:8443.")],
    token_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            callback=lambda path: check_text_file(path, "token file"),
            help="File holding the bearer token (default: $SPLITVEIL_TOKEN).",
        ),
    ] = None,
    codec: Annotated[str, typer.Option(help="Feature encoding: float32, float16 or int8.")] = "float32",
    zstd: Annotated[bool, typer.Option("--zstd", help="Compress the feature with zstd.")] = False,
    ca_cert: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            callback=check_pem_file,
            help="CA certificate (PEM) to trust for HTTPS (e.g. a self-signed one).",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(callback=check_positive_seconds, help="Seconds per request (> 0).")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    runtime: Annotated[
        EdgeRuntime,
        typer.Option(
            help="What runs the edge: torch (the bundle's edge/ half) or onnx (its edge.onnx on ONNX Runtime, "
            "which is all a device with splitveil's edge extra has)."
        ),
    ] = "torch",
    plugin: Plugins = None,
) -> None:
    """Classify images: the edge half runs here, the cloud half on the server."""
    from splitveil.plugins import load_plugins

    load_plugins(plugin or [])
    from splitveil.edge.images import read_image_files
    from splitveil.serve.codec import CODECS

    if codec not in CODECS:
        raise typer.BadParameter(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
    token = token_file.read_text().strip() if token_file else os.environ.get(TOKEN_ENV)
    if token_file is not None and not token:
        raise ConfigError(f"token file {token_file} is empty; write the bearer token the server accepts into it")
    if ca_cert is not None:
        check_ca_certificate(ca_cert)
    connection = {"token": token, "codec": codec, "compress": zstd, "timeout": timeout, "verify": ca_cert or True}
    edge = _device_edge(runtime, checkpoint, url, connection)
    with edge.client:
        batch, names = read_image_files(images, edge.input_shape)
        labels = []
        for start in range(0, len(batch), 64):
            labels.extend(edge.predict(batch[start : start + 64]))
    for name, label in zip(names, labels, strict=True):
        cls = edge.class_names[label]
        typer.echo(json.dumps({"image": name, "label": label, "class": cls}) if as_json else f"{name}: {cls} ({label})")


@dataclass(frozen=True)
class _DeviceEdge:
    """An edge client of either runtime, as ``infer`` uses it: numpy images in, labels out."""

    client: AbstractContextManager[Any]
    input_shape: tuple[int, int, int]
    class_names: list[str]
    predict: Callable[[np.ndarray], list[int]]


def _device_edge(runtime: EdgeRuntime, checkpoint: Path, url: str, connection: dict[str, Any]) -> _DeviceEdge:
    """The bundle's edge on ``runtime``, connected to the cloud at ``url``.

    The onnx runtime imports no torch: it is what ``pip install 'splitveil[edge]'`` can run."""
    if runtime == "onnx":
        from splitveil.edge.client import EdgeClient as OnnxEdgeClient

        device = OnnxEdgeClient.from_bundle(checkpoint, url, **connection)
        return _DeviceEdge(
            device, device.edge.input_shape, device.class_names, lambda batch: device.predict(batch).tolist()
        )
    import torch

    from splitveil.serve.bundle import load_half
    from splitveil.serve.client import EdgeClient

    edge = load_half(checkpoint, "edge")
    client = EdgeClient(edge.module, url, num_classes=edge.metadata["num_classes"], **connection)
    shape = tuple(edge.metadata["input_shape"])
    return _DeviceEdge(client, shape, edge.class_names, lambda batch: client.predict(torch.from_numpy(batch)).tolist())


# Checks of the files and values these commands are given: each refuses with one line that names the
# option, the file and the fix, before anything is loaded, trained or served.

#: Tokens and certificates are a few kilobytes; a bigger file is the wrong file (and is not read whole).
SMALL_FILE_BYTES = 1 << 20


def check_text_file(path: Path | None, what: str) -> Path | None:
    """Option callback: ``path`` must be a small UTF-8 text file (a token file, not a binary one)."""
    if path is not None and not _is_text(_read_small_file(path, what)):
        raise typer.BadParameter(f"{path} is not a text file; a {what} holds one token per line")
    return path


def check_pem_file(path: Path | None) -> Path | None:
    """Option callback: ``path`` must look like PEM; whether it holds a usable certificate or key is
    checked with the ssl module once all options are known."""
    if path is not None and b"-----BEGIN " not in _read_small_file(path, "PEM file"):
        raise typer.BadParameter(
            f"{path} is not a PEM file (no '-----BEGIN' line); convert it, e.g. "
            "`openssl x509 -inform der -in cert.der -out cert.pem`"
        )
    return path


def _read_small_file(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(SMALL_FILE_BYTES + 1)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {what} {path} ({exc.strerror}); check its permissions") from None
    if len(data) > SMALL_FILE_BYTES:
        raise typer.BadParameter(f"{path} is larger than {SMALL_FILE_BYTES >> 20} MiB; it cannot be a {what}")
    return data


def _is_text(data: bytes) -> bool:
    try:
        return "\0" not in data.decode("utf-8")
    except UnicodeDecodeError:
        return False


def check_positive_seconds(seconds: float) -> float:
    """Option callback: a timeout must be a finite number of seconds above zero."""
    if not 0 < seconds < float("inf"):
        raise typer.BadParameter(f"a timeout is a number of seconds above 0, got {seconds}")
    return seconds


def check_tls_pair(cert: Path, key: Path) -> None:
    """``cert`` and ``key`` load as a certificate and its private key (not encrypted: nobody could type
    its password into a server)."""
    import ssl

    def encrypted() -> str:
        raise ConfigError(f"the private key of {cert} is encrypted; decrypt it (`openssl pkey -in KEY -out KEY`)")

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password=encrypted)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"--cert {cert} and --key {key} do not load as a certificate and its private key ({exc.reason or exc}); "
            "give the PEM certificate and the PEM key it was issued for"
        ) from None


def check_ca_certificate(ca_cert: Path) -> None:
    import ssl

    try:
        ssl.create_default_context(cafile=str(ca_cert))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"--ca-cert {ca_cert} holds no usable certificate ({exc.reason or exc}); give the server's CA certificate in PEM"
        ) from None


def check_directory_can_be_made(directory: Path, option: str) -> None:
    """``directory`` is a directory or can be made: neither it nor a parent is an existing file."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{option} {directory} is an existing file, not a directory; give a new directory")
    parent = next((p for p in directory.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"{option} {directory} lies under {parent}, which is a file; give a directory path")

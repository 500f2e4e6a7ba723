"""Start real ``splitveil serve`` processes on loopback for the end-to-end tests."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, made with the openssl command line."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@contextlib.contextmanager
def running_server(
    checkpoint: Path, *, tokens_file: Path | None, extra: list[str] = (), tls: tuple[Path, Path] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``(url, process)`` of a server that answers /readyz; SIGTERM and a clean exit at the end."""
    port = free_port()
    command = [sys.executable, "-m", "splitveil.cli", "serve", "--checkpoint", str(checkpoint), "--port", str(port)]
    command += ["--tokens-file", str(tokens_file)] if tokens_file else ["--no-auth"]
    if tls:
        command += ["--cert", str(tls[0]), "--key", str(tls[1])]
    process = subprocess.Popen([*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        wait_ready(url, process, verify=ssl.create_default_context(cafile=str(tls[0])) if tls else True)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def wait_ready(
    url: str, process: subprocess.Popen, *, verify: bool | ssl.SSLContext = True, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.stdout.read().decode()}")
        try:
            if httpx.get(f"{url}/readyz", verify=verify, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"server at {url} not ready after {timeout} s")

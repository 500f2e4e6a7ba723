"""Run ``splitveil serve`` as a child process: for benchmarks, integration tests and local replicas.

The server runs in its own interpreter, as it would in production, so what is measured against it
includes the real HTTP stack and nothing is shared with the caller but the loopback network.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx

from splitveil.errors import ServeError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A ``splitveil serve`` child process; a context manager that waits for readiness and drains at the end.

    Example::

        with ServerProcess("deploy", extra=["--no-auth"]) as server:
            client = EdgeClient.from_bundle("deploy", server.url)
    """

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        extra: list[str] | tuple[str, ...] = (),
        tls: tuple[Path, Path] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.port = port or free_port(host)
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.command = [sys.executable, "-m", "splitveil.cli", "serve", "--checkpoint", str(checkpoint)]
        self.command += ["--host", host, "--port", str(self.port), *extra]
        if tls:
            self.command += ["--cert", str(tls[0]), "--key", str(tls[1])]
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServeError("the server process is not running; use ServerProcess as a context manager")
        return self.process.pid

    def start(self) -> ServerProcess:
        # The server's output goes to a file, not a pipe: nobody reads a pipe while the server runs,
        # and a full one (a burst of tracebacks) would block the server.
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_ready()
        return self

    def output(self) -> str:
        """What the server has printed so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def wait_ready(self) -> None:
        """Block until ``/readyz`` answers 200; a server that exits first raises with its output."""
        assert self.process is not None
        verify: bool | ssl.SSLContext = ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else True
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeError(
                    f"the server exited with {self.process.returncode} before it was ready:\n{self.output()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", verify=verify, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServeError(f"the server at {self.url} was not ready after {self.ready_timeout:.0f} s")

    def rss_bytes(self) -> int:
        """The server's resident memory now (Linux ``/proc``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise ServeError(f"/proc/{self.pid}/status has no VmRSS line")

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far, user and system, all its threads (Linux ``/proc``)."""
        # utime and stime are fields 14 and 15 of /proc/PID/stat; the split starts after the command
        # name (field 2, in parentheses, may hold spaces), so at field 3: they are items 11 and 12.
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the server drains), then wait; SIGKILL if it has not exited after ``timeout``."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise ServeError(f"the server at {self.url} did not drain within {timeout:.0f} s and was killed") from None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

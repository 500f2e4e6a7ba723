"""Where cells run: a process pool on this machine, or a Ray cluster.

Both hand back :class:`concurrent.futures.Future` objects, so the scheduler does not care which
one it drives. ``slots`` is how many cells run at once; the scheduler never submits more, so a
submitted cell is a running cell (and the progress display can say so).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Protocol

from splitveil.bench.tasks import CellOutcome, CellRequest, execute_cell
from splitveil.errors import ConfigError


class Executor(Protocol):
    name: str
    slots: int
    #: torch threads per cell. Results are bit-identical across executors for the same value (the
    #: float reductions of a convolution can depend on it).
    threads: int

    def submit(self, request: CellRequest) -> Future[CellOutcome]: ...

    def restart(self) -> None: ...

    def shutdown(self, *, wait: bool = True) -> None: ...


class LocalExecutor:
    """A pool of ``workers`` processes (spawned, so each has its own torch state).

    Workers die with the driver (Linux's parent-death signal), so a driver killed with SIGKILL leaves
    no worker computing a cell that the restarted driver computes again.
    """

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None) -> None:
        self.slots = available_cores() if workers is None else workers
        if self.slots < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.slots}")
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        # One thread per cell unless asked: more would oversubscribe a machine that is busy with
        # anything else, and a cell's figures depend on its thread count (reproducible at the default).
        self.threads = threads or 1
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(max_workers=self.slots, mp_context=context, initializer=_die_with_parent)

    def submit(self, request: CellRequest) -> Future[CellOutcome]:
        return self._pool.submit(execute_cell, request)

    def restart(self) -> None:
        """A fresh pool after a worker died (the old pool is broken for every task it held)."""
        self.shutdown(wait=False)
        self._pool = self._new_pool()

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the pool; ``wait=False`` also terminates workers busy with a cell (an error path)."""
        if not wait:
            self._terminate_workers()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _terminate_workers(self) -> None:
        terminate = getattr(self._pool, "terminate_workers", None)  # public from Python 3.14
        if terminate is not None:
            terminate()
            return
        for process in list((getattr(self._pool, "_processes", None) or {}).values()):  # before 3.14: no public API
            process.terminate()


class RayExecutor:
    """Cells as Ray tasks of one CPU each, on the cluster at ``address`` (None: a local Ray started here)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, threads: int = 1, connect_timeout: float = 5.0) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'splitveil[ray]'") from None
        if address not in (None, "auto", "local"):
            _check_reachable(address, connect_timeout)
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
        except ConnectionError as exc:
            raise ConfigError(
                f"could not join the Ray cluster at {address}: {exc}. A cluster with token authentication "
                "needs its token here too: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)"
            ) from None
        self._ray = ray
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.threads = threads  # torch threads per cell; a cell reserves as many CPUs
        self.slots = max(1, cpus // threads)
        self._remote = ray.remote(num_cpus=threads, max_retries=0)(execute_cell)

    def submit(self, request: CellRequest) -> Future[CellOutcome]:
        return self._remote.remote(request).future()

    def restart(self) -> None:
        """Nothing to rebuild: Ray reports a lost worker per task, and the cell fails alone."""

    def shutdown(self, *, wait: bool = True) -> None:
        self._ray.shutdown()


def create_executor(
    name: str, *, workers: int | None = None, threads: int | None = None, address: str | None = None
) -> Executor:
    if name == "local":
        if address is not None:
            raise ConfigError("--address is for --executor ray; the local executor runs on this machine")
        return LocalExecutor(workers, threads)
    if name == "ray":
        if workers is not None:
            raise ConfigError("--workers is for --executor local; Ray runs as many cells as its cluster has CPUs")
        return RayExecutor(address, threads=threads or 1)
    raise ConfigError(f"unknown executor {name!r}; choose local or ray")


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the driver dies (no-op elsewhere)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _check_reachable(address: str, timeout: float) -> None:
    """Fail fast, with the fix, when nothing listens at a Ray address (ray.init would wait a long time)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Ray address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
            f"`ray start --head --port {port}` there, or leave out --address for a local Ray"
        ) from None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset and cgroup cpusets shrink it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity API (macOS)
        return os.cpu_count() or 1

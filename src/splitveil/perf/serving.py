"""The serving benchmark: latency, throughput and bytes of a bundle served over loopback.

Everything is measured in one run, side by side, so the ratios are what to read:

- **baselines**: the unsplit model and the in-process split (edge then cloud in one process), one
  image per call;
- **round trip**: a bare `GET /healthz` (the HTTP floor), then one image at a time through :class:`~splitveil.serve.client.EdgeClient` (edge,
  encode, HTTP to a real server process, decode), per codec;
- **load**: per codec and concurrency, encoded features of real test images posted by the load
  generator (:mod:`splitveil.serve.loadgen`): p50/p99 latency, throughput, bytes per request;
- **batching**: the same load at one concurrency against a server with ``--max-batch 1``;
- **soak**: many requests at one concurrency against a fresh server, with its resident memory after
  a warm-up and at the end;
- **runtimes** (given more than one): float32 load at each concurrency against a server of each cloud
  runtime (``--runtime torch``, ``--runtime onnx``), side by side (:mod:`splitveil.perf.serving_runtimes`).

Every server but the side-by-side ones runs the first runtime named.
"""

from __future__ import annotations

import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from torch import nn

from splitveil.config import DefenseSpec
from splitveil.errors import ConfigError, ServeError
from splitveil.perf.serving_runtimes import compare_runtimes, runtimes_markdown
from splitveil.progress import progress_bar
from splitveil.serve.bundle import load_half
from splitveil.serve.client import EdgeClient
from splitveil.serve.cloud_runtime import RUNTIMES
from splitveil.serve.codec import CODECS, Codec, encode
from splitveil.serve.loadgen import LoadResult, run_load
from splitveil.serve.process import ServerProcess


@dataclass(frozen=True)
class ServeBenchSettings:
    codecs: Sequence[Codec] = CODECS
    concurrency: Sequence[int] = (1, 4, 16, 64)
    requests: int = 2000  # per (codec, concurrency) load run
    round_trips: int = 300  # sequential one-image calls per baseline and codec; the first 50 warm up
    batching_concurrency: int = 16
    soak_requests: int = 10_000
    soak_concurrency: int = 16
    soak_warmup: int = 1000
    distinct_bodies: int = 256  # test images encoded once and cycled by the load generator
    runtimes: Sequence[str] = ("torch",)  # cloud runtimes; the first runs every server but the side-by-side ones
    runtime_rounds: int = 3  # alternating rounds of the side-by-side runs (more than one runtime)


@dataclass
class ServeBenchmark:
    """The figures of one run; :meth:`to_dict` is what ``--out`` writes."""

    bundle: str
    #: The deployment measured, from the bundle (the report's cost table matches serving figures by these).
    cut: str | None = None
    defense: str = "none"
    strength: float = 0.0
    runtime: str = "torch"  # what computed the cloud half in every server but the side-by-side ones
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    round_trip: dict[str, dict[str, float]] = field(default_factory=dict)
    load: list[dict[str, Any]] = field(default_factory=list)
    batching: dict[str, Any] = field(default_factory=dict)
    soak: dict[str, Any] = field(default_factory=dict)
    runtimes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "cut": self.cut,
            "defense": self.defense,
            "strength": self.strength,
            "runtime": self.runtime,
            "baselines": self.baselines,
            "round_trip": self.round_trip,
            "load": self.load,
            "batching": self.batching,
            "soak": self.soak,
            "runtimes": self.runtimes,
        }


_WARMUP_CALLS = 50


def benchmark_serving(
    bundle: str | Path,
    images: torch.Tensor,
    *,
    unsplit: nn.Module | None = None,
    settings: ServeBenchSettings | None = None,
    progress: bool = True,
) -> ServeBenchmark:
    """Run every part of the benchmark against servers started from ``bundle`` on loopback."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the servers run with one thread too: baselines and servers alike
    try:
        return _benchmark(bundle, images, unsplit=unsplit, settings=settings or ServeBenchSettings(), progress=progress)
    finally:
        torch.set_num_threads(threads)


def _benchmark(
    bundle: str | Path, images: torch.Tensor, *, unsplit: nn.Module | None, settings: ServeBenchSettings, progress: bool
) -> ServeBenchmark:
    runtimes = list(dict.fromkeys(settings.runtimes))
    unknown = [runtime for runtime in runtimes if runtime not in RUNTIMES]
    if not runtimes or unknown:
        raise ConfigError(f"cloud runtimes {unknown or 'none'} given; choose among {', '.join(RUNTIMES)}")
    edge_half = load_half(bundle, "edge")
    meta = edge_half.metadata
    label = "none" if meta["defense"] is None else DefenseSpec.model_validate(meta["defense"]).display_name
    result = ServeBenchmark(str(bundle), cut=meta["cut"], defense=label, strength=meta["strength"])
    result.runtime = runtimes[0]
    edge = edge_half.module.eval()
    cloud_half = load_half(bundle, "cloud")
    cloud = cloud_half.module.eval()
    singles = [images[i : i + 1] for i in range(min(settings.round_trips, len(images)))]
    if unsplit is not None:
        result.baselines["unsplit"] = _latency_summary(_time_calls(unsplit.eval(), singles))
    result.baselines["in_process_split"] = _latency_summary(_time_calls(lambda x: cloud(edge(x)), singles))
    if "onnx" in runtimes:
        from splitveil.serve.onnx_cloud import onnx_runtime

        onnx_cloud = onnx_runtime(bundle, cloud_half, threads=1).forward
        in_process = _latency_summary(_time_calls(lambda x: onnx_cloud(edge(x)), singles))
        result.baselines["in_process_split_onnx_cloud"] = in_process
    with torch.inference_mode():
        features = edge(images[: settings.distinct_bodies])
    token = secrets.token_urlsafe(16)
    steps = len(settings.codecs) * (1 + len(settings.concurrency)) + 2 + (len(runtimes) > 1)
    with tempfile.TemporaryDirectory(prefix="splitveil-bench-serve-") as scratch:
        tokens_file = Path(scratch) / "tokens"
        tokens_file.write_text(token + "\n")
        # The bundle's plugins come from the user's own spec: its servers may import them.
        auth = [
            "--tokens-file",
            str(tokens_file),
            *(flag for name in meta.get("plugins", []) for flag in ("--plugin", name)),
        ]
        serving = [*auth, "--runtime", runtimes[0]]
        run = _Runner(bundle, serving, token, features, settings)
        with progress_bar("serving benchmark", total=steps, enabled=progress) as advance:
            with ServerProcess(bundle, extra=serving) as server:
                with httpx.Client() as plain:  # the floor: an HTTP exchange with no tensor in it
                    floor = _time_calls(lambda _: plain.get(server.url + "/healthz"), singles)
                result.round_trip["healthz"] = _latency_summary(floor) | {"bytes_per_request": 0}
                for codec in settings.codecs:
                    num_classes = edge_half.metadata["num_classes"]  # answers checked as a deployed client would
                    with EdgeClient(edge, server.url, token=token, codec=codec, num_classes=num_classes) as client:
                        summary = _latency_summary(_time_calls(client.logits, singles))
                    result.round_trip[codec] = summary | {"bytes_per_request": len(run.bodies(codec)[0])}
                    advance()
                    for concurrency in settings.concurrency:
                        result.load.append({"codec": codec, **run.load(server.url, codec, concurrency).summary()})
                        advance()
                batched = run.load_with_cpu(server, "float32", settings.batching_concurrency)
            with ServerProcess(bundle, extra=[*serving, "--max-batch", "1"]) as server:
                unbatched = run.load_with_cpu(server, "float32", settings.batching_concurrency)
            advance()
            result.batching = {
                "concurrency": settings.batching_concurrency,
                "batched": batched,
                "unbatched": unbatched,
                "speedup": batched["throughput"] / unbatched["throughput"],
            }
            result.soak = run.soak()
            advance()
            if len(runtimes) > 1:
                result.runtimes = compare_runtimes(
                    bundle,
                    runtimes,
                    extra=auth,
                    concurrency=settings.concurrency,
                    rounds=settings.runtime_rounds,
                    measure=lambda server, clients: run.load_with_cpu(server, "float32", clients),
                )
                advance()
    return result


class _Runner:
    """Load runs against servers of one bundle, with bodies encoded once per codec."""

    def __init__(
        self, bundle: str | Path, auth: list[str], token: str, features: torch.Tensor, settings: ServeBenchSettings
    ) -> None:
        self.bundle, self.auth, self.token, self.settings = bundle, auth, token, settings
        self.features = features
        self._bodies: dict[str, list[bytes]] = {}

    def bodies(self, codec: Codec) -> list[bytes]:
        if codec not in self._bodies:
            self._bodies[codec] = [encode(z[None], codec=codec) for z in self.features]
        return self._bodies[codec]

    def load(self, url: str, codec: Codec, concurrency: int) -> LoadResult:
        """A short warm-up (the server's first batches and allocations), then the measured run."""
        self._warm_up(url, codec, concurrency)
        return self._measure(url, codec, concurrency)

    def load_with_cpu(self, server: ServerProcess, codec: Codec, concurrency: int) -> dict[str, Any]:
        """:meth:`load`'s summary, with the server's CPU time per request and the cores it kept busy.

        On a machine the server shares with the load generator, these say whether it was the limit.
        """
        self._warm_up(server.url, codec, concurrency)
        before = server.cpu_seconds()
        result = self._measure(server.url, codec, concurrency)
        cpu = server.cpu_seconds() - before
        return result.summary() | {
            "server_cpu_us_per_request": 1e6 * cpu / len(result.latencies),  # per answered request
            "server_cores_busy": cpu / result.seconds,
        }

    def _warm_up(self, url: str, codec: Codec, concurrency: int) -> None:
        requests = min(self.settings.requests, 4 * concurrency + 50)
        run_load(url, self.bodies(codec), concurrency=concurrency, requests=requests, token=self.token)

    def _measure(self, url: str, codec: Codec, concurrency: int) -> LoadResult:
        result = run_load(
            url, self.bodies(codec), concurrency=concurrency, requests=self.settings.requests, token=self.token
        )
        if not result.latencies:
            causes = ", ".join(f"{count} x {cause}" for cause, count in result.errors.items())
            raise ServeError(f"every request of the {codec} load at {concurrency} clients failed ({causes})")
        return result

    def soak(self) -> dict[str, Any]:
        """Many requests against a fresh server; its resident memory after a warm-up and at the end."""
        settings, bodies = self.settings, self.bodies("float32")
        with ServerProcess(self.bundle, extra=self.auth) as server:
            concurrency, token = settings.soak_concurrency, self.token
            run_load(server.url, bodies, requests=settings.soak_warmup, concurrency=concurrency, token=token)
            rss_before = server.rss_bytes()
            soak = run_load(server.url, bodies, requests=settings.soak_requests, concurrency=concurrency, token=token)
            rss_after = server.rss_bytes()
        return soak.summary() | {
            "error_causes": dict(soak.errors),
            "rss_before_mib": rss_before / 2**20,
            "rss_after_mib": rss_after / 2**20,
            "rss_growth": rss_after / rss_before - 1,
        }


def _time_calls(call: Callable[[torch.Tensor], object], inputs: list[torch.Tensor]) -> list[float]:
    """Seconds per call, one input at a time; the first calls warm caches up and are not kept."""
    seconds = []
    with torch.inference_mode():
        for index, x in enumerate(inputs):
            started = time.perf_counter()
            call(x)
            if index >= min(_WARMUP_CALLS, len(inputs) // 2):
                seconds.append(time.perf_counter() - started)
    return seconds


def _latency_summary(seconds: list[float]) -> dict[str, float]:
    if len(seconds) < 2:
        raise ValueError(f"a latency summary needs at least 2 timed calls, got {len(seconds)}; raise round_trips")
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"calls": len(seconds), "p50_ms": 1e3 * statistics.median(seconds), "p99_ms": 1e3 * cuts[98]}


def serving_markdown(result: ServeBenchmark) -> str:
    """The benchmark's figures as the markdown tables of docs/BENCHMARKS.md."""
    lines = ["| path | p50 ms | p99 ms | bytes/request |", "| --- | ---: | ---: | ---: |"]
    for name, row in result.baselines.items():
        lines.append(f"| {name.replace('_', ' ')} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | – |")
    for codec, row in result.round_trip.items():
        path = "GET /healthz over loopback (HTTP alone)" if codec == "healthz" else f"EdgeClient over loopback, {codec}"
        lines.append(f"| {path} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['bytes_per_request']:,} |")
    if result.runtime != "torch":  # figures of other runtimes must not read as the torch server's
        lines += ["", f"Every server below computes the cloud half with `--runtime {result.runtime}`."]
    lines += ["", "| codec | clients | p50 ms | p99 ms | requests/s | bytes/request | errors |"]
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in result.load:
        lines.append(
            f"| {row['codec']} | {row['concurrency']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['throughput']:,.0f} | {row['bytes_per_request']:,.0f} | {row['errors']} |"
        )
    batching, soak = result.batching, result.soak
    if batching:
        lines += [
            "",
            f"Dynamic batching at {batching['concurrency']} clients: {batching['batched']['throughput']:,.0f} "
            f"requests/s against {batching['unbatched']['throughput']:,.0f} with `--max-batch 1` "
            f"(**{batching['speedup']:.2f}×**).",
        ]
        batched, unbatched = batching["batched"], batching["unbatched"]
        if "server_cpu_us_per_request" in batched:  # figures written before the server's CPU was measured lack it
            lines.append(
                f"Server CPU per request: {batched['server_cpu_us_per_request']:.0f} µs batched against "
                f"{unbatched['server_cpu_us_per_request']:.0f} µs unbatched "
                f"({batched['server_cores_busy']:.2f} and {unbatched['server_cores_busy']:.2f} cores busy)."
            )
    if soak:
        lines.append(
            f"Soak: {soak['requests']:,} requests at {soak['concurrency']} clients, {soak['errors']} errors, "
            f"server RSS {soak['rss_before_mib']:.1f} → {soak['rss_after_mib']:.1f} MiB "
            f"(**{100 * soak['rss_growth']:+.1f}%**)."
        )
    if result.runtimes:
        first = result.runtimes[0]
        lines += [
            "",
            f"Cloud runtimes side by side: float32, {first['rounds']} alternating rounds of "
            f"{first['requests'] // first['rounds']:,} requests at each concurrency, medians over the rounds "
            "(requests/s: median, lowest–highest).",
            "",
            runtimes_markdown(result.runtimes),
        ]
    return "\n".join(lines)

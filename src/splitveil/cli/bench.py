"""``splitveil bench``: run sweeps, follow and summarise them, and the performance benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from splitveil.cli.common import checkpoint_cache, console
from splitveil.errors import SplitveilError

if TYPE_CHECKING:  # the CLI imports its commands' modules lazily, to start fast
    pass

bench_app = typer.Typer(help="Run model x cut x attack benchmarks and build their reports.", no_args_is_help=True)


@bench_app.command("run")
def bench_run(
    spec: Annotated[Path, typer.Argument(help="YAML bench spec (e.g. configs/quick.yaml).")],
    out: Annotated[
        Path, typer.Option(file_okay=False, help="Run directory: results.jsonl, report.html, reconstructions.")
    ],
    cache_dir: Annotated[
        Path | None, typer.Option(help="Checkpoint cache (default $SPLITVEIL_CACHE or ~/.cache/splitveil).")
    ] = None,
    data_dir: Annotated[str | None, typer.Option(help="Directory holding the dataset's files.")] = None,
    cuts: Annotated[
        list[str] | None, typer.Option("--cut", help="Run only these cuts instead of the spec's (repeatable).")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(min=0, help="Run with this seed instead of the spec's (one OUT per seed; see `bench spread`)."),
    ] = None,
    executor: Annotated[str, typer.Option(help="Where cells run: local (a process pool) or ray.")] = "local",
    workers: Annotated[int | None, typer.Option(min=1, help="Local worker processes (default: one per core).")] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Torch threads per local worker (default: 1; a cell's figures depend on it)."),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address HOST:PORT (default: start a local Ray).")
    ] = None,
    rerun_changed: Annotated[
        bool, typer.Option("--rerun-changed", help="Recompute cells of OUT whose settings the spec changed.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check SPEC and list its cells and cuts; run and write nothing.")
    ] = False,
) -> None:
    """Run every cell of SPEC not already done in OUT, then write OUT/results.jsonl and OUT/report.html."""
    from splitveil.bench import run_bench
    from splitveil.bench.run import describe_plan
    from splitveil.bench.store import readable_store
    from splitveil.config import load_spec

    resolved = load_spec(spec, {"data.data_dir": data_dir, "cuts": cuts or None, "seed": seed})
    if dry_run:
        typer.echo(describe_plan(resolved))
        return
    with readable_store(out):
        rows = run_bench(
            resolved,
            out,
            cache=checkpoint_cache(cache_dir),
            progress=progress,
            executor=executor,
            workers=workers,
            threads=threads,
            address=address,
            rerun_changed=rerun_changed,
        )
    typer.echo(f"{len(rows)} result rows in {out / 'results.jsonl'}; report: {out / 'report.html'}")


@bench_app.command("status")
def bench_status(directory: Annotated[Path, typer.Argument(help="A bench run directory.")]) -> None:
    """Progress of a run directory: cells done, failed (with their errors), started and pending."""
    from splitveil.bench.status import run_status
    from splitveil.bench.store import readable_store

    with readable_store(directory):
        status = run_status(directory)
    table = Table("cells", "total", "done", "failed", "pending")
    for row in status.kind_rows():
        table.add_row(*map(str, row))
    console().print(table)
    if status.started:
        typer.echo(f"started and not finished in the latest run: {len(status.started)} (running, or cut off)")
    for cell_id, error in status.failed.items():
        typer.echo(f"failed {cell_id}: {error}")
    if status.pending:
        typer.echo(status.work_left())
    if not status.pending and not status.failed:
        typer.echo(f"complete: every cell is done; report: {directory / 'report.html'}")


@bench_app.command("report")
def bench_report(directory: Annotated[Path, typer.Argument(help="A bench run directory.")]) -> None:
    """Rebuild DIRECTORY/report.html from its results.jsonl and saved reconstructions."""
    from splitveil.bench import build_report
    from splitveil.bench.store import readable_store

    with readable_store(directory):
        typer.echo(f"report: {build_report(directory)}")


@bench_app.command("frontier")
def bench_frontier(
    directory: Annotated[Path, typer.Argument(help="A bench run directory.")],
    markdown: Annotated[bool, typer.Option(help="Print a markdown table (for docs) instead of a rich one.")] = False,
) -> None:
    """Print DIRECTORY's frontier: per deployed split, accuracy, every attack's SSIM, MI and costs."""
    from splitveil.bench.results import read_rows
    from splitveil.bench.store import readable_store
    from splitveil.bench.tables import frontier_table

    with readable_store(directory):
        rows = read_rows(directory)
    if not rows:
        raise SplitveilError(f"no results in {directory}; run `splitveil bench run SPEC --out {directory}` first")
    header, lines = frontier_table(rows)
    _print_table(header, lines, markdown=markdown)


def _print_table(header: list[str], lines: list[list[str]], *, markdown: bool) -> None:
    """A markdown table (for docs) or a rich one (for people)."""
    from splitveil.bench.tables import as_markdown

    if markdown:
        typer.echo(as_markdown(header, lines))
        return
    table = Table(*header)
    for line in lines:
        table.add_row(*line)
    console().print(table)


@bench_app.command("spread")
def bench_spread(
    directories: Annotated[
        list[Path], typer.Argument(help="Finished run directories of one spec, one per seed (`bench run --seed`).")
    ],
    markdown: Annotated[bool, typer.Option(help="Print a markdown table (for docs) instead of a rich one.")] = False,
) -> None:
    """Per deployed split, each figure over the seeds as mean [lowest, highest]: accuracy, the strongest
    attack's SSIM, its excess over the output oracle, re-identification, and how many seeds sit at the floor.
    Runs of a spec without attacks give accuracy alone."""
    from splitveil.bench.results import read_rows
    from splitveil.bench.spread import accuracy_spread, deployed_accuracies, seed_spread, spread_table

    missing = [str(d) for d in directories if not d.is_dir()]
    if missing:
        raise SplitveilError(f"not a run directory: {', '.join(missing)}; pass the --out directories of `bench run`")
    runs = [read_rows(directory) for directory in directories]
    if any(runs):  # a run with attacks among them: every run must have its rows (seed_spread says which has not)
        spreads = seed_spread(runs)
    else:
        spreads = accuracy_spread([deployed_accuracies(directory) for directory in directories])
    header, lines = spread_table(spreads)
    _print_table(header, lines, markdown=markdown)


@bench_app.command("codecs")
def bench_codecs(
    spec: Annotated[Path, typer.Argument(help="YAML spec of the (cached) model.")],
    cut_name: Annotated[list[str], typer.Option("--cut", help="Cut(s) to measure.")],
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
) -> None:
    """Test accuracy and request bytes of each wire codec (float32, float16, int8) at each cut."""
    from splitveil.config import load_spec
    from splitveil.experiment import train_or_load
    from splitveil.perf.codecs import codec_table
    from splitveil.split import cut

    trained = train_or_load(load_spec(spec), cache=checkpoint_cache(cache_dir), progress=False)
    test = trained.data.test
    for name in cut_name:
        for row in codec_table(cut(trained.model, at=name), test.images, test.labels):
            typer.echo(
                f"{name} {row['codec']}: accuracy {row['accuracy']:.4f} ({row['accuracy_loss_points']:+.2f} pts lost), "
                f"{row['bytes']:,} bytes/request ({row['fewer_bytes']:.2f}x fewer)"
            )


@bench_app.command("serve")
def bench_serve(
    spec: Annotated[Path, typer.Argument(help="YAML spec naming the model, data, training and defenses.")],
    cut_name: Annotated[str, typer.Option("--cut", help="Cut point of the deployment.")],
    defense: Annotated[str | None, typer.Option(help="Label of one of the spec's defenses (default: none).")] = None,
    concurrency: Annotated[list[int] | None, typer.Option(min=1, help="Concurrent clients (repeatable).")] = None,
    requests: Annotated[int, typer.Option(min=1, help="Requests per codec and concurrency.")] = 2000,
    soak: Annotated[int, typer.Option(min=1, help="Requests of the soak run.")] = 10_000,
    out: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Write the figures as JSON (as RUN_DIR/serving-CUT.json, the report shows them).",
        ),
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
    runtimes: Annotated[
        list[str] | None,
        typer.Option(
            "--runtime",
            help="Cloud runtime of the servers: torch or onnx (default torch). Repeat it (--runtime torch --runtime "
            "onnx) to also measure each side by side at every --concurrency; the first runs the rest.",
        ),
    ] = None,
) -> None:
    """Serve a cut over loopback: latency, throughput and bytes per codec and concurrency, batching, soak."""
    import dataclasses
    import tempfile

    from splitveil.config import load_spec
    from splitveil.perf.serving import ServeBenchSettings, benchmark_serving, serving_markdown
    from splitveil.serve.cloud_runtime import RUNTIMES
    from splitveil.serve.deployment import deployment_from_spec

    for runtime in runtimes or []:
        if runtime not in RUNTIMES:
            raise typer.BadParameter(
                f"{runtime!r} is not a cloud runtime; choose {' or '.join(RUNTIMES)}", param_hint="'--runtime'"
            )
    settings = ServeBenchSettings(requests=requests, soak_requests=soak, runtimes=tuple(runtimes or ["torch"]))
    if concurrency:
        settings = dataclasses.replace(settings, concurrency=tuple(concurrency))
    with tempfile.TemporaryDirectory(prefix="splitveil-bundle-") as bundle:
        deployment = deployment_from_spec(load_spec(spec), cut_name, defense=defense, cache=checkpoint_cache(cache_dir))
        deployment.export(bundle)
        if "onnx" in settings.runtimes:
            deployment.export_onnx(bundle)  # cloud.onnx beside the bundle, verified against torch
        images = deployment.trained.data.test.take(settings.round_trips).images
        result = benchmark_serving(bundle, images, unsplit=deployment.trained.model, settings=settings)
    result.bundle = f"{spec} at {cut_name}" + (f", {defense}" if defense else "")
    typer.echo(serving_markdown(result))
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=2))


@bench_app.command("edge")
def bench_edge(
    spec: Annotated[Path, typer.Argument(help="YAML spec naming the model, data, training and defenses.")],
    cut_name: Annotated[list[str], typer.Option("--cut", help="Cut point(s) of the deployment (repeatable).")],
    out: Annotated[
        Path,
        typer.Option(
            file_okay=False, help="Directory: edge-runtimes.json and .csv, and the measured bundles under bundles/."
        ),
    ],
    defense: Annotated[str | None, typer.Option(help="Label of one of the spec's defenses (default: none).")] = None,
    strength: Annotated[float | None, typer.Option(help="Defense strength (default: the defense's first).")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Use this seed instead of the spec's.")] = None,
    latency_images: Annotated[int, typer.Option(min=1, help="Single-image calls timed per runtime.")] = 1000,
    rounds: Annotated[
        int, typer.Option(min=1, help="Processes per runtime, taking turns with the others (load drifts hit all).")
    ] = 3,
    accuracy_images: Annotated[
        int | None, typer.Option(min=1, help="Test images for the accuracy (default: the whole test split).")
    ] = None,
    markdown: Annotated[bool, typer.Option(help="Print a markdown table (for docs) instead of a rich one.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars (when a model must be trained).")] = True,
) -> None:
    """Torch edge vs ONNX float32 edge vs ONNX int8 edge, per cut: latency at batch 1 on one thread (p50, p99),
    peak memory (each runtime in its own process), file size and accuracy with the torch cloud half."""
    from splitveil.config import load_spec
    from splitveil.perf.edge_runtimes import (
        FIGURES_FILE,
        EdgeBenchSettings,
        edge_runtime_table,
        run_edge_benchmark,
    )

    settings = EdgeBenchSettings(
        latency_images=latency_images, rounds=rounds, warmup=min(100, latency_images), accuracy_images=accuracy_images
    )
    figures = run_edge_benchmark(
        load_spec(spec, {"seed": seed}),
        cut_name,
        out,
        defense=defense,
        strength=strength,
        cache=checkpoint_cache(cache_dir),
        settings=settings,
        progress=progress,
    )
    _print_table(*edge_runtime_table(figures), markdown=markdown)
    typer.echo(f"figures in {out / FIGURES_FILE} and .csv; bundles in {out / 'bundles'}")


@bench_app.command("scaling")
def bench_scaling(
    spec: Annotated[Path, typer.Argument(help="YAML bench spec (e.g. configs/quick.yaml).")],
    runs: Annotated[
        list[str], typer.Option("--run", help="WORKERS or WORKERS:THREADS per worker, e.g. 1:1, 2:1, 1:2 (repeatable).")
    ],
) -> None:
    """Wall time of the whole spec, from a cold cache, with each number of local workers, side by side."""
    from splitveil.config import load_spec
    from splitveil.perf.scaling import time_workers

    configurations = []
    for run in runs:
        count, _, threads = run.partition(":")
        if not count.isdigit() or (threads and not threads.isdigit()):
            raise typer.BadParameter(f"--run takes WORKERS or WORKERS:THREADS, got {run!r}")
        configurations.append((int(count), int(threads) if threads else None))
    points = time_workers(load_spec(spec), configurations)
    table = Table("workers", "threads each", "wall time s", "rows", "time / first")
    for point in points:
        ratio = f"{point.seconds / points[0].seconds:.2f}"
        table.add_row(str(point.workers), str(point.threads), f"{point.seconds:.1f}", str(point.rows), ratio)
    console().print(table)


@bench_app.command("rmle-batching")
def bench_rmle_batching(
    spec: Annotated[Path, typer.Argument(help="YAML spec naming the model, data and training.")],
    cuts: Annotated[list[str], typer.Option("--cut", help="Cut(s) to time (repeatable).")],
    images: Annotated[int, typer.Option(min=1, help="Number of test images inverted.")] = 16,
    steps: Annotated[int | None, typer.Option(min=1, help="rMLE steps (default: the depth preset).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Alternating repeats; the best of each side is kept.")] = 1,
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
) -> None:
    """Time rMLE on IMAGES targets batched and one image at a time, side by side."""
    from splitveil.config import load_spec
    from splitveil.experiment import train_or_load
    from splitveil.perf.timing import time_rmle_batching
    from splitveil.split import cut

    trained = train_or_load(load_spec(spec), cache=checkpoint_cache(cache_dir), progress=False)
    targets = trained.data.test.take(images).images
    table = Table("cut", "images", "steps", "batched s/image", "one-at-a-time s/image", "speed-up")
    for cut_name in cuts:
        timing = time_rmle_batching(cut(trained.model, at=cut_name).eval(), targets, steps=steps, repeats=repeats)
        table.add_row(
            cut_name,
            str(timing.images),
            str(timing.steps),
            f"{timing.batched_per_image:.3f}",
            f"{timing.looped_per_image:.3f}",
            f"{timing.speedup:.1f}x",
        )
    console().print(table)

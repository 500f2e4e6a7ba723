"""The ``splitveil`` command line: parses options, calls the library, prints. No logic of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from splitveil import audit_commands, serve_commands
from splitveil.errors import SplitveilError

if TYPE_CHECKING:  # the CLI imports its commands' modules lazily, to start fast
    from splitveil.bench.status import RunStatus

app = typer.Typer(
    name="splitveil",
    help="Split a model, attack the split as a curious cloud would, defend it, and measure the cost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _console() -> Console:
    """Stdout console; piped output gets a wide fixed width so tables are never wrapped."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


InputShape = Annotated[str, typer.Option(help="Input shape C,H,W used for costs, e.g. 1,28,28 or 3,32,32.")]


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"1,28,28"`` -> ``(1, 28, 28)``; anything else is a clear error."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise typer.BadParameter(f"expected three positive integers C,H,W such as 1,28,28, got {text!r}")
    return shape  # type: ignore[return-value]


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    input_shape: InputShape = "1,28,28",
) -> None:
    """List zoo models, their named cuts, and per cut the feature shape, bytes and edge FLOPs."""
    from splitveil.models import list_models
    from splitveil.profile import describe_model

    shape = parse_shape(input_shape)
    catalog = [describe_model(name, input_shape=shape) for name in list_models()]
    if as_json:
        typer.echo(json.dumps(catalog, indent=2))
        return
    for entry in catalog:
        _console().print(f"[bold]{entry['name']}[/bold]  {entry['params']:,} parameters")
        _console().print(_cost_table(entry["cuts"]))  # type: ignore[arg-type]


@app.command()
def profile(
    model: Annotated[str, typer.Argument(help="Zoo model name (see `splitveil models`).")],
    input_shape: InputShape = "1,28,28",
    num_classes: Annotated[int, typer.Option(help="Number of output classes.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show the cost of every named cut of MODEL: edge/cloud FLOPs and parameters, bytes sent."""
    from splitveil.profile import describe_model

    entry = describe_model(model, input_shape=parse_shape(input_shape), num_classes=num_classes)
    if as_json:
        typer.echo(json.dumps(entry, indent=2))
    else:
        _console().print(_cost_table(entry["cuts"]))  # type: ignore[arg-type]


@app.command()
def datasets() -> None:
    """List the datasets splitveil can load (all from local files; nothing is downloaded)."""
    from splitveil.data import DATASETS

    for name in DATASETS.names():
        doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()
        typer.echo(f"{name:16s} {doc[0] if doc else ''}")


@app.command()
def train(
    spec: Annotated[Path | None, typer.Argument(help="YAML experiment spec (e.g. configs/quick.yaml).")] = None,
    model: Annotated[str | None, typer.Option(help="Zoo model name; overrides the spec.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name; overrides the spec.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs; overrides the spec.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; overrides the spec.")] = None,
    limit: Annotated[int | None, typer.Option(help="Cap every data split at this many samples.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Directory holding the dataset's files.")] = None,
    out: Annotated[Path, typer.Option(help="Directory for the checkpoint, metrics and resolved spec.")] = Path(
        "runs/train"
    ),
    cache_dir: Annotated[
        Path | None, typer.Option(help="Checkpoint cache (default $SPLITVEIL_CACHE or ~/.cache/splitveil).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train a model (or reuse the cached checkpoint of an identical config) and save it to OUT."""
    from splitveil.checkpoint import save_checkpoint
    from splitveil.config import apply_overrides, load_spec, parse_spec, write_resolved
    from splitveil.experiment import train_or_load

    overrides = {
        "model.name": model,
        "data.name": dataset,
        "train.epochs": epochs,
        "seed": seed,
        "data.limit": limit,
        "data.data_dir": data_dir,
    }
    resolved = load_spec(spec, overrides) if spec else parse_spec(apply_overrides({}, overrides), source="options")
    trained = train_or_load(resolved, cache=_cache(cache_dir), progress=progress)
    save_checkpoint(out, trained.model, trained.metadata)
    write_resolved(resolved, out)
    (out / "metrics.json").write_text(json.dumps(trained.metadata["metrics"], indent=2))
    origin = "from cache" if trained.from_cache else f"trained in {trained.metadata['metrics']['train_seconds']} s"
    typer.echo(
        f"{resolved.model.name} on {resolved.data.name}: test accuracy {trained.test_accuracy:.4f} ({origin}); saved to {out}"
    )


bench_app = typer.Typer(help="Run model x cut x attack benchmarks and build their reports.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("run")
def bench_run(
    spec: Annotated[Path, typer.Argument(help="YAML bench spec (e.g. configs/quick.yaml).")],
    out: Annotated[Path, typer.Option(help="Run directory: results.jsonl, report.html, reconstructions.")],
    cache_dir: Annotated[
        Path | None, typer.Option(help="Checkpoint cache (default $SPLITVEIL_CACHE or ~/.cache/splitveil).")
    ] = None,
    data_dir: Annotated[str | None, typer.Option(help="Directory holding the dataset's files.")] = None,
    cuts: Annotated[
        list[str] | None, typer.Option("--cut", help="Run only these cuts instead of the spec's (repeatable).")
    ] = None,
    executor: Annotated[str, typer.Option(help="Where cells run: local (a process pool) or ray.")] = "local",
    workers: Annotated[int | None, typer.Option(help="Local worker processes (default: one per core).")] = None,
    threads: Annotated[
        int | None, typer.Option(help="Torch threads per local worker (default: cores / workers).")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address HOST:PORT (default: start a local Ray).")
    ] = None,
    rerun_changed: Annotated[
        bool, typer.Option("--rerun-changed", help="Recompute cells of OUT whose settings the spec changed.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run every cell of SPEC not already done in OUT, then write OUT/results.jsonl and OUT/report.html."""
    from splitveil.bench import run_bench
    from splitveil.config import load_spec

    resolved = load_spec(spec, {"data.data_dir": data_dir, "cuts": cuts or None})
    options = {"executor": executor, "workers": workers, "threads": threads, "address": address}
    options["rerun_changed"] = rerun_changed
    rows = run_bench(resolved, out, cache=_cache(cache_dir), progress=progress, **options)
    typer.echo(f"{len(rows)} result rows in {out / 'results.jsonl'}; report: {out / 'report.html'}")


@bench_app.command("status")
def bench_status(directory: Annotated[Path, typer.Argument(help="A bench run directory.")]) -> None:
    """Progress of a run directory: cells done, failed (with their errors), started and pending."""
    from splitveil.bench.status import run_status

    status = run_status(directory)
    table = Table("cells", "total", "done", "failed", "pending")
    for kind, total in status.total.items():
        failed = sum(1 for cell_id in status.failed if cell_id.split("/")[0] == kind)
        table.add_row(kind, str(total), str(status.done[kind]), str(failed), str(total - status.done[kind] - failed))
    _console().print(table)
    if status.started:
        typer.echo(f"started and not finished in the latest run: {len(status.started)} (running, or cut off)")
    for cell_id, error in status.failed.items():
        typer.echo(f"failed {cell_id}: {error}")
    if status.pending:
        typer.echo(_work_left(status))
    if not status.pending and not status.failed:
        typer.echo(f"complete: every cell is done; report: {directory / 'report.html'}")


def _work_left(status: RunStatus) -> str:
    untimed = ", ".join(f"{count} {kind}" for kind, count in status.untimed.items())
    if status.remaining_seconds is None:
        return f"left: not estimated yet (no cell of these kinds has finished: {untimed})"
    left = f"left: about {status.remaining_seconds / 60:.1f} cell-minutes of work"
    return left + (f", plus {untimed} cell(s) of kinds not timed yet" if untimed else "")


@bench_app.command("report")
def bench_report(directory: Annotated[Path, typer.Argument(help="A bench run directory.")]) -> None:
    """Rebuild DIRECTORY/report.html from its results.jsonl and saved reconstructions."""
    from splitveil.bench import build_report

    typer.echo(f"report: {build_report(directory)}")


@bench_app.command("frontier")
def bench_frontier(
    directory: Annotated[Path, typer.Argument(help="A bench run directory.")],
    markdown: Annotated[bool, typer.Option(help="Print a markdown table (for docs) instead of a rich one.")] = False,
) -> None:
    """Print DIRECTORY's frontier: per deployed split, accuracy, every attack's SSIM, MI and costs."""
    from splitveil.bench.results import read_rows
    from splitveil.bench.tables import as_markdown, frontier_table

    rows = read_rows(directory)
    if not rows:
        raise SplitveilError(f"no results in {directory}; run `splitveil bench run SPEC --out {directory}` first")
    header, lines = frontier_table(rows)
    if markdown:
        typer.echo(as_markdown(header, lines))
        return
    table = Table(*header)
    for line in lines:
        table.add_row(*line)
    _console().print(table)


@bench_app.command("codecs")
def bench_codecs(
    spec: Annotated[Path, typer.Argument(help="YAML spec of the (cached) model.")],
    cut_name: Annotated[list[str], typer.Option("--cut", help="Cut(s) to measure.")],
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
) -> None:
    """Test accuracy and request bytes of each wire codec (float32, float16, int8) at each cut."""
    from splitveil.bench.codecs import codec_table
    from splitveil.config import load_spec
    from splitveil.experiment import train_or_load
    from splitveil.split import cut

    trained = train_or_load(load_spec(spec), cache=_cache(cache_dir), progress=False)
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
    concurrency: Annotated[list[int] | None, typer.Option(help="Concurrent clients (repeatable).")] = None,
    requests: Annotated[int, typer.Option(help="Requests per codec and concurrency.")] = 2000,
    soak: Annotated[int, typer.Option(help="Requests of the soak run.")] = 10_000,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the figures as JSON (as RUN_DIR/serving-CUT.json, the report shows them)."),
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
) -> None:
    """Serve a cut over loopback: latency, throughput and bytes per codec and concurrency, batching, soak."""
    import dataclasses
    import tempfile

    import torch

    from splitveil.bench.serving import ServeBenchSettings, benchmark_serving, serving_markdown
    from splitveil.config import load_spec
    from splitveil.serve.deployment import deployment_from_spec

    torch.set_num_threads(1)  # the servers run with one thread too: baselines and servers alike
    settings = ServeBenchSettings(requests=requests, soak_requests=soak)
    if concurrency:
        settings = dataclasses.replace(settings, concurrency=tuple(concurrency))
    with tempfile.TemporaryDirectory(prefix="splitveil-bundle-") as bundle:
        deployment = deployment_from_spec(load_spec(spec), cut_name, defense=defense, cache=_cache(cache_dir))
        deployment.export(bundle)
        images = deployment.trained.data.test.take(settings.round_trips).images
        result = benchmark_serving(bundle, images, unsplit=deployment.trained.model, settings=settings)
    result.bundle = f"{spec} at {cut_name}" + (f", {defense}" if defense else "")
    typer.echo(serving_markdown(result))
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=2))


@bench_app.command("scaling")
def bench_scaling(
    spec: Annotated[Path, typer.Argument(help="YAML bench spec (e.g. configs/quick.yaml).")],
    runs: Annotated[
        list[str], typer.Option("--run", help="WORKERS or WORKERS:THREADS per worker, e.g. 1:1, 2:1, 1:2 (repeatable).")
    ],
) -> None:
    """Wall time of the whole spec, from a cold cache, with each number of local workers, side by side."""
    from splitveil.bench.scaling import time_workers
    from splitveil.config import load_spec

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
    _console().print(table)


@bench_app.command("rmle-batching")
def bench_rmle_batching(
    spec: Annotated[Path, typer.Argument(help="YAML spec naming the model, data and training.")],
    cuts: Annotated[list[str], typer.Option("--cut", help="Cut(s) to time (repeatable).")],
    images: Annotated[int, typer.Option(help="Number of test images inverted.")] = 16,
    steps: Annotated[int | None, typer.Option(help="rMLE steps (default: the depth preset).")] = None,
    repeats: Annotated[int, typer.Option(help="Alternating repeats; the best of each side is kept.")] = 1,
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
) -> None:
    """Time rMLE on IMAGES targets batched and one image at a time, side by side."""
    from splitveil.bench.timing import time_rmle_batching
    from splitveil.config import load_spec
    from splitveil.experiment import train_or_load
    from splitveil.split import cut

    trained = train_or_load(load_spec(spec), cache=_cache(cache_dir), progress=False)
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
    _console().print(table)


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="YAML plan spec (e.g. configs/plan-fashion.yaml).")],
    out: Annotated[Path, typer.Option(help="Directory for plan.json, candidates.jsonl and the resolved spec.")],
    max_edge_flops: Annotated[int | None, typer.Option(help="Edge FLOPs per sample at most.")] = None,
    max_edge_params: Annotated[int | None, typer.Option(help="Parameters on the device at most.")] = None,
    max_storage_bytes: Annotated[int | None, typer.Option(help="Bytes of device weights (float32) at most.")] = None,
    max_ssim: Annotated[float | None, typer.Option(help="The attack's reconstruction SSIM at most.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """PrivyNet: the local topology with the best accuracy under the constraints (options override the spec)."""
    from splitveil.privynet import load_plan_spec
    from splitveil.privynet import plan as run_plan
    from splitveil.privynet.report import CANDIDATE_COLUMNS, cell, measured_candidates, write_plan

    overrides = {
        "constraints.max_edge_flops": max_edge_flops,
        "constraints.max_edge_params": max_edge_params,
        "constraints.max_storage_bytes": max_storage_bytes,
        "constraints.max_ssim": max_ssim,
    }
    resolved = load_plan_spec(spec, overrides)
    console = _console()
    measured = measured_candidates(resolved, out)
    if measured:
        console.print(f"reusing {len(measured)} candidates measured by the plan in {out} (same spec but the limits)")
    result = run_plan(
        resolved,
        cache=_cache(cache_dir),
        progress=progress,
        measured=measured,
        on_candidate=lambda c: console.print(
            f"{c.layer} x{c.channels} ({c.selection}): accuracy {cell(c.accuracy)}, SSIM {cell(c.ssim)}, "
            f"edge FLOPs {c.edge_flops:,}{'' if c.within_budget else ' (over budget)'}"
        ),
    )
    table = Table(*CANDIDATE_COLUMNS, title="PrivyNet candidates")
    for candidate in result.candidates:
        table.add_row(*(cell(getattr(candidate, column)) for column in CANDIDATE_COLUMNS))
    console.print(table)
    path = write_plan(result, resolved, out)
    if result.chosen is None:
        typer.echo(f"no topology satisfies every constraint ({'; '.join(result.notes)}); candidates: {path}")
        raise typer.Exit(1)
    chosen, verified = result.chosen, result.verification or {}
    typer.echo(
        f"chosen: {chosen.layer}, {chosen.channels} channels ({chosen.selection}): accuracy {chosen.accuracy:.4f}, "
        f"SSIM {chosen.ssim:.3f}; re-measured with a fresh attacker: accuracy {verified.get('accuracy', 0):.4f}, "
        f"SSIM {verified.get('ssim', 0):.3f}, constraints met: "
        f"{bool(verified.get('within_budget')) and bool(verified.get('meets_privacy'))}; plan: {path}"
    )


def _cache(cache_dir: Path | None):
    from splitveil.checkpoint import CheckpointCache

    return CheckpointCache.default(cache_dir)


def _cost_table(cuts: list[dict[str, object]]) -> Table:
    table = Table("cut", "feature shape", "bytes/sample", "edge FLOPs", "cloud FLOPs", "edge params", "cloud params")
    for row in cuts:
        shape = "x".join(str(d) for d in row["feature_shape"])  # type: ignore[attr-defined]
        table.add_row(
            str(row["cut"]),
            shape,
            f"{row['feature_bytes']:,}",
            f"{row['edge_flops']:,}",
            f"{row['cloud_flops']:,}",
            f"{row['edge_params']:,}",
            f"{row['cloud_params']:,}",
        )
    return table


app.command()(audit_commands.attack)
app.command()(serve_commands.export)
app.command()(serve_commands.serve)
app.command()(serve_commands.infer)


def main() -> None:
    """Entry point: user errors become one red line on stderr and exit code 2, not a traceback."""
    try:
        app()
    except SplitveilError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

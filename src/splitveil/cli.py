"""The ``splitveil`` command line: parses options, calls the library, prints. No logic of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from splitveil.errors import SplitveilError

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
    spec: Annotated[Optional[Path], typer.Argument(help="YAML experiment spec (e.g. configs/quick.yaml).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Zoo model name; overrides the spec.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset name; overrides the spec.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs; overrides the spec.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed; overrides the spec.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Cap every data split at this many samples.")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Directory holding the dataset's files.")] = None,
    out: Annotated[Path, typer.Option(help="Directory for the checkpoint, metrics and resolved spec.")] = Path("runs/train"),
    cache_dir: Annotated[Optional[Path], typer.Option(help="Checkpoint cache (default $SPLITVEIL_CACHE or ~/.cache/splitveil).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train a model (or reuse the cached checkpoint of an identical config) and save it to OUT."""
    from splitveil.checkpoint import CheckpointCache, save_checkpoint
    from splitveil.config import load_spec, parse_spec, apply_overrides, write_resolved
    from splitveil.experiment import train_or_load

    overrides = {"model.name": model, "data.name": dataset, "train.epochs": epochs, "seed": seed,
                 "data.limit": limit, "data.data_dir": data_dir}
    resolved = load_spec(spec, overrides) if spec else parse_spec(apply_overrides({}, overrides), source="options")
    cache = CheckpointCache(cache_dir / "checkpoints") if cache_dir else CheckpointCache.default()
    trained = train_or_load(resolved, cache=cache, progress=progress)
    save_checkpoint(out, trained.model, trained.metadata)
    write_resolved(resolved, out)
    (out / "metrics.json").write_text(json.dumps(trained.metadata["metrics"], indent=2))
    origin = "from cache" if trained.from_cache else f"trained in {trained.metadata['metrics']['train_seconds']} s"
    typer.echo(f"{resolved.model.name} on {resolved.data.name}: test accuracy {trained.test_accuracy:.4f} ({origin}); saved to {out}")


def _cost_table(cuts: list[dict[str, object]]) -> Table:
    table = Table("cut", "feature shape", "bytes/sample", "edge FLOPs", "cloud FLOPs", "edge params", "cloud params")
    for row in cuts:
        shape = "x".join(str(d) for d in row["feature_shape"])  # type: ignore[attr-defined]
        table.add_row(str(row["cut"]), shape, f"{row['feature_bytes']:,}", f"{row['edge_flops']:,}",
                      f"{row['cloud_flops']:,}", f"{row['edge_params']:,}", f"{row['cloud_params']:,}")
    return table


def main() -> None:
    """Entry point: user errors become one red line on stderr and exit code 2, not a traceback."""
    try:
        app()
    except SplitveilError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

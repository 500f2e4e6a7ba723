"""``splitveil models``, ``profile``, ``datasets`` and ``train``: the zoo, the cost of each cut, training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from splitveil.cli.common import checkpoint_cache, console
from splitveil.errors import ConfigError, SplitveilError

if TYPE_CHECKING:
    from splitveil.profile import CostRow, ModelDescription

InputShape = Annotated[
    str, typer.Option(help="Input shape C,H,W used for costs, e.g. 1,28,28 or 3,32,32 (at most 64,512,512).")
]
#: The zoo's models are sized for small images; a larger input builds layers of gigabytes (1,100000,100000
#: asks for terabytes), so it is refused before anything is allocated.
MAX_CHANNELS, MAX_SIDE = 64, 512


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"1,28,28"`` -> ``(1, 28, 28)``; anything else is a clear error."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise typer.BadParameter(f"expected three positive integers C,H,W such as 1,28,28, got {text!r}")
    if shape[0] > MAX_CHANNELS or max(shape[1:]) > MAX_SIDE:
        raise typer.BadParameter(
            f"input shape {text} is too large for the zoo's small-image models; "
            f"give at most {MAX_CHANNELS} channels and {MAX_SIDE}x{MAX_SIDE} pixels"
        )
    return shape


def _described(name: str, shape: tuple[int, int, int], num_classes: int = 10) -> ModelDescription:
    """``describe_model``, with a model that cannot take ``shape`` refused in one line."""
    from splitveil.profile import describe_model

    try:
        return describe_model(name, input_shape=shape, num_classes=num_classes)
    except SplitveilError:
        raise
    except (ValueError, RuntimeError) as exc:  # the model's own size check, or a layer wider than its input
        problem = " ".join(str(exc).split())
        raise ConfigError(
            f"model {name!r} cannot take inputs of shape {','.join(map(str, shape))} ({problem}); "
            "give a larger --input-shape"
        ) from None


def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    input_shape: InputShape = "1,28,28",
) -> None:
    """List zoo models, their named cuts, and per cut the feature shape, bytes and edge FLOPs."""
    from splitveil.models import list_models

    shape = parse_shape(input_shape)
    catalog = [_described(name, shape) for name in list_models()]
    if as_json:
        typer.echo(json.dumps(catalog, indent=2))
        return
    for entry in catalog:
        console().print(f"[bold]{entry['name']}[/bold]  {entry['params']:,} parameters")
        console().print(_cost_table(entry["cuts"]))


def profile(
    model: Annotated[str, typer.Argument(help="Zoo model name (see `splitveil models`).")],
    input_shape: InputShape = "1,28,28",
    num_classes: Annotated[int, typer.Option(min=1, max=100_000, help="Number of output classes.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show the cost of every named cut of MODEL: edge/cloud FLOPs and parameters, bytes sent."""
    entry = _described(model, parse_shape(input_shape), num_classes)
    if as_json:
        typer.echo(json.dumps(entry, indent=2))
    else:
        console().print(_cost_table(entry["cuts"]))


def datasets() -> None:
    """List the datasets splitveil can load (all from local files; nothing is downloaded)."""
    from splitveil.data import DATASETS

    for name in DATASETS.names():
        doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()
        typer.echo(f"{name:16s} {doc[0] if doc else ''}")


def train(
    spec: Annotated[Path | None, typer.Argument(help="YAML experiment spec (e.g. configs/quick.yaml).")] = None,
    model: Annotated[str | None, typer.Option(help="Zoo model name; overrides the spec.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name; overrides the spec.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs; overrides the spec.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; overrides the spec.")] = None,
    limit: Annotated[int | None, typer.Option(help="Cap every data split at this many samples.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Directory holding the dataset's files.")] = None,
    out: Annotated[
        Path, typer.Option(file_okay=False, help="Directory for the checkpoint, metrics and resolved spec.")
    ] = Path("runs/train"),
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
    trained = train_or_load(resolved, cache=checkpoint_cache(cache_dir), progress=progress)
    save_checkpoint(out, trained.model, trained.metadata)
    write_resolved(resolved, out)
    (out / "metrics.json").write_text(json.dumps(trained.metadata["metrics"], indent=2))
    origin = "from cache" if trained.from_cache else f"trained in {trained.metadata['metrics']['train_seconds']} s"
    typer.echo(
        f"{resolved.model.name} on {resolved.data.name}: test accuracy {trained.test_accuracy:.4f} ({origin}); saved to {out}"
    )


def _cost_table(cuts: list[CostRow]) -> Table:
    table = Table("cut", "feature shape", "bytes/sample", "edge FLOPs", "cloud FLOPs", "edge params", "cloud params")
    for row in cuts:
        shape = "x".join(str(d) for d in row["feature_shape"])
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

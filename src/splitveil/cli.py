"""The ``splitveil`` command line: parses options, calls the library, prints. No logic of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from splitveil import audit_commands, bench_commands, serve_commands
from splitveil.cli_common import checkpoint_cache, console
from splitveil.errors import ConfigError, SplitveilError

if TYPE_CHECKING:  # the CLI imports its commands' modules lazily, to start fast
    pass

app = typer.Typer(
    name="splitveil",
    help="Split a model, attack the split as a curious cloud would, defend it, and measure the cost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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
    return shape  # type: ignore[return-value]


def _described(name: str, shape: tuple[int, int, int], num_classes: int = 10) -> dict[str, object]:
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


@app.command()
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
        console().print(_cost_table(entry["cuts"]))  # type: ignore[arg-type]


@app.command()
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
        console().print(_cost_table(entry["cuts"]))  # type: ignore[arg-type]


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


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="YAML plan spec (e.g. configs/plan-fashion.yaml).")],
    out: Annotated[
        Path, typer.Option(file_okay=False, help="Directory for plan.json, candidates.jsonl and the resolved spec.")
    ],
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
    terminal = console()
    measured = measured_candidates(resolved, out)
    if measured:
        terminal.print(f"reusing {len(measured)} candidates measured by the plan in {out} (same spec but the limits)")
    result = run_plan(
        resolved,
        cache=checkpoint_cache(cache_dir),
        progress=progress,
        measured=measured,
        on_candidate=lambda c: terminal.print(
            f"{c.layer} x{c.channels} ({c.selection}): accuracy {cell(c.accuracy)}, SSIM {cell(c.ssim)}, "
            f"edge FLOPs {c.edge_flops:,}{'' if c.within_budget else ' (over budget)'}"
        ),
    )
    table = Table(*CANDIDATE_COLUMNS, title="PrivyNet candidates")
    for candidate in result.candidates:
        table.add_row(*(cell(getattr(candidate, column)) for column in CANDIDATE_COLUMNS))
    terminal.print(table)
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


app.add_typer(bench_commands.bench_app, name="bench")
app.command()(audit_commands.attack)
app.command()(serve_commands.export)
app.command()(serve_commands.serve)
app.command()(serve_commands.infer)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every refusal is one red ``error:`` line on stderr and exit code 2, never a traceback.

    Click's usage errors (a bad option value, a missing argument) are printed the same way, in place
    of its usage header and boxed message, so that people and scripts read one shape of refusal.
    """
    code = 0
    try:
        code = app(args=argv, prog_name="splitveil", standalone_mode=False)
    except _click_class("UsageError") as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(2)  # typer printed the help as it raised this; nothing was refused
        ctx = getattr(exc, "ctx", None)
        _refuse(exc.format_message() + (f" (see `{ctx.command_path} --help`)" if ctx is not None else ""))
    except _click_class("ClickException") as exc:
        _refuse(exc.format_message(), exc.exit_code)
    except typer.Abort:
        _refuse("aborted", 1)
    except SplitveilError as exc:
        _refuse(str(exc))
    except OSError as exc:
        if exc.filename is None:  # not about a path the user gave: a bug to see in full
            raise
        _refuse(f"{exc.filename}: {exc.strerror or exc}; check the path and its permissions")
    sys.exit(code if isinstance(code, int) else 0)


def _click_class(name: str) -> type[Exception]:
    """Click's exception class ``name`` as typer raises it: recent typer releases carry their own copy
    of click, so ``import click`` may name other classes. ``typer.BadParameter`` derives from both."""
    return next(base for base in typer.BadParameter.__mro__ if base.__name__ == name)


def _refuse(message: str, code: int = 2) -> None:
    # One line whatever the message holds: newlines are folded, and brackets are text, not rich markup.
    line = escape(" ".join(message.split()))
    Console(stderr=True).print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":
    main()

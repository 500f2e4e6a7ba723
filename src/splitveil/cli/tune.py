"""``splitveil tune``: the most private deployment within the budgets, re-measured and ready to serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from splitveil.cli.common import checkpoint_cache, console


def tune(
    spec: Annotated[Path, typer.Argument(help="YAML spec with a `tune` section (e.g. configs/tune-relu22.yaml).")],
    out: Annotated[
        Path,
        typer.Option(file_okay=False, help="Run directory: study.db, the trials' store and report, tune.html."),
    ],
    trials: Annotated[int | None, typer.Option(min=1, help="Trials in all (default: tune.trials).")] = None,
    max_accuracy_drop: Annotated[
        float | None, typer.Option(min=0, help="Accuracy points below the undefended model at most.")
    ] = None,
    max_edge_flops: Annotated[int | None, typer.Option(min=1, help="Edge FLOPs per image at most.")] = None,
    max_feature_bytes: Annotated[int | None, typer.Option(min=1, help="Bytes sent per image at most.")] = None,
    export: Annotated[
        Path | None,
        typer.Option(file_okay=False, help="Write the chosen deployment here as a bundle `splitveil serve` runs."),
    ] = None,
    verify: Annotated[
        bool, typer.Option(help="Re-measure the Pareto points with the full attack suite and fresh seeds.")
    ] = True,
    executor: Annotated[str, typer.Option(help="Where trials' cells run: local (a process pool) or ray.")] = "local",
    workers: Annotated[int | None, typer.Option(min=1, help="Local worker processes (default: one per core).")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Torch threads per local worker (default: 1).")] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address HOST:PORT (default: start a local Ray).")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Search SPEC's cuts, defenses and settings for the most private deployment within the budget.

    A killed run resumes from OUT: finished trials are kept, interrupted ones run again with the same
    parameters and find their finished cells.
    """
    from splitveil.cli.serve import check_directory_can_be_made
    from splitveil.tune import load_tune_spec, run_tune

    overrides = {
        "tune.trials": trials,
        "tune.budget.max_accuracy_drop": max_accuracy_drop,
        "tune.budget.max_edge_flops": max_edge_flops,
        "tune.budget.max_feature_bytes": max_feature_bytes,
    }
    resolved = load_tune_spec(spec, overrides)
    if export is not None:
        check_directory_can_be_made(export, "--export")  # before the study, which takes a while
    terminal = console()
    result = run_tune(
        resolved,
        out,
        cache=checkpoint_cache(cache_dir),
        progress=progress,
        executor=executor,
        workers=workers,
        threads=threads,
        address=address,
        export=export,
        verify=verify,
        report=terminal.print,
    )
    outcome = result.outcome
    if outcome.recommendation is None:
        typer.echo(f"{len(outcome.trials)} trials measured. {outcome.no_recommendation} Report: {result.page}")
        raise typer.Exit(1)
    typer.echo(outcome.recommendation)
    exported = f"; serving bundle: {outcome.export}" if outcome.export else ""
    typer.echo(f"report: {result.page}{exported}")

"""``splitveil plan``: PrivyNet's topology planner under privacy, compute and storage constraints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from splitveil.cli.common import checkpoint_cache, console


def plan(
    spec: Annotated[Path, typer.Argument(help="YAML plan spec (e.g. configs/plan-fashion.yaml).")],
    out: Annotated[
        Path,
        typer.Option(
            file_okay=False, help="Directory for study.db (a rerun resumes it), plan.json and candidates.jsonl."
        ),
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
    from splitveil.privynet.report import CANDIDATE_COLUMNS, cell, write_plan

    overrides = {
        "constraints.max_edge_flops": max_edge_flops,
        "constraints.max_edge_params": max_edge_params,
        "constraints.max_storage_bytes": max_storage_bytes,
        "constraints.max_ssim": max_ssim,
    }
    resolved = load_plan_spec(spec, overrides)
    terminal = console()
    result = run_plan(
        resolved,
        out=out,
        cache=checkpoint_cache(cache_dir),
        progress=progress,
        report=terminal.print,
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

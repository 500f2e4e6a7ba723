"""``splitveil bench run``: model × cuts × defenses × strengths × attacks, as cells on an executor.

The spec expands into cells (:mod:`splitveil.bench.cells`); the scheduler runs the missing ones on
a local process pool or a Ray cluster and records each in the run directory's SQLite store as it
finishes; ``results.jsonl`` and ``report.html`` are then exported from the store. Re-running the
same spec skips finished cells, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from splitveil.bench.cells import Cell, expand_cells
from splitveil.bench.executors import Executor, create_executor
from splitveil.bench.export import assemble_rows, write_results
from splitveil.bench.report import build_report
from splitveil.bench.results import RESULTS_FILE, ResultRow
from splitveil.bench.scheduler import RunSummary, check_fingerprints, run_cells
from splitveil.bench.store import STORE_FILE, ResultStore, error_headline, run_lock
from splitveil.bench.tasks import CellOutcome, CellRequest
from splitveil.checkpoint import CheckpointCache
from splitveil.config import ExperimentSpec, write_resolved
from splitveil.data import load_dataset
from splitveil.errors import ConfigError, SplitveilError
from splitveil.experiment import check_cuts

RECONSTRUCTIONS_DIR = "reconstructions"


def run_bench(
    spec: ExperimentSpec,
    out: str | Path,
    *,
    cache: CheckpointCache | None = None,
    progress: bool = True,
    executor: str = "local",
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    rerun_changed: bool = False,
) -> list[ResultRow]:
    """Run every cell of ``spec`` not yet done in ``out``; export the rows and the report."""
    out = Path(out)
    cache = cache or CheckpointCache.default()
    cells = plan_cells(spec)
    if (out / RESULTS_FILE).is_file() and not (out / STORE_FILE).is_file():
        raise ConfigError(
            f"{out} holds results of an older splitveil (results.jsonl without {STORE_FILE}); "
            "run with a new --out directory so that nothing there is overwritten"
        )
    with run_lock(out), ResultStore(out) as store:
        check_fingerprints(cells, store, out, rerun_changed=rerun_changed)  # before anything is written
        write_resolved(spec, out)
        runner = create_executor(executor, workers=workers, threads=threads, address=address)
        finished = False
        try:
            summary = run_cell_batch(
                spec,
                cells,
                out,
                store=store,
                runner=runner,
                cache=cache,
                progress=progress,
                rerun_changed=rerun_changed,
            )
            finished = True
        finally:
            runner.shutdown(wait=finished)  # on an error, stop the cells in flight instead of waiting for them
        rows = export_run(spec, cells, store, out)
    raise_if_failed(summary, out)
    return rows


def run_cell_batch(
    spec: ExperimentSpec,
    cells: list[Cell],
    out: Path,
    *,
    store: ResultStore,
    runner: Executor,
    cache: CheckpointCache,
    progress: bool = True,
    rerun_changed: bool = False,
) -> RunSummary:
    """Compute the cells of ``cells`` not yet done in ``store`` (the run directory ``out``) on ``runner``.

    The caller holds the run directory's lock and owns the executor, so several batches (the rounds
    of a tuning study) share one pool and one store.
    """
    cache_root = str(cache.root.resolve())  # workers may run in another working directory (Ray)
    check_fingerprints(cells, store, out, rerun_changed=rerun_changed)
    (out / RECONSTRUCTIONS_DIR).mkdir(parents=True, exist_ok=True)
    return run_cells(
        cells,
        store=store,
        executor=runner,
        request=lambda cell: CellRequest(spec.model_dump(mode="json"), cache_root, cell, runner.threads),
        on_outcome=lambda cell, outcome: _keep_tensors(out, cell, outcome),
        progress=progress,
    )


def export_run(spec: ExperimentSpec, cells: list[Cell], store: ResultStore, out: Path) -> list[ResultRow]:
    """Write ``results.jsonl`` (and ``report.html`` when there is a row) from what the store holds of ``cells``."""
    rows = assemble_rows(spec, cells, store.cells())
    write_results(out, rows)
    if rows:
        build_report(out)
    return rows


def plan_cells(spec: ExperimentSpec) -> list[Cell]:
    """The spec's cells (the cuts checked against the model first: a bad cut fails before any work)."""
    data = load_dataset(spec.data.name, seed=spec.seed, **spec.data.loader_options())
    if spec.cuts:
        check_cuts(spec, data, spec.cuts)
        cuts = spec.cuts
    else:
        from splitveil.experiment import build_model
        from splitveil.split import cut_aliases

        cuts = list(cut_aliases(build_model(spec, data)))
    return expand_cells(spec, cuts)


def describe_plan(spec: ExperimentSpec) -> str:
    """What ``bench run`` would compute for ``spec``: cells per kind and the cuts (resolved when omitted)."""
    cells = plan_cells(spec)  # reads the dataset, to check the cuts against the model
    kinds = Counter(cell.kind for cell in cells)
    cuts = list(dict.fromkeys(cell.cut for cell in cells if cell.cut is not None))
    counts = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
    return f"{spec.name}: {len(cells)} cells ({counts}) at {len(cuts)} cut(s): {', '.join(cuts)}; nothing was run"


def _keep_tensors(out: Path, cell: Cell, outcome: CellOutcome) -> dict:
    """Write an attack's reconstructions next to the store; the result then names the file."""
    result = dict(outcome.result)
    if outcome.tensors is not None:
        name = f"{RECONSTRUCTIONS_DIR}/{cell.id.removeprefix('attack/')}.safetensors"
        _write_atomically(out / name, outcome.tensors)
        result["reconstruction_file"] = name
    return result


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a temporary file, flush it to disk, rename it over ``path``; on failure leave nothing behind."""
    staging = path.with_name(f".{path.name}.partial")
    try:
        with staging.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        staging.replace(path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def raise_if_failed(summary: RunSummary, out: Path) -> None:
    """A run with failed cells is an error naming the first; the others stay recorded in ``out``."""
    if summary.failed:
        first_id, first_error = summary.failed[0]
        first = f"{first_id}: {error_headline(first_error)}"
        raise SplitveilError(
            f"{len(summary.failed)} cell(s) failed (first: {first}); the others are recorded in "
            f"{out}. `splitveil bench status {out}` lists the errors; re-running the spec retries the failed cells"
        )

"""Drive cells through an executor in dependency order, recording each in the store as it finishes.

Cells already done in the store are skipped. A cell is submitted once all its dependencies are
done; a failed cell records its error, its dependants are recorded as failed because of it, and
every other cell goes on. At most ``executor.slots`` cells are in flight, so "submitted" means
"running" and the progress line tells the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from splitveil.bench.cells import Cell
from splitveil.bench.executors import Executor
from splitveil.bench.store import ResultStore, StoreFullError
from splitveil.bench.tasks import CellError, CellOutcome, CellRequest
from splitveil.errors import ConfigError
from splitveil.progress import progress_bar

#: Called with each finished attack cell's outcome before it is recorded (writes its tensors).
OnOutcome = Callable[[Cell, CellOutcome], dict]


@dataclass
class RunSummary:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def check_fingerprints(cells: list[Cell], store: ResultStore, directory: Path) -> None:
    """Refuse to mix results: a recorded cell whose settings differ from the spec's is an error."""
    stored = store.cells()
    changed = [c.id for c in cells if c.id in stored and stored[c.id].fingerprint != c.fingerprint]
    if changed:
        listed = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise ConfigError(
            f"{directory} holds results of {listed} computed with other settings than this spec's; "
            "run the changed spec with a new --out directory (or delete the old one)"
        )


def run_cells(
    cells: list[Cell],
    *,
    store: ResultStore,
    executor: Executor,
    request: Callable[[Cell], CellRequest],
    on_outcome: OnOutcome,
    progress: bool = True,
) -> RunSummary:
    """Compute every cell not yet done; returns what happened."""
    stored = store.cells()
    done = {cell_id for cell_id, entry in stored.items() if entry.status == "done"}
    todo = [cell for cell in cells if cell.id not in done]
    summary = RunSummary(skipped=len(cells) - len(todo))
    run = store.start_run(executor=executor.name, workers=executor.slots, cells=len(todo))
    failed: set[str] = set()
    in_flight: dict[Future[CellOutcome], Cell] = {}
    waiting = list(todo)
    with progress_bar("cells", total=len(todo), enabled=progress) as advance:
        while waiting or in_flight:
            for cell in list(waiting):
                if len(in_flight) >= executor.slots:
                    break
                blocked = next((dep for dep in cell.deps if dep in failed), None)
                if blocked is not None:
                    waiting.remove(cell)
                    _fail(store, run, cell, f"not run: its dependency {blocked} failed", None, failed, summary)
                    advance(running=len(in_flight), failed=len(failed))
                elif all(dep in done for dep in cell.deps):
                    waiting.remove(cell)
                    store.log_started(run, cell.id, executor.name)
                    in_flight[executor.submit(request(cell))] = cell
            if not in_flight:
                if waiting:  # only cells whose dependencies are neither done nor running: a bug
                    raise RuntimeError(f"cells {[c.id for c in waiting]} wait on dependencies that never run")
                break
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                cell = in_flight.pop(future)
                try:
                    outcome = future.result()
                    result = on_outcome(cell, outcome)
                    store.record_done(
                        run, cell.id, kind=cell.kind, fingerprint=cell.fingerprint, result=result,
                        seconds=outcome.seconds, worker=outcome.worker,
                    )  # fmt: skip
                except StoreFullError:
                    raise
                except BrokenProcessPool:
                    error = "its worker process died (killed, or out of memory)"
                    _fail(store, run, cell, error, None, failed, summary)
                    raise
                except CellError as exc:  # raised in the worker: the message is its traceback
                    _fail(store, run, cell, str(exc), None, failed, summary)
                except Exception as exc:  # noqa: BLE001 - e.g. a full disk writing the cell's files: not done
                    _fail(store, run, cell, f"{type(exc).__name__}: {exc}", None, failed, summary)
                else:
                    done.add(cell.id)
                    summary.done += 1
                advance(running=len(in_flight), failed=len(failed))
    store.finish_run(run)
    return summary


def _fail(
    store: ResultStore, run: int, cell: Cell, error: str, worker: str | None, failed: set[str], summary: RunSummary
) -> None:
    store.record_failed(run, cell.id, kind=cell.kind, fingerprint=cell.fingerprint, error=error, worker=worker)
    failed.add(cell.id)
    summary.failed.append((cell.id, error))

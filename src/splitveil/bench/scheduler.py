"""Drive cells through an executor in dependency order, recording each in the store as it finishes.

Cells already done in the store are skipped. A cell is submitted once all its dependencies are
done; a failed cell records its error, its dependants are recorded as failed because of it, and
every other cell goes on. At most ``executor.slots`` cells are in flight, so "submitted" means
"running" and the progress line tells the truth.
"""

from __future__ import annotations

from collections import Counter
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

#: Called with each finished cell's outcome before it is recorded: keeps its tensors, returns its result.
OnOutcome = Callable[[Cell, CellOutcome], dict]
_MAX_WORKER_DEATHS = 3


@dataclass
class RunSummary:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def check_fingerprints(
    cells: list[Cell], store: ResultStore, directory: Path, *, rerun_changed: bool = False
) -> list[str]:
    """Refuse to mix results: a recorded cell whose settings differ from the spec's is an error, unless
    ``rerun_changed``, which forgets those cells so that they are computed again. Returns their ids."""
    done = {cell_id: entry for cell_id, entry in store.cells().items() if entry.status == "done"}
    changed = [c.id for c in cells if c.id in done and done[c.id].fingerprint != c.fingerprint]
    if changed and not rerun_changed:
        listed = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise ConfigError(
            f"{directory} holds results of {listed} computed with other settings than this spec's; "
            "recompute them with --rerun-changed, or run the changed spec with a new --out directory"
        )
    if changed:
        store.forget(changed)
    return changed


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
    run = _Run(cells, store, executor, request, on_outcome)
    with progress_bar("cells", total=len(run.waiting), enabled=progress) as advance:
        while run.waiting or run.in_flight:
            run.submit_ready(advance)
            if not run.in_flight:
                if run.waiting:  # cells whose dependencies are neither done nor running: a bug in the graph
                    raise RuntimeError(f"cells {[c.id for c in run.waiting]} wait on dependencies that never run")
                break
            finished, _ = wait(run.in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                run.collect(future)
                advance(running=len(run.in_flight), failed=len(run.failed))
            if run.pool_broken:  # every cell the dead pool held fails with it: requeue them, then a new pool
                for future in wait(run.in_flight).done:
                    run.collect(future)
                executor.restart()
                run.pool_broken = False
    store.finish_run(run.id)
    return run.summary


class _Run:
    """One run's bookkeeping: what is done, failed, waiting and in flight, and the store it writes."""

    def __init__(
        self,
        cells: list[Cell],
        store: ResultStore,
        executor: Executor,
        request: Callable[[Cell], CellRequest],
        on_outcome: OnOutcome,
    ) -> None:
        self.store, self.executor, self.request, self.on_outcome = store, executor, request, on_outcome
        self.done = {cell_id for cell_id, entry in store.cells().items() if entry.status == "done"}
        self.waiting = [cell for cell in cells if cell.id not in self.done]
        self.summary = RunSummary(skipped=len(cells) - len(self.waiting))
        self.id = store.start_run(executor=executor.name, workers=executor.slots, cells=len(self.waiting))
        self.failed: set[str] = set()
        self.in_flight: dict[Future[CellOutcome], Cell] = {}
        self.pool_broken = False
        self.worker_deaths: Counter[str] = Counter()

    def submit_ready(self, advance: Callable[..., None]) -> None:
        """Submit waiting cells whose dependencies are done, up to the executor's slots; fail the blocked."""
        for cell in list(self.waiting):
            if len(self.in_flight) >= self.executor.slots:
                return
            blocked = next((dep for dep in cell.deps if dep in self.failed), None)
            if blocked is not None:
                self.waiting.remove(cell)
                self.fail(cell, f"not run: its dependency {blocked} failed")
                advance(running=len(self.in_flight), failed=len(self.failed))
            elif all(dep in self.done for dep in cell.deps):
                self.waiting.remove(cell)
                self.store.log_started(self.id, cell.id, self.executor.name)
                self.in_flight[self.executor.submit(self.request(cell))] = cell

    def collect(self, future: Future[CellOutcome]) -> None:
        """Record a finished cell as done, or as failed with its error."""
        cell = self.in_flight.pop(future)
        try:
            outcome = future.result()
            result = self.on_outcome(cell, outcome)
            self.store.record_done(
                self.id, cell.id, kind=cell.kind, fingerprint=cell.fingerprint, result=result,
                seconds=outcome.seconds, worker=outcome.worker,
            )  # fmt: skip
        except StoreFullError:
            raise  # nothing can be recorded any more: stop, with the fix in the message
        except BrokenProcessPool:
            # A worker died (killed, out of memory) and took the pool's other cells with it; which
            # one killed it is unknown, so each goes back in the queue, up to a few times.
            self.pool_broken = True
            self.worker_deaths[cell.id] += 1
            if self.worker_deaths[cell.id] >= _MAX_WORKER_DEATHS:
                self.fail(cell, f"its worker process died {_MAX_WORKER_DEATHS} times (killed, or out of memory)")
            else:
                self.waiting.insert(0, cell)
        except CellError as exc:  # raised in the worker: the message is its traceback
            self.fail(cell, str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk writing the cell's files: not done
            self.fail(cell, f"{type(exc).__name__}: {exc}")
        else:
            self.done.add(cell.id)
            self.summary.done += 1

    def fail(self, cell: Cell, error: str) -> None:
        self.store.record_failed(
            self.id, cell.id, kind=cell.kind, fingerprint=cell.fingerprint, error=error, worker=None
        )
        self.failed.add(cell.id)
        self.summary.failed.append((cell.id, error))

"""``splitveil bench status DIR``: how far a run directory is, read from its store (safe while it runs)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from splitveil.bench.cell_results import TrainResult
from splitveil.bench.cells import TRAIN_ID, Cell, expand_cells
from splitveil.bench.store import STORE_FILE, ResultStore, StoredCell, error_headline
from splitveil.config import ExperimentSpec, load_spec
from splitveil.errors import ConfigError


@dataclass(frozen=True)
class RunStatus:
    directory: Path
    total: Counter[str]  # cells per kind
    done: Counter[str]
    failed: dict[str, str]  # cell id -> last line of its error
    started: set[str]  # started in the latest run and not finished (running, or cut off by a kill)
    remaining_seconds: float | None = field(default=None)  # of the pending cells whose kind has been timed
    #: pending cells per kind of which no cell has finished yet: their time is not in ``remaining_seconds``
    untimed: Counter[str] = field(default_factory=Counter)

    @property
    def pending(self) -> int:
        return sum(self.total.values()) - sum(self.done.values()) - len(self.failed)

    def kind_rows(self) -> list[tuple[str, int, int, int, int]]:
        """Per kind of cell: ``(kind, total, done, failed, pending)``."""
        rows = []
        for kind, total in self.total.items():
            failed = sum(1 for cell_id in self.failed if cell_id.split("/")[0] == kind)
            rows.append((kind, total, self.done[kind], failed, total - self.done[kind] - failed))
        return rows

    def work_left(self) -> str:
        """The pending work in words: cell-minutes where cells of the kind have been timed."""
        untimed = ", ".join(f"{count} {kind}" for kind, count in self.untimed.items())
        if self.remaining_seconds is None:
            return f"left: not estimated yet (no cell of these kinds has finished: {untimed})"
        left = f"left: about {self.remaining_seconds / 60:.1f} cell-minutes of work"
        return left + (f", plus {untimed} cell(s) of kinds not timed yet" if untimed else "")


def run_spec(directory: Path) -> ExperimentSpec:
    """The resolved spec of the bench run in ``directory`` (its plugins not imported); refuses another directory."""
    spec_file = directory / "spec.resolved.yaml"
    if not (directory / STORE_FILE).is_file() or not spec_file.is_file():
        raise ConfigError(
            f"{directory} is not a bench run directory (no {STORE_FILE}); start one with `splitveil bench run`"
        )
    return load_spec(spec_file, trust_plugins=False)


def run_status(directory: str | Path) -> RunStatus:
    directory = Path(directory)
    spec = run_spec(directory)
    with ResultStore(directory) as store:
        stored, started = store.cells(), store.running()
    cells = cells_of_run(spec, stored)
    remaining_seconds, untimed = _remaining(cells, stored)
    known = {cell.id for cell in cells}
    done = Counter(entry.kind for cell_id, entry in stored.items() if entry.status == "done" and cell_id in known)
    failed = {
        cell_id: error_headline(entry.error or "")
        for cell_id, entry in stored.items()
        if entry.status == "failed" and cell_id in known
    }
    return RunStatus(
        directory=directory,
        total=Counter(cell.kind for cell in cells),
        done=done,
        failed=failed,
        started=started - {cell_id for cell_id, entry in stored.items() if entry.status == "done"},
        remaining_seconds=remaining_seconds,
        untimed=untimed,
    )


def cells_of_run(spec: ExperimentSpec, stored: dict[str, StoredCell]) -> list[Cell]:
    """The cells ``spec`` gives a run directory whose store holds ``stored``. Its cuts were checked when it started, so the dataset is read only when the
    spec names no cuts and the train cell has not yet recorded the model's."""
    if spec.cuts:
        return expand_cells(spec, spec.cuts)
    train = stored.get(TRAIN_ID)
    if train is not None and train.status == "done" and train.result is not None:  # done: it has a result
        return expand_cells(spec, TrainResult.model_validate(train.result).cut_order)
    from splitveil.bench.run import plan_cells

    return plan_cells(spec)


def _remaining(cells: list[Cell], stored: dict) -> tuple[float | None, Counter[str]]:
    """Cell-seconds left (None: none timed), from the mean time of the finished cells of the same kind,
    and the untimed pending cells per kind.

    A kind none of whose cells has finished is counted as untimed rather than guessed from other
    kinds: an evaluator cell takes seconds, a deploy cell that trains a defense can take an hour.
    """
    seconds: dict[str, list[float]] = {}
    for entry in stored.values():
        if entry.status == "done" and entry.seconds is not None:
            seconds.setdefault(entry.kind, []).append(entry.seconds)
    todo = [cell for cell in cells if cell.id not in stored or stored[cell.id].status not in ("done", "failed")]
    timed = [cell for cell in todo if cell.kind in seconds]
    remaining = sum(sum(seconds[c.kind]) / len(seconds[c.kind]) for c in timed) if timed else None
    return remaining, Counter(cell.kind for cell in todo if cell.kind not in seconds)

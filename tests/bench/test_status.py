"""How much work a run has left: estimated per kind of cell, never from another kind's times."""

from collections import Counter

import pytest

from splitveil.bench.cells import Cell
from splitveil.bench.status import _remaining
from splitveil.bench.store import StoredCell


def _cell(cell_id: str, kind: str) -> Cell:
    return Cell(id=cell_id, kind=kind, fingerprint=cell_id)  # type: ignore[arg-type]


def _done(cell_id: str, kind: str, seconds: float) -> StoredCell:
    return StoredCell(cell_id, kind, cell_id, "done", {}, None, seconds, "local")


CELLS = [
    _cell("e", "evaluator"),
    _cell("a1", "attack"),
    _cell("a2", "attack"),
    _cell("a3", "attack"),
    _cell("t", "train"),
]


def test_pending_cells_are_estimated_from_finished_cells_of_their_kind():
    stored = {"e": _done("e", "evaluator", 4.0), "a1": _done("a1", "attack", 30.0), "a2": _done("a2", "attack", 50.0)}
    seconds, untimed = _remaining(CELLS, stored)
    assert seconds == pytest.approx(40.0)  # a3 at the attacks' mean; the evaluator is done
    assert untimed == Counter({"train": 1})  # no train cell finished: not guessed from the others


def test_nothing_is_estimated_before_a_cell_of_a_pending_kind_finishes():
    seconds, untimed = _remaining(CELLS, {"e": _done("e", "evaluator", 4.0)})
    assert seconds is None
    assert untimed == Counter({"attack": 3, "train": 1})


def test_failed_cells_are_not_work_left():
    failed = StoredCell("t", "train", "t", "failed", None, "boom", 1.0, "local")
    seconds, untimed = _remaining(CELLS, {"t": failed, "a1": _done("a1", "attack", 30.0)})
    assert untimed == Counter({"evaluator": 1})
    assert seconds == pytest.approx(60.0)

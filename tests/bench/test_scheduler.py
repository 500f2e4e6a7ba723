"""The scheduler on a stand-in executor: dependency order, slots, failures that stop only their dependants."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pytest

from splitveil.bench.cells import expand_cells
from splitveil.bench.scheduler import check_fingerprints, run_cells
from splitveil.bench.store import ResultStore
from splitveil.bench.tasks import CellError, CellOutcome
from splitveil.config import parse_spec
from splitveil.errors import ConfigError

SPEC = {
    "model": {"name": "he-cnn"},
    "attacks": [{"name": "rmle"}, {"name": "inverse-network"}],
    "defenses": [{"name": "nopeek", "strengths": [1.0]}],
}


class ThreadExecutor:
    """Runs a stand-in for each cell in threads, checking that dependencies finished first."""

    name = "threads"
    threads = 1

    def __init__(self, slots, fail=(), die_once=()):
        self.slots, self.fail, self.die_once = slots, set(fail), set(die_once)
        self.restarts = 0
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.finished: set[str] = set()
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def submit(self, request):
        return self.pool.submit(self._run, request.cell)

    def _run(self, cell):
        with self.lock:
            assert all(dep in self.finished for dep in cell.deps), cell.id
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.01)
        with self.lock:
            self.active -= 1
        if cell.id in self.die_once:
            self.die_once.discard(cell.id)
            raise BrokenProcessPool("a worker died")
        if cell.id in self.fail:
            raise CellError(f"Traceback ...\nRuntimeError: {cell.id} broke")
        with self.lock:
            self.finished.add(cell.id)
        return CellOutcome({"id": cell.id}, 0.01, "thread")

    def restart(self):
        self.restarts += 1

    def shutdown(self, wait=True):
        self.pool.shutdown()


def _run(tmp_path, executor, cells):
    with ResultStore(tmp_path) as store:
        summary = run_cells(
            cells, store=store, executor=executor, request=_Request, on_outcome=lambda c, o: o.result, progress=False
        )
        return summary, store.cells(), store.events()


class _Request:
    def __init__(self, cell):
        self.cell = cell


def test_every_cell_runs_once_in_dependency_order_within_the_slots(tmp_path):
    cells = expand_cells(parse_spec(SPEC), ["conv11", "relu22"])
    executor = ThreadExecutor(slots=3)
    summary, stored, events = _run(tmp_path, executor, cells)
    assert summary.done == len(cells) and not summary.failed
    assert {cell_id for cell_id, entry in stored.items() if entry.status == "done"} == {c.id for c in cells}
    assert 1 < executor.peak <= 3
    assert sorted(e["cell"] for e in events if e["event"] == "done") == sorted(c.id for c in cells)


def test_a_failed_cell_fails_its_dependants_and_nothing_else(tmp_path):
    cells = expand_cells(parse_spec(SPEC), ["conv11", "relu22"])
    broken = "deploy/relu22/nopeek/1"
    summary, stored, _ = _run(tmp_path, ThreadExecutor(slots=2, fail={broken}), cells)
    failed = {cell_id for cell_id, entry in stored.items() if entry.status == "failed"}
    dependants = {c.id for c in cells if broken in c.deps}
    assert failed == {broken} | dependants and len(dependants) == 2
    assert stored[broken].error.endswith("RuntimeError: deploy/relu22/nopeek/1 broke")
    assert all("its dependency deploy/relu22/nopeek/1 failed" in stored[c].error for c in dependants)
    assert summary.done == len(cells) - len(failed)


def test_a_rerun_computes_only_what_is_not_done(tmp_path):
    cells = expand_cells(parse_spec(SPEC), ["relu22"])
    broken = "attack/he-cnn__fashion-mnist__relu22__none__0__rmle"
    _run(tmp_path, ThreadExecutor(slots=2, fail={broken}), cells)
    again = ThreadExecutor(slots=2)
    again.finished = {c.id for c in cells if c.id != broken}  # done earlier, in the store
    summary, stored, events = _run(tmp_path, again, cells)
    assert summary.done == 1 and summary.skipped == len(cells) - 1
    assert stored[broken].status == "done"
    done_events = [e["cell"] for e in events if e["event"] == "done"]
    assert len(done_events) == len(set(done_events)) == len(cells)  # no cell done twice


def test_changed_settings_for_a_recorded_cell_are_refused(tmp_path):
    cells = expand_cells(parse_spec(SPEC), ["relu22"])
    _run(tmp_path, ThreadExecutor(slots=2), cells)
    changed = expand_cells(parse_spec({**SPEC, "attacks": [{"name": "rmle", "options": {"steps": 5}}]}), ["relu22"])
    with ResultStore(tmp_path) as store, pytest.raises(ConfigError, match="other settings.*--rerun-changed"):
        check_fingerprints(changed, store, tmp_path)
    with ResultStore(tmp_path) as store:
        forgotten = check_fingerprints(changed, store, tmp_path, rerun_changed=True)
        assert forgotten and all("rmle" in cell_id for cell_id in forgotten)
        assert not set(forgotten) & set(store.cells())  # to be computed again; the others are kept
        assert len(store.cells()) == len(cells) - len(forgotten)


def test_a_dead_worker_sends_its_cells_back_to_a_fresh_pool(tmp_path):
    cells = expand_cells(parse_spec(SPEC), ["relu22"])
    victim = "deploy/relu22/nopeek/1"
    executor = ThreadExecutor(slots=2, die_once={victim})
    summary, stored, events = _run(tmp_path, executor, cells)
    assert executor.restarts == 1 and not summary.failed
    assert stored[victim].status == "done"
    assert [e["event"] for e in events if e["cell"] == victim] == ["started", "started", "done"]

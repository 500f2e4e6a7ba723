"""The SQLite store: a finished cell is written whole or not at all, once."""

import sqlite3

import pytest

from splitveil.bench.store import ResultStore, StoreFullError
from splitveil.errors import SplitveilError


def _done(store, run, cell="attack/a", result=None):
    store.record_done(
        run, cell, kind="attack", fingerprint="f", result=result or {"ssim": 0.5}, seconds=1.0, worker="w"
    )


def test_cells_and_their_log_survive_reopening(tmp_path):
    with ResultStore(tmp_path) as store:
        run = store.start_run(executor="local", workers=2, cells=2)
        store.log_started(run, "attack/a", "local")
        _done(store, run)
        store.log_started(run, "attack/b", "local")
        store.record_failed(run, "attack/b", kind="attack", fingerprint="f", error="boom", worker=None)
    with ResultStore(tmp_path) as store:
        cells = store.cells()
        assert cells["attack/a"].status == "done" and cells["attack/a"].result == {"ssim": 0.5}
        assert cells["attack/b"].status == "failed" and cells["attack/b"].error == "boom"
        assert [e["event"] for e in store.events()] == ["started", "done", "started", "failed"]
        assert store.running() == set()


def test_a_cell_cannot_be_done_twice(tmp_path):
    with ResultStore(tmp_path) as store:
        run = store.start_run(executor="local", workers=1, cells=1)
        _done(store, run)
        with pytest.raises(SplitveilError, match="computed twice"):
            _done(store, run)
        assert [e["event"] for e in store.events()] == ["done"]


def test_a_failed_cell_can_be_done_on_a_later_run(tmp_path):
    with ResultStore(tmp_path) as store:
        first = store.start_run(executor="local", workers=1, cells=1)
        store.record_failed(first, "attack/a", kind="attack", fingerprint="f", error="boom", worker=None)
        second = store.start_run(executor="local", workers=1, cells=1)
        _done(store, second)
        assert store.cells()["attack/a"].status == "done"


def test_started_without_an_end_is_reported_as_running(tmp_path):
    with ResultStore(tmp_path) as store:
        run = store.start_run(executor="local", workers=1, cells=2)
        store.log_started(run, "attack/a", "local")
        store.log_started(run, "attack/b", "local")
        _done(store, run, "attack/b")
        assert store.running() == {"attack/a"}


def test_a_full_disk_records_nothing_and_says_so(tmp_path):
    with ResultStore(tmp_path) as store:
        run = store.start_run(executor="local", workers=1, cells=1)
        _done(store, run, "attack/small")
        store.limit_size(0)  # as small as SQLite allows: the next page it needs is refused as a full disk
        with pytest.raises(StoreFullError, match="full.*nothing was recorded.*run the same command again"):
            _done(store, run, "attack/big", result={"blob": "x" * 200_000})
    with ResultStore(tmp_path) as store:
        assert set(store.cells()) == {"attack/small"}
        assert [e["cell"] for e in store.events()] == ["attack/small"]


def test_the_database_is_plain_sqlite(tmp_path):
    with ResultStore(tmp_path) as store:
        _done(store, store.start_run(executor="local", workers=1, cells=1))
    rows = sqlite3.connect(tmp_path / "results.sqlite").execute("SELECT id, status FROM cells").fetchall()
    assert rows == [("attack/a", "done")]


def test_a_store_of_another_schema_is_refused_not_misread(tmp_path):
    db = sqlite3.connect(tmp_path / "results.sqlite")
    db.execute("CREATE TABLE cells (id TEXT)")
    db.commit()
    db.close()
    with pytest.raises(SplitveilError, match="another version of splitveil.*new --out"):
        ResultStore(tmp_path)


def test_a_failure_never_replaces_a_done_cell(tmp_path):
    with ResultStore(tmp_path) as store:
        run = store.start_run(executor="local", workers=1, cells=1)
        _done(store, run)
        store.record_failed(run, "attack/a", kind="attack", fingerprint="f", error="late duplicate", worker=None)
        assert store.cells()["attack/a"].status == "done"


def test_one_driver_per_run_directory(tmp_path):
    from splitveil.bench.store import run_lock

    with run_lock(tmp_path):
        with pytest.raises(SplitveilError, match=r"in use by another `splitveil bench run` \(pid \d+"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released: the next run may start
        pass

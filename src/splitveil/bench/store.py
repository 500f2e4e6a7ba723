"""The results store: an embedded SQLite database in the run directory, one row per finished cell.

Each finished cell is written in one transaction together with its "done" event, so a run killed
at any instant leaves every cell either recorded with its whole result or not recorded at all.
Only the driver writes (workers return their results to it): it logs "started" when it hands a
cell to the executor, so the log (``events``) shows what ran, on which executor and worker, and how
often, which is how a resumed run is checked for cells computed twice. :func:`run_lock` keeps a
second driver out of a directory in use.

A failed cell is recorded as failed with its error; it does not count as done, so the next run of
the same spec tries it again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitveil.errors import SplitveilError

STORE_FILE = "results.sqlite"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    result TEXT,
    error TEXT,
    seconds REAL,
    worker TEXT,
    finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL,
    cell TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('started', 'done', 'failed')),
    worker TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    finished_at REAL,
    executor TEXT NOT NULL,
    workers INTEGER,
    cells INTEGER NOT NULL,
    versions TEXT
);
"""


class StoreFullError(SplitveilError):
    """The disk (or the database's size limit) is full: the write was rolled back."""


@dataclass(frozen=True)
class StoredCell:
    id: str
    kind: str
    fingerprint: str
    status: str
    result: dict[str, Any] | None
    error: str | None
    seconds: float | None
    worker: str | None


@contextmanager
def readable_store(directory: Path) -> Iterator[None]:
    """A results store SQLite cannot read is refused by name, with the fix, instead of sqlite3's traceback."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        store = directory / STORE_FILE
        raise SplitveilError(
            f"cannot read the results store {store} ({exc}); if it is damaged, recover it with "
            f"`sqlite3 {store} .recover`, or run the spec again with a new --out"
        ) from None


class ResultStore:
    """The store of one run directory. Cheap to open: workers open their own connection per cell."""

    def __init__(self, directory: str | Path, *, timeout: float = 60.0) -> None:
        self.path = Path(directory) / STORE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers (status, workers) never block the writer
        self._db.execute("PRAGMA synchronous=FULL")  # a committed cell survives a power cut too
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = self._db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        if tables and version != SCHEMA_VERSION:
            self._db.close()
            raise SplitveilError(
                f"{self.path} was written by another version of splitveil (store schema {version}, this one reads "
                f"{SCHEMA_VERSION}); run with a new --out directory"
            )
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- writing -----------------------------------------------------------------------------

    def start_run(self, *, executor: str, workers: int | None, cells: int) -> int:
        from splitveil.checkpoint import environment_versions

        with self._write():
            cursor = self._db.execute(
                "INSERT INTO runs (started_at, executor, workers, cells, versions) VALUES (?, ?, ?, ?, ?)",
                (time.time(), executor, workers, cells, json.dumps(environment_versions())),
            )
        run = cursor.lastrowid
        assert run is not None  # an INSERT always sets it
        return int(run)

    def finish_run(self, run: int) -> None:
        with self._write():
            self._db.execute("UPDATE runs SET finished_at = ? WHERE id = ?", (time.time(), run))

    def log_started(self, run: int, cell: str, worker: str) -> None:
        with self._write():
            self._db.execute(
                "INSERT INTO events (run, cell, event, worker, at) VALUES (?, ?, 'started', ?, ?)",
                (run, cell, worker, time.time()),
            )

    def record_done(
        self,
        run: int,
        cell_id: str,
        *,
        kind: str,
        fingerprint: str,
        result: dict[str, Any],
        seconds: float,
        worker: str,
    ) -> None:
        """Record a finished cell and its "done" event in one transaction (a cell is done at most once)."""
        payload = json.dumps(result)
        with self._write():
            existing = self._db.execute("SELECT status FROM cells WHERE id = ?", (cell_id,)).fetchone()
            if existing is not None and existing[0] == "done":
                raise SplitveilError(f"cell {cell_id} is already done in {self.path}; it was computed twice")
            self._db.execute(
                "INSERT OR REPLACE INTO cells (id, kind, fingerprint, status, result, error, seconds, worker, "
                "finished_at) VALUES (?, ?, ?, 'done', ?, NULL, ?, ?, ?)",
                (cell_id, kind, fingerprint, payload, seconds, worker, time.time()),
            )
            self._event(run, cell_id, "done", worker)

    def record_failed(
        self, run: int, cell_id: str, *, kind: str, fingerprint: str, error: str, worker: str | None
    ) -> None:
        with self._write():
            # A failure never replaces a done cell (it would throw a finished result away).
            self._db.execute(
                "INSERT INTO cells (id, kind, fingerprint, status, result, error, seconds, worker, finished_at) "
                "VALUES (?, ?, ?, 'failed', NULL, ?, NULL, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "fingerprint = excluded.fingerprint, status = 'failed', error = excluded.error, "
                "worker = excluded.worker, finished_at = excluded.finished_at WHERE cells.status <> 'done'",
                (cell_id, kind, fingerprint, error, worker, time.time()),
            )
            self._event(run, cell_id, "failed", worker)

    def forget(self, cell_ids: list[str]) -> None:
        """Drop recorded cells (their settings changed) so that the next run computes them again;
        the event log keeps their history."""
        with self._write():
            self._db.executemany("DELETE FROM cells WHERE id = ?", [(cell_id,) for cell_id in cell_ids])

    def _event(self, run: int, cell_id: str, event: str, worker: str | None) -> None:
        self._db.execute(
            "INSERT INTO events (run, cell, event, worker, at) VALUES (?, ?, ?, ?, ?)",
            (run, cell_id, event, worker, time.time()),
        )

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One immediate transaction; a full disk rolls it back and says so."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if self._db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if "full" in str(exc):
                raise StoreFullError(
                    f"the disk holding {self.path} is full ({exc}); nothing was recorded for this write. "
                    "Free some space and run the same command again: finished cells are kept"
                ) from None
            raise

    # -- reading -----------------------------------------------------------------------------

    def cells(self) -> dict[str, StoredCell]:
        rows = self._db.execute(
            "SELECT id, kind, fingerprint, status, result, error, seconds, worker FROM cells"
        ).fetchall()
        return {
            row[0]: StoredCell(
                id=row[0],
                kind=row[1],
                fingerprint=row[2],
                status=row[3],
                result=None if row[4] is None else json.loads(row[4]),
                error=row[5],
                seconds=row[6],
                worker=row[7],
            )
            for row in rows
        }

    def events(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT seq, run, cell, event, worker, at FROM events ORDER BY seq").fetchall()
        return [dict(zip(("seq", "run", "cell", "event", "worker", "at"), row, strict=True)) for row in rows]

    def runs(self) -> list[dict[str, Any]]:
        """Every run of this directory: when, where, how many cells it set out to compute, the versions."""
        names = ("id", "started_at", "finished_at", "executor", "workers", "cells", "versions")
        rows = self._db.execute(f"SELECT {', '.join(names)} FROM runs ORDER BY id").fetchall()
        runs = [dict(zip(names, row, strict=True)) for row in rows]
        for run in runs:
            run["versions"] = json.loads(run["versions"]) if run["versions"] else {}
        return runs

    def running(self) -> set[str]:
        """Cells whose latest event, in the latest run, is "started"."""
        latest = self._db.execute("SELECT MAX(id) FROM runs").fetchone()[0]
        if latest is None:
            return set()
        rows = self._db.execute("SELECT cell, event FROM events WHERE run = ? ORDER BY seq", (latest,)).fetchall()
        state: dict[str, str] = {}
        for cell, event in rows:
            state[cell] = event
        return {cell for cell, event in state.items() if event == "started"}

    def limit_size(self, max_bytes: int) -> None:
        """Cap the database at about ``max_bytes`` (SQLite then fails writes as a full disk would)."""
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        self._db.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def error_headline(error: str) -> str:
    """The line of a recorded error that says what went wrong (a traceback's last line)."""
    lines = error.strip().splitlines()
    return lines[-1] if lines else ""


@contextmanager
def run_lock(directory: str | Path) -> Iterator[None]:
    """Hold the run directory for one driver; a second one is refused at once, with the reason."""
    import fcntl

    path = Path(directory) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SplitveilError(
                f"{directory} is in use by another `splitveil bench run` ({holder}); wait for it to finish "
                f"(`splitveil bench status {directory}`) or stop it, then run again"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def worker_name() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"

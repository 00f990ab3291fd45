"""Driving ``paretoml`` in real subprocesses: run it, watch its SQLite file, SIGKILL it.

Shared by the CLI tests that kill a study mid-run (tests/service/test_cli.py and
test_cli_pruning.py).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path

#: (trial number, state name, intermediate values reported)
TrialRow = tuple[int, str, int]


def paretoml(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paretoml.service.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def trial_states(db: Path, study: str) -> list[TrialRow] | None:
    """(number, state, intermediate values reported) of a study's trials, read through a
    read-only SQLite connection; None while the schema or the study is not written yet.

    Not through Optuna: even with ``skip_table_creation`` its RDBStorage writes the schema's
    version rows when they are missing, racing the child that is creating the schema
    ("UNIQUE constraint failed: alembic_version.version_num" in the child, under load)."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)) as connection:
            return connection.execute(
                "SELECT t.number, t.state, (SELECT COUNT(*) FROM trial_intermediate_values v "
                "WHERE v.trial_id = t.trial_id) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "WHERE s.study_name = ?", (study,)).fetchall()
    except sqlite3.Error:
        return None


def run_and_kill_when(args: Sequence[str], cwd: Path, db: Path, study: str,
                      ready: Callable[[list[TrialRow]], bool], deadline_s: float = 240) -> list[TrialRow]:
    """Start ``paretoml ARGS``, poll its trials every 50 ms and SIGKILL it as soon as
    ``ready(rows)``; return the rows it was killed on. Fails (AssertionError with the
    child's stderr) if it was not killed by SIGKILL, e.g. it finished or crashed first."""
    proc = subprocess.Popen([sys.executable, "-m", "paretoml.service.cli", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed_on: list[TrialRow] = []
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if not db.exists():
                continue
            rows = trial_states(db, study)
            if rows is not None and ready(rows):
                os.kill(proc.pid, signal.SIGKILL)
                killed_on = rows
                break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return killed_on

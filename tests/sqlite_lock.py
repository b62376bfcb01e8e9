"""Another process that holds a SQLite database's write lock until told to let go (the
SQLite profile's contention tests: tests/featurestore, tests/serving)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# holds the write lock of the database at argv[1] until a line arrives on stdin
HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print(conn.execute("PRAGMA journal_mode").fetchone()[0], flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


class LockHolder:
    """Another process that holds ``db``'s write lock from ``__enter__`` to ``__exit__``."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> LockHolder:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(self.db)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.journal = self.proc.stdout.readline().strip()  # printed once it holds the lock
        assert self.journal == "wal", self.journal
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("release\n")
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0

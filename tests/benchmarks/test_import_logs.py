"""benchmarks/import_logs.py at a toy size: the generated log imports, and both sides count
the same rows."""

from __future__ import annotations

from pathlib import Path

from import_logs import run_ours, run_pyarrow, write_log

from moon_rec.data.io import read_table


def test_generated_log_imports(tmp_path: Path) -> None:
    csv = write_log(tmp_path / "log.csv", 3_000, n_users=200, n_items=50)
    base = run_pyarrow(str(csv))
    ours = run_ours(str(csv), str(tmp_path / "w"), 2)
    assert base["rows"] == ours["rows"] == 3_000
    assert ours["n_impressions"] == read_table(tmp_path / "w", "impressions").num_rows > 3_000

"""The main job on the tiny world: every step runs, the report's numbers are the JSON
outputs' numbers, and a second run reuses every artefact (the runner itself:
tests/loop)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.demo import main


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    art = tmp_path / "art"
    assert main(["--preset", "tiny", "--artifacts", str(art)]) == 0
    report = (art / "report.md").read_text()
    recall = json.loads((art / "recall.json").read_text())
    compare = json.loads((art / "rankers" / "compare.json").read_text())
    serving = json.loads((art / "serving.json").read_text())
    # the report shows the JSON outputs' numbers
    assert f"{recall['recall@10']:.3f}" in report
    assert f"{recall['by_dim']['64']['recall@10']:.3f}" in report
    for row in compare["rows"].values():
        assert f"{row['auc']:.4f}" in report
    # every content ranker also ran on the world's perfect look vectors: its content share
    assert "cube_moon_tiny@style" in compare["rows"]
    for name, row in compare["rows"].items():
        if f"{name}@style" in compare["rows"]:
            assert f"{row['content_share']:.2f}" in report
    assert f"{serving['latency_ms']['p99']:.2f}" in report
    assert serving["new_item"]["rank"] >= 1
    for png in ("report/recall.png", "report/rankers.png", "contact_sheet.png"):
        assert (art / png).stat().st_size > 1000
    capsys.readouterr()
    # a second run reuses every artefact
    assert main(["--preset", "tiny", "--artifacts", str(art)]) == 0
    out = capsys.readouterr().out
    state = json.loads((art / "demo_state.json").read_text())
    assert all(rec["skipped"] for rec in state.values()), out
    assert out.count("up to date") == len(state)

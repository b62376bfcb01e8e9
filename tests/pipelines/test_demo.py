"""The main job on the tiny world: every step runs, the report's numbers are the JSON
outputs' numbers, and a second run reuses every artefact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.demo import Step, StepFailed, main, run_steps


def test_run_steps_skips_resumes_and_reruns_downstream(tmp_path: Path) -> None:
    calls: list[str] = []

    def make(name: str, out: Path, fail: list[bool] | None = None) -> Step:
        def run() -> None:
            calls.append(name)
            if fail and fail[0]:
                fail[0] = False
                raise KeyboardInterrupt  # a kill half way
            out.write_text(name)

        return Step(name, out, run, {"p": 1})

    fail = [True]
    a = make("a", tmp_path / "a")
    b = Step(
        "b",
        tmp_path / "b",
        make("b", tmp_path / "b", fail).run,
        {"p": 1},
        ("a",),
        clean=(tmp_path / "b-partial",),
    )
    state = tmp_path / "state.json"
    (tmp_path / "b-partial").write_text("x")
    with pytest.raises(KeyboardInterrupt):
        run_steps([a, b], state)
    assert not (tmp_path / "b-partial").exists()  # a fresh start cleans
    (tmp_path / "b-partial").write_text("x")
    run_steps([a, b], state)  # a is up to date; b resumes: nothing cleaned
    assert calls == ["a", "b", "b"] and (tmp_path / "b-partial").exists()
    run_steps([a, b], state)
    assert calls == ["a", "b", "b"]
    a2 = Step("a", a.output, a.run, {"p": 2})  # a's parameters change: a and b re-run
    run_steps([a2, b], state)
    assert calls == ["a", "b", "b", "a", "b"]
    rec = json.loads(state.read_text())
    assert list(rec) == ["a", "b"] and rec["b"]["seconds"] >= 0


def test_failed_command_names_the_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.demo import moon

    with pytest.raises(StepFailed, match="moon world validate"):
        moon(["world", "validate", str(tmp_path / "nowhere")])


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

"""The loop's runner: skipping, resuming, re-running downstream, and keys that cover the
code a step runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from moon_rec.loop import (
    Layout,
    Step,
    _import_graph,
    code_digest,
    code_modules,
    main_steps,
    ranker_experiments,
    run_steps,
    step_key,
)


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
    with pytest.raises(ValueError, match="no such step"):
        run_steps([a2, b], state, force=["c"])


def _toy_package(root: Path) -> None:
    pkg = root / "toy_loop_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "job.py").write_text("from toy_loop_pkg import core\n\ndef run():\n    return core.f()\n")
    (pkg / "core.py").write_text("def f():\n    return 1\n")
    (pkg / "other.py").write_text("def g():\n    return 2\n")


def test_a_code_change_reruns_exactly_the_steps_that_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _toy_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    packages = ("toy_loop_pkg",)
    _import_graph.cache_clear()
    assert code_modules(["toy_loop_pkg.job"], packages) == ["toy_loop_pkg.core",
                                                             "toy_loop_pkg.job"]
    job0 = code_digest(["toy_loop_pkg.job"], packages)
    other0 = code_digest(["toy_loop_pkg.other"], packages)
    # an edit of a module the job imports changes the job's key, not the other's
    (tmp_path / "toy_loop_pkg" / "core.py").write_text("def f():\n    return 3\n")
    assert code_digest(["toy_loop_pkg.job"], packages) != job0
    assert code_digest(["toy_loop_pkg.other"], packages) == other0
    _import_graph.cache_clear()
    sys.modules.pop("toy_loop_pkg", None)


def test_project_step_keys_cover_their_code_only() -> None:
    closure = code_modules(["moon_rec.featurestore.feature_tables"])
    assert "moon_rec.featurestore.tables" in closure
    assert not any(m.startswith(("moon_rec.ranking", "moon_rec.training")) for m in closure)
    a = Step("s", Path("/nonexistent"), lambda: None, code=("moon_rec.featurestore.feature_tables",))
    b = Step("s", Path("/nonexistent"), lambda: None, code=("moon_rec.ranking.compare",))
    assert step_key(a, {}) != step_key(b, {})


def test_main_steps_name_their_commands(tmp_path: Path) -> None:
    steps = main_steps(Layout.at(tmp_path), "tiny", 0, ranker_experiments("tiny"))
    names = [s.name for s in steps]
    assert len(names) == len(set(names))
    for s in steps:
        assert s.command.startswith("moon "), s.name
        assert set(s.deps) <= set(names[: names.index(s.name)]), s.name
        assert s.code, s.name


def test_imported_main_steps_name_their_commands(tmp_path: Path) -> None:
    """The MovieLens loop: import instead of generate, a text-tower post-training encoder
    step, then the same steps; rankers without oracle world and without query vectors."""
    from moon_rec.loop import IMPORT_WORLD, POSTTRAIN_ENCODER, RANKERS, imported_main_steps

    steps = imported_main_steps(Layout.at(tmp_path / "art"), "movielens", tmp_path / "ml",
                                tmp_path / "tower", ranker_experiments("movielens"))
    names = [s.name for s in steps]
    assert names[0] == IMPORT_WORLD and POSTTRAIN_ENCODER in names
    assert len(names) == len(set(names))
    for s in steps:
        assert s.command.startswith("moon "), s.name
        assert set(s.deps) <= set(names[: names.index(s.name)]), s.name
        assert s.code, s.name
    by = {s.name: s for s in steps}
    assert "--text-tower" in by[POSTTRAIN_ENCODER].command
    assert "pretrain" not in by[POSTTRAIN_ENCODER].command
    assert "--world" not in by[RANKERS].command and "--query-" not in by[RANKERS].command
    with pytest.raises(ValueError, match="unknown import source"):
        imported_main_steps(Layout.at(tmp_path), "netflix", tmp_path, tmp_path, ["a", "b"])


def test_encoder_step_snapshots_change_only_their_own_key(tmp_path: Path) -> None:
    from moon_rec.loop import encoder_step, snapshot_dir

    layout = Layout.at(tmp_path)
    plain = encoder_step(layout, "tiny", threads=1)
    assert set(plain.params) == {"recipe", "threads"}  # the demo's key is what it was
    kept = encoder_step(layout, "tiny", threads=1, overrides=["stage1.steps=12"],
                        snapshots={"stage1": [6, 3, 3], "stage2": []})
    assert kept.params["snapshots"] == {"stage1": [3, 6]}
    assert kept.params["overrides"] == ["stage1.steps=12"]
    assert step_key(plain, {"generate world": "k"}) != step_key(kept, {"generate world": "k"})
    assert "--set stage1.steps=12" in kept.command
    assert snapshot_dir(layout.encoder / "stage1", 3).name == "step-000003"
    with pytest.raises(ValueError, match="unknown stages"):
        encoder_step(layout, "tiny", snapshots={"stage3": [1]})

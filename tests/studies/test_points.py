"""Resumable sweeps: finished points are not recomputed; a changed config is."""

from __future__ import annotations

from pathlib import Path

from moon_rec.studies.points import Point, PointStore, run_sweep


def test_sweep_resumes_and_records_config_and_seed(tmp_path: Path) -> None:
    calls: list[str] = []

    def make(name: str, cfg: dict[str, object]) -> Point:
        def run() -> dict[str, object]:
            calls.append(name)
            return {"value": len(calls)}

        return Point("demo", name, cfg, run, seed=7)

    store = PointStore(tmp_path)
    pts = [make("a", {"k": 1}), make("b/c", {"k": (1, 2)}), make("a", {"k": 1})]
    recs = run_sweep(store, pts, progress=False)
    assert calls == ["a", "b/c"]  # the duplicate ran once
    rec = store.get("demo", "b/c", {"k": [1, 2]})
    assert rec is not None and rec["seed"] == 7 and rec["config"] == {"k": [1, 2]}
    assert recs[("demo", "a")]["result"] == {"value": 1}
    assert store.path("demo", "b/c").name == "b--c.json"
    run_sweep(store, pts, progress=False)
    assert calls == ["a", "b/c"]  # nothing recomputed
    run_sweep(store, [make("a", {"k": 2})], progress=False)
    assert calls == ["a", "b/c", "a"]  # config changed: recomputed
    assert not list(tmp_path.rglob("*.tmp"))
    assert [r["name"] for r in store.all("demo")] == ["a", "b/c"]

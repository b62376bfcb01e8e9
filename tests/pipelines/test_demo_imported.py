"""The demo on any imported world (``make demo WORLD_DIR=W``): logs with string ids,
imported by ``moon data import logs``, run through every step as MovieLens is; what needs
ground truth reads n/a in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from movielens_data import save_tiny_bert, write_grouplens_fixture
from test_demo_movielens import ENCODER, RANKERS

from moon_rec.cli import main as moon
from moon_rec.data.movielens import GENRES
from moon_rec.loop import run_steps
from pipelines.demo import build_steps, main


def _logs_world(tmp: Path) -> Path:
    """The GroupLens fixture as a shop's logs: string ids, a CSV catalog, ratings."""
    gl = write_grouplens_fixture(tmp / "ml-100k")
    rows = [line.split("\t") for line in (gl / "u.data").read_text().splitlines()]
    (tmp / "ratings.csv").write_text("customer,sku,stars,at\n" + "".join(
        f"c-{u},sku-{m},{r},{t}\n" for u, m, r, t in rows))
    items = [line.split("|") for line in (gl / "u.item").read_bytes().decode("latin-1")
             .splitlines()]
    (tmp / "catalog.csv").write_text("sku,name,genre\n" + "".join(
        f'sku-{r[0]},"{r[1]}",{next(g for g, f in zip(GENRES, r[5:], strict=True) if f == "1")}\n'
        for r in items))
    (tmp / "logs.yaml").write_text(yaml.safe_dump({
        "time": {"format": "unix_s"},
        "items": {"path": "catalog.csv", "columns": {"item_id": "sku", "title": "name",
                                                       "category": "genre"}},
        "interactions": {"path": "ratings.csv", "label_threshold": 4,
                         "columns": {"user_id": "customer", "item_id": "sku", "ts": "at",
                                     "label": "stars"}},
        "source": "shop-logs",
    }))
    world = tmp / "imported"
    assert moon(["data", "import", "logs", "--mapping", str(tmp / "logs.yaml"),
                 "--out", str(world)]) == 0
    return world


def test_demo_world_dir_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--world-dir", str(tmp_path / "w"), "--artifacts", str(tmp_path / "art"),
            "--text-tower", str(tmp_path / "tower")]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"moon world copy {(tmp_path / 'w').resolve()} --out" in out
    assert "moon data import movielens" not in out and "--text-tower" in out
    assert main(args) == 2
    assert "scripts/fetch_minilm.sh" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_on_an_imported_world_end_to_end(tmp_path: Path) -> None:
    world_dir = _logs_world(tmp_path)
    tower = save_tiny_bert(tmp_path / "tower")
    art = tmp_path / "art"
    steps = build_steps("movielens", 0, art, world_dir=world_dir, text_tower=tower,
                        experiments=RANKERS, encoder_overrides=ENCODER)
    run_steps(steps, art / "demo_state.json", label="demo")
    world = json.loads((art / "world" / "world.json").read_text())
    assert world["source"] == "shop-logs" and world["oracle_auc_test"] is None
    assert (art / "world" / "id_maps" / "user.parquet").is_file()
    compare = json.loads((art / "rankers" / "compare.json").read_text())
    for row in compare["rows"].values():
        assert row["oracle_auc"] is None and 0 < row["auc"] < 1
    report = (art / "report.md").read_text()
    assert "imported world `shop-logs`" in report and "Oracle AUC: n/a" in report


@pytest.mark.slow
def test_demo_on_the_hm_layout_with_photos(tmp_path: Path) -> None:
    """The H&M fixture with photos through every step of the demo (every article with a
    photo: the encoder's training data takes a catalog all with photos or text-only)."""
    from hm_data import write_hm

    world_dir = tmp_path / "hm-world"
    assert moon(["data", "import", "hm", "--path", str(write_hm(tmp_path / "hm", scale=10, photo_missing=False)),
                 "--out", str(world_dir)]) == 0
    tower = save_tiny_bert(tmp_path / "tower")
    art = tmp_path / "art"
    steps = build_steps("movielens", 0, art, world_dir=world_dir, text_tower=tower,
                        experiments=RANKERS, encoder_overrides=ENCODER)
    run_steps(steps, art / "demo_state.json", label="demo")
    world = json.loads((art / "world" / "world.json").read_text())
    assert world["source"] == "hm" and not world["text_only"]
    compare = json.loads((art / "rankers" / "compare.json").read_text())
    for row in compare["rows"].values():
        assert row["oracle_auc"] is None and 0 < row["auc"] < 1
    report = (art / "report.md").read_text()
    assert "imported world `hm`" in report and "Oracle AUC: n/a" in report
    assert "No image queries" in report  # photos, but no user photos to search with

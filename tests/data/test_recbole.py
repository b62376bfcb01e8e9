"""`moon data import recbole`: hand-written RecBole atomic files (the `field:type` format)
become a valid world through the logs path; on the same ratings it gives MovieLens's world
(impressions, behaviours, users, split, cold items); bad headers are named."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
from movielens_data import write_grouplens_fixture

from moon_rec.cli import main
from moon_rec.data.id_map import IdMap
from moon_rec.data.io import read_table, read_world_meta
from moon_rec.data.movielens import GENRES
from moon_rec.data.validation import validate_world

INTER = """user_id:token\titem_id:token\trating:float\ttimestamp:float
alice\tm-1\t5\t880000000
alice\tm-2\t2\t880003600
bob\tm-1\t4\t880007200
bob\tm-3\t3\t880010800
carol\tm-2\t5\t880014400
carol\tm-4\t1\t880018000
alice\tm-3\t4\t880021600
bob\tm-4\t5\t880025200
carol\tm-5\t4\t880028800
dave\tm-5\t2\t880032400
"""
ITEM = """item_id:token\tmovie_title:token_seq\trelease_year:token\tscore:float\tclass:token_seq
m-1\tToy Story\t1995\t8.3\tAnimation Comedy
m-2\tHeat\t1995\t8.2\tCrime Thriller
m-3\t"Casablanca"\t1942\t8.5\tDrama Romance
m-4\tAlien\t1979\t8.4\tHorror Sci-Fi
m-5\tBabe\t1995\t6.8\tComedy
m-6\tNever Rated\t1999\t\tDrama
"""
USER = """user_id:token\tage:token\tgender:token
alice\t24\tF
bob\t53\tM
carol\t23\tF
dave\t33\tM
"""


def _atomic(folder: Path, name: str = "toy", **over: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"inter": INTER, "item": ITEM, "user": USER, **over}
    for ext, text in files.items():
        if text:
            (folder / f"{name}.{ext}").write_text(text)
    return folder


def _import(path: Path, out: Path, *extra: str, dataset: str = "toy") -> int:
    return main(["data", "import", "recbole", "--path", str(path), "--dataset", dataset,
                 "--out", str(out), *extra])


def test_atomic_files_become_a_world(tmp_path: Path) -> None:
    out = tmp_path / "w"
    assert _import(_atomic(tmp_path / "toy"), out) == 0
    validate_world(out)
    imps = read_table(out, "impressions")
    assert imps.num_rows == 10
    assert sum(imps.column("clicked").to_pylist()) == 6  # ratings >= 4
    assert read_table(out, "behaviors").num_rows == 6
    items = read_table(out, "items")
    row = items.to_pylist()[IdMap.load(out, "item").get("m-3") or 0]
    assert row["title"] == '"Casablanca"'  # token_seq text, no quoting in atomic files
    assert row["attributes"] == "release_year: 1942; score: 8.5; class: Drama Romance"
    assert items.schema.field("score").type == pa.float64()
    assert items.schema.field("release_year").type == pa.string()
    cats = read_table(out, "categories")
    assert set(cats.column("name").to_pylist()) == {"Animation", "Crime", "Drama", "Horror",
                                                    "Comedy"}
    users = read_table(out, "users")
    assert users.column("gender").to_pylist() == ["F", "M", "F", "M"]
    assert read_world_meta(out)["source"] == "recbole:toy"


def test_implicit_ratings_with_negatives(tmp_path: Path) -> None:
    out = tmp_path / "w"
    assert _import(_atomic(tmp_path / "toy"), out, "--implicit", "--negatives", "1") == 0
    beh = read_table(out, "behaviors")
    assert beh.num_rows == 10
    imps = read_table(out, "impressions")
    assert sum(imps.column("clicked").to_pylist()) == 10
    assert imps.num_rows > 10


def test_same_ratings_give_movielens_world(tmp_path: Path) -> None:
    """The GroupLens files and their RecBole atomic form agree row for row (ids kept)."""
    gl = write_grouplens_fixture(tmp_path / "ml-100k")
    rb = tmp_path / "rb"
    rb.mkdir()
    data = [line.split("\t") for line in (gl / "u.data").read_text().splitlines()]
    (rb / "ml.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                 + "".join("\t".join(r) + "\n" for r in data))
    items = [line.split("|") for line in (gl / "u.item").read_bytes().decode("latin-1")
             .splitlines()]
    (rb / "ml.item").write_text(
        "item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
        + "".join(f"{r[0]}\t{r[1]}\t{' '.join(g for g, f in zip(GENRES, r[5:], strict=True) if f == '1')}\n"
                  for r in items))
    users = [line.split("|") for line in (gl / "u.user").read_text().splitlines()]
    (rb / "ml.user").write_text("user_id:token\tage:token\n"
                                + "".join(f"{r[0]}\t{r[1]}\n" for r in users))
    assert main(["data", "import", "movielens", "--path", str(gl), "--out", str(tmp_path / "a")]) == 0
    assert _import(rb, tmp_path / "b", "--ids", "keep", dataset="ml") == 0
    a, b = read_world_meta(tmp_path / "a"), read_world_meta(tmp_path / "b")
    for key in ("train_end_ts", "n_users", "n_impressions", "n_impressions_test", "n_behaviors",
                "n_cold_items_test", "n_impressions_test_cold", "ctr", "ctr_test"):
        assert a[key] == b[key], key
    for table, cols in (("impressions", ["request_id", "user_id", "ts", "item_id", "position",
                                         "clicked"]),
                        ("behaviors", ["user_id", "item_id", "ts", "action"]),
                        ("users", ["user_id", "signup_ts"])):
        assert read_table(tmp_path / "a", table, cols).equals(read_table(tmp_path / "b", table, cols))
    # the cold items (launched after the split) are the same movies
    end = datetime.fromisoformat(a["train_end_ts"])
    cold = [{r["item_id"] for r in read_table(w, "items", ["item_id", "launch_ts"]).to_pylist()
             if r["launch_ts"] >= end} for w in (tmp_path / "a", tmp_path / "b")]
    assert cold[0] == cold[1] and cold[0]


@pytest.mark.parametrize("file,text,column,words", [
    ("inter", INTER.replace("rating:float", "rating:number"), "rating:number", "unknown type 'number'"),
    ("item", ITEM.replace("class:token_seq", "class"), "class", "without a type"),
    ("inter", INTER.replace("timestamp:float", "when:float"), "timestamp", "missing field"),
    ("inter", INTER.replace("880010800", "soon"), "timestamp:float", "expected a number"),
])
def test_bad_atomic_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str,
                          text: str, column: str, words: str) -> None:
    folder = _atomic(tmp_path / "toy", **{file: text})
    out = tmp_path / "w"
    assert _import(folder, out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder / f'toy.{file}'}: column '{column}': row ")
    assert words in err
    assert not out.exists()

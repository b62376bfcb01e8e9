"""`moon data import movielens`: a small GroupLens-format fixture (and the same data as
widedeep-style parquet) becomes a valid text-only world; a bad file names file, column and
row and writes nothing. Never the real data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moon_rec.cli import main
from moon_rec.data.errors import DataError
from moon_rec.data.io import read_table, read_world_meta
from moon_rec.data.movielens import GENRES, import_movielens
from moon_rec.data.validation import validate_world

Corrupt = Callable[[Path], None]
T0 = 880_000_000  # unix seconds, late 1997
# (movie id, title, release date, genres)
MOVIES = [
    (1, "Toy Story (1995)", "01-Jan-1995", ("Animation", "Children's", "Comedy")),
    (2, "GoldenEye (1995)", "01-Jan-1995", ("Action", "Adventure", "Thriller")),
    (3, "Casablanca (1942)", "01-Jan-1942", ("Drama", "Romance", "War")),
    (4, "unknown", "", ("unknown",)),
    (5, "Scream (1996)", "20-Dec-1996", ("Horror", "Thriller")),
    (6, "Late Arrival (1998)", "01-Feb-1998", ("Drama",)),  # first rated after the split
    (7, "Nobody Saw It (1997)", "05-May-1997", ("Comedy",)),  # never rated
]
USERS = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "94043"),
         (3, 23, "M", "writer", "32067"), (4, 33, "F", "student", "t8h1n")]


def _ratings() -> list[tuple[int, int, int, int]]:
    """(user, movie, rating, unix time): 20 ratings; movie 6 only in the last 4."""
    rows = []
    t = T0
    for k in range(16):
        rows.append((1 + k % 4, 1 + k % 5, 1 + (k * 3) % 5, t))
        t += 3600 * (1 + k % 3)
    for k in range(4):
        rows.append((1 + k, 6 if k % 2 == 0 else 1 + k, 5 - k, t))
        t += 60
    return rows


def _flags(genres: tuple[str, ...]) -> list[int]:
    return [int(g in genres) for g in GENRES]


def write_grouplens(folder: Path, ratings: list[tuple[int, int, int, int]] | None = None) -> Path:
    """u.data / u.item / u.user of the fixture (u.item in latin-1, like GroupLens)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = _ratings() if ratings is None else ratings
    (folder / "u.data").write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in rows))
    lines = [
        "|".join([str(m), title, rel, "", f"http://us.imdb.com/M/title-exact?{m}",
                  *map(str, _flags(g))])
        for m, title, rel, g in MOVIES
    ]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (folder / "u.user").write_text("".join("|".join(map(str, u)) + "\n" for u in USERS))
    return folder


def write_parquet(folder: Path) -> Path:
    """The same data as widedeep's MovieLens100k_*.parquet.brotli (same columns)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = _ratings()
    data = pa.table({c: pa.array([r[i] for r in rows], pa.int64())
                     for i, c in enumerate(["user_id", "movie_id", "rating", "timestamp"])})
    items: dict[str, pa.Array] = {
        "movie_id": pa.array([m[0] for m in MOVIES], pa.int64()),
        "movie_title": pa.array([m[1] for m in MOVIES], pa.string()),
        "release_date": pa.array([m[2] or None for m in MOVIES], pa.string()),
        "video_release_date": pa.array([None] * len(MOVIES), pa.float64()),
        "IMDb_URL": pa.array([f"http://us.imdb.com/{m[0]}" for m in MOVIES], pa.string()),
    }
    for j, g in enumerate(GENRES):
        items[g] = pa.array([_flags(m[3])[j] for m in MOVIES], pa.int64())
    users = pa.table({
        "user_id": pa.array([u[0] for u in USERS], pa.int64()),
        "age": pa.array([u[1] for u in USERS], pa.int64()),
        "gender": pa.array([u[2] for u in USERS]),
        "occupation": pa.array([u[3] for u in USERS]),
        "zip_code": pa.array([u[4] for u in USERS]),
    })
    for name, table in (("data", data), ("items", pa.table(items)), ("users", users)):
        pq.write_table(table, folder / f"MovieLens100k_{name}.parquet.brotli", compression="brotli")
    return folder


def _us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def test_grouplens_import_is_a_valid_text_only_world(tmp_path: Path) -> None:
    src = write_grouplens(tmp_path / "ml-100k")
    out = tmp_path / "world"
    meta = import_movielens(tmp_path, out, split_quantile=0.8)  # finds ml-100k/ inside
    validate_world(out)
    assert meta["format"] == "grouplens" and meta["text_only"] is True
    assert read_world_meta(out)["train_end_ts"] == meta["train_end_ts"]

    items = read_table(out, "items").to_pylist()
    by_id = {r["item_id"]: r for r in items}
    assert [r["item_id"] for r in items] == [m[0] for m in MOVIES]
    assert all(r["image"] is None and r["price"] == 0.0 and r["spu_id"] == r["item_id"]
               for r in items)
    assert by_id[1]["title"] == "Toy Story (1995)"
    assert by_id[1]["attributes"] == "year: 1995; genres: Animation, Children's, Comedy"
    assert by_id[4]["attributes"] == "genres: unknown" and by_id[4]["brand_id"] == 0
    assert by_id[3]["brand_id"] == 1940 and by_id[1]["brand_id"] == 1990
    # the most specific genre: the one with the fewest movies in this catalog
    assert by_id[3]["category_id"] == GENRES.index("Romance")  # Drama has 2 movies
    assert by_id[4]["category_id"] == 0
    cats = read_table(out, "categories")
    assert cats.column("name").to_pylist() == list(GENRES)

    ratings = _ratings()
    first = {m: min(t for _u, mm, _r, t in ratings if mm == m) for m in {r[1] for r in ratings}}
    for m, t in first.items():
        assert _us(by_id[m]["launch_ts"]) == t * 1_000_000
    assert by_id[7]["launch_ts"] == datetime(1997, 5, 5, tzinfo=UTC)  # unrated: release date

    imps = read_table(out, "impressions")
    assert imps.num_rows == len(ratings)
    assert imps.column("request_id").to_pylist() == list(range(1, len(ratings) + 1))
    assert set(imps.column("position").to_pylist()) == {0}
    assert set(imps.column("query_text").to_pylist()) == {""}
    got = sorted(zip(imps.column("user_id").to_pylist(), imps.column("item_id").to_pylist(),
                     [_us(t) // 1_000_000 for t in imps.column("ts").to_pylist()],
                     imps.column("clicked").to_pylist(), strict=True))
    assert got == sorted((u, m, t, int(r >= 4)) for u, m, r, t in ratings)

    beh = read_table(out, "behaviors")
    liked = sorted((u, m, t + 1) for u, m, r, t in ratings if r >= 4)
    assert sorted(zip(beh.column("user_id").to_pylist(), beh.column("item_id").to_pylist(),
                      [_us(t) // 1_000_000 for t in beh.column("ts").to_pylist()],
                      strict=True)) == liked
    assert set(beh.column("action").to_pylist()) == {"click"}
    assert beh.column("query_image_id").null_count == beh.num_rows
    assert read_table(out, "image_queries").num_rows == 0

    users = read_table(out, "users")
    assert users.column("user_id").to_pylist() == [1, 2, 3, 4]
    # the demographics are typed extra columns; the zip code is kept as its region prefix
    assert {f.name: f.type for f in users.schema if f.name not in ("user_id", "signup_ts")} == {
        "age": pa.int64(), "gender": pa.string(), "occupation": pa.string(),
        "zip_prefix": pa.string()}
    assert [(r["age"], r["gender"], r["occupation"], r["zip_prefix"])
            for r in users.to_pylist()] == [(24, "M", "technician", "857"),
                                            (53, "F", "other", "940"), (23, "M", "writer", "320"),
                                            (33, "F", "student", "T8H")]

    # the split: 16 of 20 ratings train; half a second before the first test rating
    end = _us(datetime.fromisoformat(meta["train_end_ts"]))
    times = sorted(t for *_x, t in ratings)
    assert end == times[16] * 1_000_000 - 500_000
    assert meta["n_impressions_test"] == 4
    assert meta["n_cold_items"] == 1 and meta["n_cold_items_test"] == 1  # movie 6
    assert _us(by_id[6]["launch_ts"]) > end
    assert src.is_dir()


def test_parquet_input_gives_the_same_world(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    import_movielens(write_grouplens(tmp_path / "gl"), a)
    meta = import_movielens(write_parquet(tmp_path / "pq"), b)
    assert meta["format"] == "parquet"
    for name in ("items", "users", "behaviors", "impressions", "categories", "image_queries"):
        assert read_table(a, name).equals(read_table(b, name)), name


def test_cli_import_then_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_grouplens(tmp_path / "ml")
    out = tmp_path / "w"
    assert main(["data", "import", "movielens", "--path", str(src), "--out", str(out),
                 "--split-quantile", "0.5"]) == 0
    assert '"n_impressions": 20' in capsys.readouterr().out
    assert main(["world", "validate", str(out)]) == 0
    assert "valid" in capsys.readouterr().out
    # a second import into the non-empty folder needs --overwrite
    assert main(["data", "import", "movielens", "--path", str(src), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def _line_replace(file: str, line: int, text: str) -> Corrupt:
    def corrupt(folder: Path) -> None:
        path = folder / file
        lines = path.read_bytes().decode("latin-1").splitlines()
        lines[line - 1] = text
        path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return corrupt


BAD_GROUPLENS = [
    # corruption, file, column, row (line number), words
    (_line_replace("u.data", 3, "1\t2\t4"), "u.data", "timestamp", 3, "missing column"),
    (_line_replace("u.data", 5, f"2\t3\t6\t{T0}"), "u.data", "rating", 5, "outside 1..5"),
    (_line_replace("u.data", 5, f"2\t3\t0\t{T0}"), "u.data", "rating", 5, "outside 1..5"),
    (_line_replace("u.data", 7, "2\t3\t4\t1997-12-01"), "u.data", "timestamp", 7, "unparsable"),
    (_line_replace("u.data", 8, f"2\t3\t4\t{T0 * 1000}"), "u.data", "timestamp", 8,
     "not a plausible time"),
    (_line_replace("u.data", 2, f"99\t3\t4\t{T0}"), "u.data", "user_id", 2, "not in u.user"),
    (_line_replace("u.data", 2, f"1\t99\t4\t{T0}"), "u.data", "movie_id", 2, "not in u.item"),
    (_line_replace("u.item", 2, "2|GoldenEye (1995)|01-Jan-1995"), "u.item", "video_release_date",
     2, "missing column"),
    (_line_replace("u.item", 3, "3|Casablanca (1942)|sometime in 1942||url|" + "|".join(["0"] * 19)),
     "u.item", "release_date", 3, "unparsable date"),
    (_line_replace("u.item", 1, "1|Toy Story (1995)|01-Jan-1995||url|" + "|".join(["2"] * 19)),
     "u.item", "unknown", 1, "genre flag"),
    (_line_replace("u.item", 4, "1|Again (1995)|01-Jan-1995||url|" + "|".join(["0"] * 19)),
     "u.item", "movie_id", 4, "duplicate id 1"),
    (_line_replace("u.user", 2, "2|53|F"), "u.user", "occupation", 2, "missing column"),
    (_line_replace("u.user", 3, "3|-1|M|writer|32067"), "u.user", "age", 3, "negative age"),
    (_line_replace("u.user", 1, "1|24|M| |85711"), "u.user", "occupation", 1, "non-empty"),
    (_line_replace("u.user", 4, "4|33|F|student|"), "u.user", "zip_code", 4, "non-empty"),
]


@pytest.mark.parametrize("corrupt,file,column,row,words", BAD_GROUPLENS,
                         ids=[f"{c[1]}-{c[2]}-{c[4]}" for c in BAD_GROUPLENS])
def test_bad_grouplens_file_names_file_column_row_and_writes_nothing(
    tmp_path: Path, corrupt: Corrupt, file: str, column: str, row: int, words: str,
) -> None:
    src = write_grouplens(tmp_path / "ml")
    corrupt(src)
    out = tmp_path / "out" / "world"
    with pytest.raises(DataError) as info:
        import_movielens(src, out)
    err = info.value
    assert (Path(err.file or "").name, err.column, err.row) == (file, column, row), str(err)
    assert words in str(err) and file in str(err) and f"row {row}" in str(err)
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _parquet_replace(name: str, column: str, row: int | None, value: object,
                     type_: pa.DataType | None = None) -> Corrupt:
    def corrupt(folder: Path) -> None:
        path = folder / f"MovieLens100k_{name}.parquet.brotli"
        t = pq.read_table(path)
        if row is None:  # drop the column
            t = t.drop_columns([column])
        else:
            values = t.column(column).to_pylist()
            if type_ == pa.string():
                values = [str(v) for v in values]
            values[row] = value
            i = t.column_names.index(column)
            arr = pa.array(values, type_ or t.schema.field(column).type)
            t = t.set_column(i, pa.field(column, arr.type), arr)
        pq.write_table(t, path, compression="brotli")
    return corrupt


BAD_PARQUET = [
    (_parquet_replace("data", "rating", None, None), "data", "rating", None, "missing column"),
    (_parquet_replace("data", "rating", 4, 7), "data", "rating", 4, "outside 1..5"),
    (_parquet_replace("data", "timestamp", 6, "yesterday", pa.string()), "data", "timestamp", 6,
     "unparsable"),
    (_parquet_replace("data", "timestamp", 2, None), "data", "timestamp", 2, "expected an integer"),
    (_parquet_replace("items", "release_date", 1, "1995/01/01"), "items", "release_date", 1,
     "unparsable date"),
    (_parquet_replace("items", "Drama", None, None), "items", "Drama", None, "missing column"),
    (_parquet_replace("users", "gender", None, None), "users", "gender", None, "missing column"),
    (_parquet_replace("users", "zip_code", 2, None), "users", "zip_code", 2, "non-empty"),
]


@pytest.mark.parametrize("corrupt,name,column,row,words", BAD_PARQUET,
                         ids=[f"{c[1]}-{c[2]}-{c[4]}" for c in BAD_PARQUET])
def test_bad_parquet_file_names_file_column_row_and_writes_nothing(
    tmp_path: Path, corrupt: Corrupt, name: str, column: str, row: int | None, words: str,
) -> None:
    src = write_parquet(tmp_path / "pq")
    corrupt(src)
    out = tmp_path / "world"
    with pytest.raises(DataError) as info:
        import_movielens(src, out)
    err = info.value
    assert Path(err.file or "").name == f"MovieLens100k_{name}.parquet.brotli"
    assert (err.column, err.row) == (column, row), str(err)
    assert words in str(err)
    assert not out.exists()


def test_not_a_movielens_folder_and_bad_quantile(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no MovieLens-100k files"):
        import_movielens(tmp_path, tmp_path / "w")
    src = write_grouplens(tmp_path / "ml")
    with pytest.raises(DataError, match="outside"):
        import_movielens(src, tmp_path / "w", split_quantile=1.0)
    assert not (tmp_path / "w").exists()

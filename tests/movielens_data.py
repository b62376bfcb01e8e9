"""Test data of the MovieLens path (never the real files): a generated GroupLens-format
``ml-100k`` folder with enough ratings for the whole loop, and a tiny BERT text tower saved
with ``save_pretrained`` (the local-folder mechanism that loads all-MiniLM-L6-v2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moon_rec.data.movielens import GENRES

T0 = 880_000_000  # unix seconds, late 1997
WORDS = ["star", "night", "love", "war", "dark", "city", "blue", "river", "ghost", "king",
         "last", "summer", "story", "road", "fire", "dream"]


def write_grouplens_fixture(folder: Path, *, n_movies: int = 60, n_users: int = 40,
                            sessions: int = 6, per_session: int = 6, n_cold: int = 8,
                            days: int = 200, seed: int = 0) -> Path:
    """``folder``/u.data, u.item, u.user: ``n_users`` users, each rating ``sessions``
    sessions of ``per_session`` movies a few minutes apart (consecutive likes make
    item-item pairs), spread over ``days``. Every user prefers two genres and rates their
    movies 4-5 (mostly), others 1-3 (mostly); the last ``n_cold`` movies are only rated in
    the last 15% of the time (cold after an 0.8 split). Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    genres = np.zeros((n_movies, len(GENRES)), np.int64)
    movies = []
    for m in range(n_movies):
        g = rng.choice(np.arange(1, len(GENRES)), size=1 + m % 2, replace=False)
        genres[m, g] = 1
        year = 1930 + int(rng.integers(0, 68))
        title = f"{WORDS[m % len(WORDS)].title()} {WORDS[(m * 7 + 3) % len(WORDS)]} {m} ({year})"
        movies.append("|".join([str(m + 1), title, f"01-Jan-{year}", "",
                                f"http://us.imdb.com/M/title-exact?{m + 1}",
                                *map(str, genres[m].tolist())]))
    (folder / "u.item").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    (folder / "u.user").write_text("".join(
        f"{u}|{20 + u % 40}|{'MF'[u % 2]}|{['student', 'writer', 'other'][u % 3]}|{10000 + u}\n"
        for u in range(1, n_users + 1)))
    span = days * 86_400
    cold_from = T0 + int(0.85 * span)
    warm = np.arange(n_movies - n_cold)
    rows: list[tuple[int, int, int, int]] = []
    for u in range(1, n_users + 1):
        liked = rng.choice(np.arange(1, len(GENRES)), size=2, replace=False)
        for s in range(sessions):
            t = T0 + int((s + rng.random()) / sessions * span)
            pool = np.arange(n_movies) if t >= cold_from else warm
            for m in rng.choice(pool, size=per_session, replace=False).tolist():
                fan = bool(genres[m, liked].any())
                r = int(rng.integers(4, 6)) if fan == (rng.random() < 0.85) else int(
                    rng.integers(1, 4))
                rows.append((u, m + 1, r, t))
                t += int(rng.integers(60, 600))
    # one rating per (user, movie), as in MovieLens: keep the first
    seen: set[tuple[int, int]] = set()
    unique = []
    for u, m, r, t in sorted(rows, key=lambda x: x[3]):
        if (u, m) not in seen:
            seen.add((u, m))
            unique.append((u, m, r, t))
    (folder / "u.data").write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in unique))
    return folder


def save_tiny_bert(folder: Path, *, hidden: int = 32, positions: int = 64) -> Path:
    """A 1-layer BERT (``hidden`` wide) and its WordPiece tokenizer in a `transformers`
    model folder (whole words of the fixture plus characters, so any title tokenises)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    words = [*WORDS, "year", "genres", *(g.lower() for g in GENRES), "new", "arrival"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(words), *chars,
             *(f"##{c}" for c in chars), *".,:;()'-"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab=str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=2 * hidden,
                         max_position_embeddings=positions)).save_pretrained(str(folder))
    return folder

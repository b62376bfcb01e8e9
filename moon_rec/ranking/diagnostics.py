"""Diagnostics for the ranker's headline gap: is the signal in the world, the embeddings or
the module?

:func:`write_oracle_style_embeddings` writes "embeddings" built from a synthetic world's
hidden ``oracle_style`` vectors (the look that drives clicks in look-driven categories), in
the embedding-parquet format. A ranker trained on them shows what CUBE can reach with
content vectors that carry the style perfectly: a ceiling for a real MOON encoder's style
signal. For investigation only; ``oracle_`` columns are never production features.

    python -m moon_rec.ranking.diagnostics WORLD OUT [--noise 0.05] [--style-noise 0.3]

``--style-noise`` blurs the style itself (Gaussian noise on its 8 dims): a content vector
that carries only part of the look, R^2 about 1 / (1 + 8 s^2), to chart the ranker's gain
against the content's quality.

:func:`style_probe` measures how much of the look a set of item embeddings carries: the
held-out R^2 of a linear and of an MLP regression from the vectors (plus the category) to
``oracle_style`` over look-driven items, and the accuracy of reading colour, pattern and
shape from them.

    python -m moon_rec.ranking.diagnostics WORLD --probe EMBEDDINGS [--dim 64]

:func:`explain_ranker` regresses a trained ranker's test logits on the oracle's terms,
per segment: a coefficient near 1 means the ranker tracks that term, near 0 that it has
not learned it (e.g. user x brand affinity).

    python -m moon_rec.ranking.diagnostics WORLD --explain MODEL [MODEL ...]

:func:`oracle_decomposition` splits the oracle click logit of a synthetic world's test
impressions into its terms (:mod:`moon_rec.data.click_model`, read back from the world's
``oracle_`` columns) and reports the
AUC of "reachable" oracles: the oracle with the terms that no ranker can see from its
features (user/item ids, category, brand, position, query text, behaviours, content
vectors) replaced by what those features do tell.

    python -m moon_rec.ranking.diagnostics WORLD --decompose
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from moon_rec.data.click_model import (
    IMPRESSION_COLUMNS,
    NONE,
    STYLE_SCALE,
    ImpressionInputs,
    WorldOracle,
    click_logit,
    click_terms,
    read_oracle,
)
from moon_rec.data.embeddings import embedding_table, prefixes_of, write_embedding_table
from moon_rec.data.io import read_table
from moon_rec.encoders.config import DEFAULT_DIMS

DIMS: tuple[int, ...] = DEFAULT_DIMS  # the encoder config's default sizes


def has_style_truth(world: str | Path) -> bool:
    """Whether the world's items carry the synthetic ``oracle_style`` (the style probe's
    and the perfect-look rankers' ground truth); a real catalog does not."""
    from moon_rec.data.validation import table_files

    files = table_files(world, "items")
    return bool(files) and "oracle_style" in pq.read_schema(files[0]).names


def write_oracle_style_embeddings(
    world: str | Path,
    out: str | Path,
    noise: float = 0.05,
    seed: int = 0,
    style_noise: float = 0.0,
) -> Path:
    """Write ``out/items.parquet``: per item, [oracle_style + style_noise * N(0, 1),
    noise * N(0, 1)...] padded to 256 dims, each Matryoshka prefix L2-normalised;
    model_version ``oracle-style`` (``oracle-style-s<style_noise>`` when blurred)."""
    if noise < 0 or style_noise < 0:
        raise ValueError(f"noise and style_noise must be >= 0, got {noise}, {style_noise}")
    table = read_table(world, "items", columns=["item_id", "oracle_style"], validate=False)
    ids = table.column("item_id").to_numpy(zero_copy_only=False).astype(np.int64)
    style = np.stack(table.column("oracle_style").to_numpy(zero_copy_only=False)).astype(np.float32)
    rng = np.random.default_rng(seed)
    if style_noise > 0:
        style = style + style_noise * rng.normal(size=style.shape).astype(np.float32)
    width = DIMS[-1] - style.shape[1]
    full = np.concatenate([style, noise * rng.normal(size=(len(ids), width))], axis=1)
    version = "oracle-style" if style_noise == 0 else f"oracle-style-s{style_noise:g}"
    table = embedding_table(ids, prefixes_of(full, DIMS), version,
                            datetime(2026, 1, 1, tzinfo=UTC))
    return write_embedding_table(table, Path(out) / "items.parquet")


def _world_terms(world: str | Path) -> tuple[WorldOracle, ImpressionInputs, dict[str, np.ndarray]]:
    """The world's hidden truth, the click model's inputs of every impression and
    :func:`oracle_terms`."""
    oracle = read_oracle(world)
    cfg = oracle.cfg
    cols = [*IMPRESSION_COLUMNS, "clicked", "oracle_p_click"]
    imp = read_table(world, "impressions", columns=cols, validate=False)
    x = oracle.inputs(imp)
    terms = click_terms(cfg, x)
    ts = pc.cast(imp.column("ts"), pa.int64()).to_numpy()
    train_end = int(cfg.train_end.timestamp() * 1e6)
    p = imp.column("oracle_p_click").to_numpy().astype(np.float64)
    p = np.clip(p, 1e-12, 1 - 1e-12)
    logit = np.log(p) - np.log1p(-p)
    image_request = x.query_item != NONE
    # an image query's text is empty: its colour / brand intent is as unseen as its photo
    intent = terms.query_color + terms.query_brand
    item_id = imp.column("item_id").to_numpy()
    out = {
        "logit": logit, "bias": np.asarray(cfg.bias), "user_bias": terms.user_bias,
        "style": terms.style, "brand": terms.brand, "price": terms.price,
        "category": terms.category, "quality": terms.quality, "position": terms.position,
        "query_text_match": np.where(image_request, 0.0, intent),
        "query_image_match": np.where(image_request, intent + terms.query_image, 0.0),
        "unexplained": logit - click_logit(cfg, terms),
        "test": ts >= train_end,
        "cold": oracle.items.launch_us[oracle.item_rows(item_id)] >= train_end,
        "look": x.look, "image_request": image_request,
        "clicked": imp.column("clicked").to_numpy(),
        "user_id": imp.column("user_id").to_numpy(), "item_id": item_id,
        "t_frac": x.t_frac, "price_pref": x.price_pref,
    }
    return oracle, x, out


def oracle_terms(world: str | Path) -> dict[str, np.ndarray]:
    """Every term of the oracle click logit, per impression of ``world`` (all rows), as
    :func:`moon_rec.data.click_model.click_terms` computes it from the world's tables.

    Returns arrays [N]: ``logit`` (from ``oracle_p_click``), ``user_bias``, ``style``,
    ``brand``, ``price``, ``category``, ``quality``, ``position``, ``query_text_match``
    (the colour / brand the text query names), ``query_image_match`` (on image-query rows:
    the photographed item, its SPU or neither, plus the colour / brand intent that the
    empty text does not show), ``unexplained`` (``logit`` minus the terms: float32
    storage only), plus ``test``, ``cold``, ``look``, ``image_request`` (bool),
    ``clicked``, ``user_id``, ``item_id``, ``t_frac``, ``price_pref`` (the user's) and the
    constant ``bias`` (a float in a 0-d array).
    """
    return _world_terms(world)[2]


def oracle_decomposition(world: str | Path) -> dict[str, Any]:
    """Which parts of the oracle logit a ranker can see, as test AUCs of oracles with
    terms removed or replaced by what the ranker's features tell.

    Variants (each over all test rows / cold / warm / look-driven / other):

    - ``oracle``: the true click probability (``oracle_p_click``).
    - ``no_image_target``: the image query's target-item term replaced by its mean over
      image-query rows (impressions carry no image-query id: no ranker can see it).
    - ``reachable``: also, for cold items (no ID row, no history), quality replaced by its
      mean at the impression's position (the logged ranker sorts by quality + noise, so
      position tells some of it) and the price term by its expectation over price tiers
      (price is not a ranker feature). Everything else is a function of the features
      with infinite data.
    - ``drop_<term>``: the oracle without one term (its mean instead): how much each
      term carries.
    """
    from moon_rec.metrics.ranking import auc

    oracle, _x, t = _world_terms(world)
    cfg = oracle.cfg
    test, y = t["test"], t["clicked"]
    segments = {
        "all": np.ones_like(test), "cold": t["cold"], "warm": ~t["cold"], "look": t["look"],
        "other": ~t["look"],
    }

    def aucs(score: np.ndarray) -> dict[str, float | None]:
        out = {}
        for name, mask in segments.items():
            m = test & mask
            a = auc(y[m], score[m])
            out[name] = None if a is None else round(a, 4)
        return out

    logit = t["logit"]
    report: dict[str, Any] = {"oracle": aucs(logit)}
    img = t["image_request"]
    no_img = logit - t["query_image_match"] + np.where(
        img, t["query_image_match"][img].mean() if img.any() else 0.0, 0.0
    )
    report["no_image_target"] = aucs(no_img)
    cold = t["cold"]
    pos = np.round(
        -t["position"] / max(cfg.position_decay, 1e-9), 6
    )  # a monotone key of the position
    q_by_pos = {}
    for key in np.unique(pos):
        m = (pos == key) & ~test
        q_by_pos[key] = float(t["quality"][m].mean()) if m.any() else 0.0
    q_hat = np.array([q_by_pos[k] for k in pos])
    tier_p = np.array([0.2, 0.3, 0.3, 0.15, 0.05])
    w_price = np.where(t["look"], cfg.w_price_look, cfg.w_price_other)
    pref = t["price_pref"]
    exp_price = -w_price * (tier_p[None, :] * np.abs(np.arange(5)[None, :] - pref[:, None])).sum(1)
    reach = no_img + np.where(cold, q_hat - t["quality"] + exp_price - t["price"], 0.0)
    report["reachable"] = aucs(reach)
    for term in ("style", "brand", "price", "category", "quality", "position", "user_bias",
                 "query_text_match", "query_image_match"):
        v = t[term]
        report[f"drop_{term}"] = aucs(logit - v + v[test].mean())
    share = {}
    for term in ("style", "brand", "price", "category", "quality", "position", "user_bias",
                 "query_text_match", "query_image_match", "unexplained"):
        share[term] = round(float(t[term][test].std()), 3)
    report["term_std_test"] = share
    report["image_request_share_test"] = round(float(img[test].mean()), 4)
    return report


def history_taste_ceiling(
    world: str | Path, training_set: str | Path, shrink: float = 3.0
) -> dict[str, Any]:
    """How much of the style term a ranker can recover from behaviour sequences.

    The oracle logit without the image-target term, with the user's true taste replaced by
    an estimate from the impression's behaviour sequence (as of the impression, as the
    training set holds it): the shrunk mean of the *true* styles of the look-driven
    behaviour items, sum / (n + ``shrink``), with the best of a few scales. Every other
    term stays exact (quality and price of cold items too), so this is an upper bound
    for any ranker that reads taste from behaviours, even with perfect content vectors.
    Rows: ``true_taste`` (the drifting taste itself), ``history`` (look-driven
    behaviours), ``history_all`` (every behaviour), ``no_style``.
    """

    from moon_rec.metrics.ranking import auc

    oracle, x, t = _world_terms(world)
    cfg = oracle.cfg
    table = pq.read_table(training_set, columns=["item_id", "hist_item_ids"])
    if not np.array_equal(table.column("item_id").to_numpy(), t["item_id"]):
        raise ValueError("the training set's rows are not the world's impressions in order")
    hist = table.column("hist_item_ids").combine_chunks()
    lengths = pc.list_value_length(hist).fill_null(0).to_numpy()
    flat = oracle.item_rows(pc.list_flatten(hist).to_numpy())
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    look_item, item_style = oracle.items.look, oracle.items.style
    test, y, look, cold = t["test"], t["clicked"], t["look"], t["cold"]
    w = np.where(look, cfg.w_style_look, cfg.w_style_other) * STYLE_SCALE
    target = x.style
    base = t["logit"] - t["query_image_match"] - t["style"]

    def aucs(score: np.ndarray) -> dict[str, float | None]:
        out = {}
        for name, m in (("all", test), ("cold", test & cold), ("look", test & look),
                        ("other", test & ~look)):
            a = auc(y[m], score[m])
            out[name] = None if a is None else round(a, 4)
        return out

    report: dict[str, Any] = {"true_taste": aucs(base + t["style"]), "no_style": aucs(base)}
    for name, keep in (("history", look_item[flat]), ("history_all", np.ones(flat.size, bool))):
        sums = np.zeros((len(lengths), target.shape[1]))
        np.add.at(sums, row_of[keep], item_style[flat[keep]])
        counts = np.bincount(row_of[keep], minlength=len(lengths))
        match = (sums / (counts[:, None] + shrink) * target).sum(1)
        best = max(((aucs(base + k * w * match), k) for k in (1.0, 1.5, 2.0, 2.5)),
                   key=lambda r: r[0]["all"] or 0.0)
        report[name] = {**best[0], "scale": best[1]}
    return report


def style_probe(
    world: str | Path, embeddings: str | Path, dim: int = 64, seed: int = 0
) -> dict[str, Any]:
    """How much of the look (``oracle_style``) item embeddings carry, on look-driven items.

    Fits, on 80% of the items and scored on the rest: a ridge regression and an MLP
    (one hidden layer of 256) from [embedding, category one-hot] to the 8-dim style
    (``linear_r2``, ``mlp_r2``; ``category_only_r2`` is the category alone), and
    logistic regressions that read the colour, the pattern and the shape (per category)
    (``*_accuracy``). A ranker's content path can only use what a probe finds.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neural_network import MLPRegressor

    from moon_rec.data.embeddings import load_moon_embeddings

    cols = ["item_id", "category_id", "oracle_style", "oracle_color", "oracle_pattern",
            "oracle_shape"]
    items = read_table(world, "items", columns=cols, validate=False)
    cats = read_table(world, "categories", columns=["category_id", "look_driven"], validate=False)
    look_ids = cats.column("category_id").to_numpy()[
        cats.column("look_driven").to_numpy(zero_copy_only=False)
    ]
    category = items.column("category_id").to_numpy()
    keep = np.flatnonzero(np.isin(category, look_ids))
    emb = load_moon_embeddings(embeddings, dim)
    item_ids = items.column("item_id").to_numpy()[keep]
    pos = emb.item_rows(item_ids)
    found = pos >= 0
    if not found.all():
        raise ValueError(
            f"{int((~found).sum())} look-driven items have no embedding in {embeddings}"
        )
    onehot = (category[keep][:, None] == np.unique(category[keep])[None, :]).astype(np.float32)
    x = np.concatenate([emb.item_vectors[pos], onehot], axis=1)
    style = np.stack(items.column("oracle_style").to_numpy(zero_copy_only=False))[keep]
    order = np.random.default_rng(seed).permutation(len(keep))
    tr, te = order[: len(order) * 4 // 5], order[len(order) * 4 // 5 :]

    def r2(pred: np.ndarray) -> float:
        truth = style[te]
        return round(float(1 - ((pred - truth) ** 2).sum() / ((truth - truth.mean(0)) ** 2).sum()), 4)

    mlp = MLPRegressor(hidden_layer_sizes=(256,), max_iter=300, early_stopping=True,
                       random_state=seed)
    report: dict[str, Any] = {
        "dim": dim,
        "n_items": len(keep),
        "linear_r2": r2(Ridge(alpha=1.0).fit(x[tr], style[tr]).predict(x[te])),
        "mlp_r2": r2(mlp.fit(x[tr], style[tr]).predict(x[te])),
        "category_only_r2": r2(Ridge(alpha=1.0).fit(onehot[tr], style[tr]).predict(onehot[te])),
    }
    shape = category * 16 + items.column("oracle_shape").to_numpy()
    for name, labels in (("color", items.column("oracle_color").to_numpy()),
                         ("pattern", items.column("oracle_pattern").to_numpy()),
                         ("shape", shape)):
        y = labels[keep]
        clf = LogisticRegression(max_iter=300, C=10.0).fit(x[tr], y[tr])
        report[f"{name}_accuracy"] = round(float(clf.score(x[te], y[te])), 4)
    return report


EXPLAIN_TERMS: tuple[str, ...] = (
    "style", "brand", "price", "category", "quality", "position", "user_bias",
    "query_text_match",
)


def term_coefficients(
    logit: np.ndarray, terms: dict[str, np.ndarray], names: tuple[str, ...] = EXPLAIN_TERMS
) -> dict[str, float]:
    """Least-squares fit of ``logit`` on the oracle ``terms`` (plus a constant): one
    coefficient per term (1: the logit moves with the term one for one; 0: it ignores
    it) and ``r2``, the share of the logit's variance the terms explain."""
    x = np.stack([np.asarray(terms[n], np.float64) for n in names] + [np.ones(len(logit))], 1)
    coef, *_ = np.linalg.lstsq(x, logit, rcond=None)
    resid = logit - x @ coef
    out = {n: round(float(c), 3) for n, c in zip(names, coef, strict=False)}
    out["r2"] = round(float(1 - resid.var() / max(float(logit.var()), 1e-12)), 3)
    return out


def explain_ranker(world: str | Path, model_dir: str | Path) -> dict[str, Any]:
    """Which oracle terms a trained ranker has learned: :func:`term_coefficients` of its
    test logits, over look-driven, other and cold-item test impressions. The ranker's
    training set must hold the world's impressions in order (as the demo's does)."""
    from moon_rec.ranking.evaluate import score_test_split

    t = oracle_terms(world)
    data, rows, p, meta = score_test_split(model_dir)
    test = np.flatnonzero(t["test"])
    if len(rows) != len(test) or not np.array_equal(data.item_id[rows], t["item_id"][test]):
        raise ValueError("the ranker's test rows are not the world's test impressions in order")
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    logit = np.log(p) - np.log1p(-p)
    report: dict[str, Any] = {"model": str(model_dir), "model_version": meta.get("model_version")}
    for name, mask in (("look", t["look"][test]), ("other", ~t["look"][test]),
                       ("cold", t["cold"][test])):
        if mask.sum() > len(EXPLAIN_TERMS) + 1:
            report[name] = term_coefficients(
                logit[mask], {k: t[k][test][mask] for k in EXPLAIN_TERMS}
            )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="oracle-style embeddings (a content ceiling)")
    parser.add_argument("world")
    parser.add_argument("out", nargs="?")
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument(
        "--style-noise", type=float, default=0.0, help="blur the style itself (content quality)"
    )
    parser.add_argument("--probe", metavar="EMBEDDINGS", help="print the style probe (JSON)")
    parser.add_argument("--dim", type=int, default=64, help="--probe: Matryoshka size")
    parser.add_argument(
        "--explain", nargs="+", metavar="MODEL", help="print which oracle terms MODELs learned"
    )
    parser.add_argument(
        "--decompose", action="store_true", help="print the oracle logit decomposition (JSON)"
    )
    parser.add_argument(
        "--training-set", help="with --decompose: also the behaviour-taste ceiling"
    )
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(style_probe(args.world, args.probe, args.dim), indent=2))
        return 0
    if args.explain:
        print(json.dumps([explain_ranker(args.world, m) for m in args.explain], indent=2))
        return 0
    if args.decompose:
        report = oracle_decomposition(args.world)
        if args.training_set:
            report["history_taste_ceiling"] = history_taste_ceiling(args.world, args.training_set)
        print(json.dumps(report, indent=2))
        return 0
    if args.out is None:
        parser.error("OUT is required (or --decompose)")
    print(write_oracle_style_embeddings(args.world, args.out, args.noise,
                                        style_noise=args.style_noise))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

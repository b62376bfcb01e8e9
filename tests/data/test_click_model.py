"""The one click model: the generator draws clicks from it, and the same terms recomputed
from a generated world's tables (oracle_ columns, looked up by id) give oracle_p_click."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from moon_rec.data.click_model import (
    IMPRESSION_COLUMNS,
    MATCH,
    MISS,
    NONE,
    ImpressionInputs,
    click_logit,
    click_terms,
    p_click,
    read_oracle,
)
from moon_rec.data.errors import DataError
from moon_rec.data.io import read_table
from moon_rec.data.render import COLORS
from moon_rec.data.world import COLOR_SYNONYMS, build_universe, make_config


def _impressions(world: Path) -> pa.Table:
    cols = [*IMPRESSION_COLUMNS, "query_text", "oracle_p_click", "oracle_logit_style"]
    return read_table(world, "impressions", cols)


def test_terms_from_the_tables_reproduce_oracle_p_click(tiny_world: Path) -> None:
    oracle = read_oracle(tiny_world)
    imp = _impressions(tiny_world)
    terms = click_terms(oracle.cfg, oracle.inputs(imp))
    p = p_click(oracle.cfg, terms)
    assert np.abs(p - imp.column("oracle_p_click").to_numpy()).max() < 1e-6
    style = imp.column("oracle_logit_style").to_numpy()
    assert np.abs(terms.style - style).max() < 1e-5
    # the rows do not matter: shuffled impressions give the same probabilities, row by row
    order = np.random.default_rng(0).permutation(imp.num_rows)
    shuffled = p_click(oracle.cfg, click_terms(oracle.cfg, oracle.inputs(imp.take(order))))
    np.testing.assert_array_equal(shuffled, p[order])


def test_query_intent_columns_agree_with_the_query_text(tiny_world: Path) -> None:
    imp = _impressions(tiny_world)
    text = imp.column("query_text").to_pylist()
    color = imp.column("oracle_query_color").to_pylist()
    brand = imp.column("oracle_query_brand_id").to_pylist()
    image = imp.column("oracle_query_item_id").to_pylist()
    brand_names = build_universe(read_oracle(tiny_world).cfg).brand_names
    assert any(c is not None for c in color) and any(b is not None for b in brand)
    for t, c, b, i in zip(text, color, brand, image, strict=True):
        assert (t == "") == (i is not None)  # an image query has no text
        if t and c is not None:
            assert COLOR_SYNONYMS[COLORS[c][0]][0] in t.split(" ")
        if t and b is not None:
            assert t.split(" ", 1)[0] == brand_names[b - 1].lower()  # "<brand> ..."


def test_query_match_terms() -> None:
    cfg = make_config("tiny", 0)
    n = 4
    x = ImpressionInputs(
        position=np.zeros(n, np.int64), t_frac=np.zeros(n), look=np.ones(n, bool),
        user_bias=np.zeros(n), taste=np.tile([1.0, 0.0], (n, 1)),
        taste_drift=np.zeros((n, 2)), category_pref=np.full(n, 0.5), n_categories=2,
        brand_pref=np.zeros((n, 4)), price_pref=np.zeros(n), item=np.arange(n),
        spu=np.array([0, 0, 1, 2]), style=np.tile([1.0, 0.0], (n, 1)),
        brand=np.array([3, 4, 3, 4]), brand_vec=np.zeros((n, 4)),
        color=np.array([5, 5, 6, 6]), price_tier=np.zeros(n), quality=np.zeros(n),
        query_color=np.array([5, 5, NONE, NONE]), query_brand=np.array([NONE, 3, NONE, 3]),
        query_item=np.array([NONE, NONE, 0, 1]), query_spu=np.array([NONE, NONE, 0, 0]),
    )
    t = click_terms(cfg, x)
    np.testing.assert_allclose(t.query_color, [MATCH, MATCH, 0, 0])
    np.testing.assert_allclose(t.query_brand, [0, MISS, 0, MISS])
    np.testing.assert_allclose(t.query_image, [0, 0, -0.3, -0.3])
    np.testing.assert_allclose(t.style, cfg.w_style_look * 2.0)
    np.testing.assert_allclose(t.position, 0.0)
    # brand, price, category (log of an even preference), quality and position are 0 here
    np.testing.assert_allclose(
        click_logit(cfg, t), cfg.bias + t.style + t.query_color + t.query_brand + t.query_image
    )


def test_unknown_ids_are_named(tiny_world: Path) -> None:
    oracle = read_oracle(tiny_world)
    imp = _impressions(tiny_world).slice(0, 3)
    bad = imp.set_column(imp.column_names.index("item_id"), "item_id",
                         pa.array([1, 10**9, 2], pa.int64()))
    with pytest.raises(DataError, match=r"id 1000000000 is not in items"):
        oracle.inputs(bad)
    with pytest.raises(DataError, match="oracle_query_color"):
        oracle.inputs(imp.drop_columns(["oracle_query_color"]))

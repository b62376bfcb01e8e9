"""Diagnostics of the ranker's headline gap: oracle-style content, the style probe and the
per-term explanation of a ranker's logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moon_rec.data.embeddings import load_moon_embeddings
from moon_rec.ranking.diagnostics import (
    EXPLAIN_TERMS,
    style_probe,
    term_coefficients,
    write_oracle_style_embeddings,
)


def test_term_coefficients_recover_a_planted_logit() -> None:
    rng = np.random.default_rng(0)
    terms = {name: rng.normal(size=2000) for name in EXPLAIN_TERMS}
    logit = 0.9 * terms["position"] + 0.5 * terms["user_bias"] - 1.0 + 0.01 * rng.normal(size=2000)
    coef = term_coefficients(logit, terms)
    assert coef["position"] == pytest.approx(0.9, abs=0.01)
    assert coef["user_bias"] == pytest.approx(0.5, abs=0.01)
    assert coef["brand"] == pytest.approx(0.0, abs=0.01)  # a term the logit ignores
    assert coef["r2"] > 0.99


def test_style_noise_blurs_the_oracle_style(tiny_world: Path, tmp_path: Path) -> None:
    write_oracle_style_embeddings(tiny_world, tmp_path / "sharp")
    write_oracle_style_embeddings(tiny_world, tmp_path / "blurred", style_noise=0.5)
    blurred = load_moon_embeddings(tmp_path / "blurred", 32)
    assert blurred.model_version == "oracle-style-s0.5"
    np.testing.assert_allclose(np.linalg.norm(blurred.item_vectors, axis=1), 1.0, rtol=1e-5)
    sharp = style_probe(tiny_world, tmp_path / "sharp", dim=32)
    noisy = style_probe(tiny_world, tmp_path / "blurred", dim=32)
    assert sharp["linear_r2"] > 0.9 and sharp["color_accuracy"] > noisy["color_accuracy"]
    assert noisy["linear_r2"] < sharp["linear_r2"] - 0.2
    assert set(sharp) >= {"mlp_r2", "category_only_r2", "pattern_accuracy", "shape_accuracy"}
    with pytest.raises(ValueError, match="style_noise"):
        write_oracle_style_embeddings(tiny_world, tmp_path / "bad", style_noise=-1.0)

"""The semantic-ID quantiser: deterministic per model_version, recovers planted clusters,
saved and loaded without refitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moon_rec.data.embeddings import matryoshka_prefix
from moon_rec.data.errors import DataError
from moon_rec.retrieval.semantic_ids import (
    SEMANTIC_IDS_FILE,
    SemanticIdConfig,
    fit_semantic_ids,
    load_semantic_ids,
)


def _planted(k: int = 12, per: int = 40, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    # orthonormal centres: every pair sqrt(2) apart, far beyond the noise
    centres = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:k].astype(np.float32)
    label = np.repeat(np.arange(k), per)
    x = centres[label] + 0.02 * rng.normal(size=(k * per, dim)).astype(np.float32)
    perm = rng.permutation(len(x))
    return matryoshka_prefix(x[perm], dim), label[perm]


def test_planted_clusters_are_recovered_by_level_one() -> None:
    x, label = _planted()
    q = fit_semantic_ids(x, "v1", SemanticIdConfig(levels=2, codebook=12, dim=16))
    codes = q.encode_codes(x)
    assert codes.shape == (len(x), 2) and codes.dtype == np.int32
    # level-1 codes are a bijection of the planted centres
    pairs = set(zip(label.tolist(), codes[:, 0].tolist(), strict=True))
    assert len(pairs) == 12
    assert len({c for _, c in pairs}) == 12
    # level 2 refines: the reconstruction gets closer
    err1 = np.linalg.norm(x - q.codebooks[0][codes[:, 0]], axis=1).mean()
    err2 = np.linalg.norm(x - q.decode(codes), axis=1).mean()
    assert err2 < err1


def test_codes_are_deterministic_for_a_model_version(tmp_path: Path) -> None:
    x, _ = _planted(k=6, per=30, dim=32, seed=1)
    cfg = SemanticIdConfig(levels=3, codebook=8, dim=16)
    a = fit_semantic_ids(x, "v1", cfg)
    b = fit_semantic_ids(x.copy(), "v1", cfg)
    np.testing.assert_array_equal(a.codebooks, b.codebooks)
    np.testing.assert_array_equal(a.encode_codes(x), b.encode_codes(x))
    # full vectors and their emb_16 prefix give the same codes
    np.testing.assert_array_equal(a.encode_codes(x), a.encode_codes(matryoshka_prefix(x, 16)))
    a.save(tmp_path / SEMANTIC_IDS_FILE)
    loaded = load_semantic_ids(tmp_path)
    np.testing.assert_array_equal(loaded.codebooks, a.codebooks)
    assert loaded.model_version == "v1" and loaded.config == cfg
    np.testing.assert_array_equal(loaded.encode_codes(x[:5]), a.encode_codes(x[:5]))
    assert a.describe()["file"] == SEMANTIC_IDS_FILE


def test_fewer_items_than_codewords() -> None:
    x, _ = _planted(k=3, per=2, dim=8)
    q = fit_semantic_ids(x, "v", SemanticIdConfig(levels=2, codebook=16, dim=8))
    codes = q.encode_codes(x)
    assert codes.max() < 6 and codes.min() >= 0
    assert q.encode_codes(np.zeros((0, 8), np.float32)).shape == (0, 2)


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need item vectors"):
        fit_semantic_ids(np.zeros((4, 8), np.float32), "v", SemanticIdConfig(dim=16))
    q = fit_semantic_ids(np.eye(8, dtype=np.float32), "v", SemanticIdConfig(codebook=4, dim=8))
    with pytest.raises(ValueError, match="expected"):
        q.encode_codes(np.zeros((2, 4), np.float32))
    (tmp_path / SEMANTIC_IDS_FILE).write_bytes(b"not npz")
    with pytest.raises(DataError, match=SEMANTIC_IDS_FILE):
        load_semantic_ids(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_semantic_ids(tmp_path / "nothing")

"""The embed job writes semantic-ID codes with the vectors: one quantiser per
model_version, saved next to the snapshot, reused by incremental runs, and the same codes
after a kill and resume."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from moon_rec.data.embeddings import SEMANTIC_IDS, load_moon_embeddings
from moon_rec.data.images import encode_png
from moon_rec.data.schemas import TIMESTAMP
from moon_rec.featurestore.embed_job import EmbedJobConfig, run_embed_job
from moon_rec.retrieval.semantic_ids import SEMANTIC_IDS_FILE, SemanticIdConfig, load_semantic_ids

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SID = SemanticIdConfig(levels=2, codebook=8, dim=32)


class TitleEncoder:
    """A deterministic product encoder: each vector is a seeded function of the title only
    (items of one "look" share the title's first word, so they cluster)."""

    image_size = 8
    dims = (32, 64)

    def __init__(self, version: str = "v1") -> None:
        self.model_version = version
        self.items = 0

    def encode_product(self, titles: Sequence[str], images: torch.Tensor) -> torch.Tensor:
        self.items += len(titles)
        out = []
        for t in titles:
            look = torch.Generator().manual_seed(zlib.crc32(f"{self.model_version}{t.split()[0]}".encode()))
            own = torch.Generator().manual_seed(zlib.crc32(t.encode()))
            out.append(torch.randn(64, generator=look) + 0.1 * torch.randn(64, generator=own))
        return F.normalize(torch.stack(out), dim=-1)


def _catalog(world: Path, n: int = 40, titles: dict[int, str] | None = None) -> None:
    rng = np.random.default_rng(0)
    ids = list(range(100, 100 + n))
    names = [f"look{i % 8} item {i}" for i in ids]
    for i, t in (titles or {}).items():
        names[ids.index(i)] = t
    png = encode_png(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    k = len(ids)
    world.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array(ids, pa.int64()),
                "category_id": pa.array([1] * k, pa.int64()),
                "brand_id": pa.array([1] * k, pa.int64()),
                "title": pa.array(names),
                "attributes": pa.array([""] * k),
                "price": pa.array([1.0] * k),
                "launch_ts": pa.array([T0] * k, TIMESTAMP),
                "image": pa.array([png] * k, pa.binary()),
                "spu_id": pa.array([1] * k, pa.int64()),
            }
        ),
        world / "items.parquet",
    )


def _cfg(**kw: object) -> EmbedJobConfig:
    return EmbedJobConfig(batch_size=4, part_rows=8, progress=False, event_ts=T0,
                          semantic_ids=SID, **kw)  # type: ignore[arg-type]


def _codes(out: Path) -> dict[int, list[int]]:
    t = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))])
    return dict(zip(t.column("item_id").to_pylist(), t.column(SEMANTIC_IDS).to_pylist(),
                    strict=True))


def test_codes_written_with_vectors_and_manifest(tmp_path: Path) -> None:
    _catalog(tmp_path / "w")
    out = tmp_path / "emb"
    m = run_embed_job(tmp_path / "w", None, out, _cfg(), encoder=TitleEncoder())
    assert m["semantic_ids"] == {"levels": 2, "codebook": 8, "dim": 32, "model_version": "v1",
                                 "seed": 0, "n_train": 40, "file": SEMANTIC_IDS_FILE}
    assert json.loads((out / "manifest.json").read_text())["semantic_ids"] == m["semantic_ids"]
    q = load_semantic_ids(out)
    emb = load_moon_embeddings(out, 64)
    assert emb.semantic_ids is not None and emb.semantic_ids.shape == (40, 2)
    np.testing.assert_array_equal(emb.semantic_ids, q.encode_codes(emb.item_vectors))
    # the eight looks get eight level-1 codewords, one each
    look = emb.item_ids % 8
    assert len(set(zip(look.tolist(), emb.semantic_ids[:, 0].tolist(), strict=True))) == 8
    assert len(set(emb.semantic_ids[:, 0].tolist())) == 8


def test_codes_survive_kill_and_resume(tmp_path: Path) -> None:
    _catalog(tmp_path / "w")
    ref = tmp_path / "ref"
    run_embed_job(tmp_path / "w", None, ref, _cfg(), encoder=TitleEncoder())
    out = tmp_path / "out"
    def killed(done: int) -> None:
        raise KeyboardInterrupt  # a kill after one chunk is on disk

    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            run_embed_job(tmp_path / "w", None, out, _cfg(), encoder=TitleEncoder(),
                          on_chunk=killed)
    run_embed_job(tmp_path / "w", None, out, _cfg(), encoder=TitleEncoder())
    assert _codes(out) == _codes(ref)
    assert (out / SEMANTIC_IDS_FILE).read_bytes() == (ref / SEMANTIC_IDS_FILE).read_bytes()


def test_incremental_run_reuses_the_quantiser(tmp_path: Path) -> None:
    _catalog(tmp_path / "w")
    out = tmp_path / "emb"
    run_embed_job(tmp_path / "w", None, out, _cfg(), encoder=TitleEncoder())
    before_q = load_semantic_ids(out).codebooks
    before = _codes(out)
    # a new item and a changed title: only those two are embedded, with the same codebooks
    _catalog(tmp_path / "w", n=41, titles={103: "look1 item renamed"})
    enc = TitleEncoder()
    m = run_embed_job(tmp_path / "w", None, out, _cfg(), encoder=enc)
    assert enc.items == 2 and m["n_items"] == 41
    np.testing.assert_array_equal(load_semantic_ids(out).codebooks, before_q)
    after = _codes(out)
    assert {i: c for i, c in after.items() if i not in (103, 140)} == {
        i: c for i, c in before.items() if i != 103
    }
    # the renamed item now shares look1's level-1 codeword
    assert after[103][0] == before[105][0] != before[103][0]  # 105 % 8 == 1
    # another encoder version gets its own quantiser
    run_embed_job(tmp_path / "w", None, out, _cfg(), encoder=TitleEncoder("v2"))
    assert load_semantic_ids(out).model_version == "v2"


def test_without_codes_and_old_snapshots(tmp_path: Path) -> None:
    _catalog(tmp_path / "w")
    out = tmp_path / "emb"
    run_embed_job(tmp_path / "w", None, out, _cfg(), encoder=TitleEncoder())
    m = run_embed_job(tmp_path / "w", None, out,
                      EmbedJobConfig(part_rows=8, progress=False, semantic_ids=None),
                      encoder=TitleEncoder())
    assert m["semantic_ids"] is None and not (out / SEMANTIC_IDS_FILE).exists()
    emb = load_moon_embeddings(out, 32)  # a snapshot without the column still loads
    assert emb.semantic_ids is None and emb.item_ids.size == 40
    with pytest.raises(ValueError, match=r"semantic_ids\.dim 128"):
        run_embed_job(tmp_path / "w", None, out,
                      EmbedJobConfig(semantic_ids=SemanticIdConfig(dim=128), progress=False),
                      encoder=TitleEncoder())

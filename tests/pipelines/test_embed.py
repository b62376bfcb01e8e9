"""The batch embed job: format, rejects, incremental runs, kill-and-resume, sharding."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_data import T0, StandInEncoder, make_catalog

import moon_rec.featurestore.embed_job as embed
from moon_rec.data.embeddings import embedding_schema
from moon_rec.featurestore.embed_job import EmbedJobConfig, run_embed_job

CFG = EmbedJobConfig(batch_size=4, part_rows=8, progress=False, event_ts=T0)


class Killed(Exception):
    """Stands for a kill after a chunk is on disk."""


def kill_after(n: int) -> Any:
    """An ``on_chunk`` hook that stops the job once ``n`` chunks were embedded."""

    def hook(done: int) -> None:
        if done >= n:
            raise Killed

    return hook


def _read(out: Path) -> pa.Table:
    parts = sorted(out.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts])


def _assert_same_output(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.glob("part-*.parquet"))
    assert names == sorted(p.name for p in b.glob("part-*.parquet"))
    for n in names:
        assert pq.read_table(a / n).equals(pq.read_table(b / n)), n
    assert pq.read_table(a / "rejects.parquet").equals(pq.read_table(b / "rejects.parquet"))
    ma, mb = (json.loads((x / "manifest.json").read_text()) for x in (a, b))
    assert ma == mb


def test_output_format_rejects_and_matryoshka(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb"
    m = run_embed_job(catalog, None, out, CFG, encoder=StandInEncoder())
    items = pq.read_table(catalog / "items.parquet")
    t = _read(out)
    assert t.schema.equals(embedding_schema((32, 64, 128, 256), semantic_ids=True))
    good = [i for i in items.column("item_id").to_pylist() if i not in (7, 8)]
    assert t.column("item_id").to_pylist() == good  # catalog order, each item once
    assert m["n_items"] == 30 and m["n_rejects"] == 2 and len(m["parts"]) == 4
    assert set(t.column("model_version").to_pylist()) == {"stub-v1"}
    assert set(t.column("event_timestamp").to_pylist()) == {T0}
    full = np.array(t.column("emb_256").to_pylist(), dtype=np.float32)
    for d in (32, 64, 128, 256):
        v = np.array(t.column(f"emb_{d}").to_pylist(), dtype=np.float32)
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        want = full[:, :d] / np.linalg.norm(full[:, :d], axis=1, keepdims=True)
        np.testing.assert_allclose(v, want, atol=1e-5)
    rej = pq.read_table(out / "rejects.parquet").to_pylist()
    assert [(r["item_id"], r["row"]) for r in rej] == [(7, 30), (8, 31)]
    assert rej[0]["reason"] == "empty title" and "undecodable image" in rej[1]["reason"]
    assert json.loads((out / "manifest.json").read_text())["model_version"] == "stub-v1"
    assert not (out / ".work").exists()


def test_kill_and_resume_equals_uninterrupted(catalog: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    run_embed_job(catalog, None, ref, CFG, encoder=StandInEncoder())
    out = tmp_path / "out"
    for k in (1, 2):  # killed after one chunk, then after another one
        cfg = EmbedJobConfig(batch_size=4, part_rows=8, progress=False, event_ts=T0)
        if k == 2:  # a later start time must not leak in: the plan recorded its time
            cfg = EmbedJobConfig(
                batch_size=4,
                part_rows=8,
                progress=False,
                event_ts=T0 + timedelta(days=1),
            )
        with pytest.raises(Killed):
            run_embed_job(catalog, None, out, cfg, encoder=StandInEncoder(),
                          on_chunk=kill_after(1))
    enc = StandInEncoder()
    m = run_embed_job(
        catalog, None, out, EmbedJobConfig(batch_size=4, part_rows=8, progress=False), encoder=enc
    )
    assert m["n_items"] == 30
    assert enc.items == 14  # only the two remaining chunks (16 rows, 2 bad) were embedded
    _assert_same_output(ref, out)


def test_resume_after_kill_during_swap(
    catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = tmp_path / "ref"
    run_embed_job(catalog, None, ref, CFG, encoder=StandInEncoder())
    out = tmp_path / "out"
    real_replace = embed.os.replace
    calls = {"n": 0}

    def dying_replace(src: Any, dst: Any) -> None:
        if (
            str(dst).startswith(str(out))
            and Path(dst).parent == out
            and Path(dst).name.startswith("part-00001")
        ):
            calls["n"] += 1
            raise KeyboardInterrupt("killed mid-swap")
        real_replace(src, dst)

    monkeypatch.setattr(embed.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        run_embed_job(catalog, None, out, CFG, encoder=StandInEncoder())
    monkeypatch.setattr(embed.os, "replace", real_replace)
    assert calls["n"] == 1 and not (out / "manifest.json").exists()
    enc = StandInEncoder()
    run_embed_job(catalog, None, out, CFG, encoder=enc)
    assert enc.calls == 0  # nothing re-embedded: the finished snapshot was swapped in
    _assert_same_output(ref, out)


def test_incremental_skips_unchanged_items(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb"
    run_embed_job(catalog, None, out, CFG, encoder=StandInEncoder())
    before = {r["item_id"]: r for r in _read(out).to_pylist()}
    # change one title, add one item, keep the rest
    items = pq.read_table(catalog / "items.parquet")
    titles = items.column("title").to_pylist()
    changed = items.column("item_id")[0].as_py()
    titles[0] = "a new title"
    items = items.set_column(items.schema.get_field_index("title"), "title", pa.array(titles))
    extra = make_catalog(tmp_path / "x", n=1, bad=False, seed=5).set_column(
        0, "item_id", pa.array([999], pa.int64())
    )
    pq.write_table(pa.concat_tables([items, extra]), catalog / "items.parquet")
    later = T0 + timedelta(days=1)
    enc = StandInEncoder()
    m = run_embed_job(
        catalog,
        None,
        out,
        EmbedJobConfig(batch_size=4, part_rows=8, progress=False, event_ts=later),
        encoder=enc,
    )
    after = {r["item_id"]: r for r in _read(out).to_pylist()}
    # the two bad rows are retried (and rejected again) with the two changed items
    assert m["n_embedded"] == 2 and m["n_items"] == 31 and m["n_rejects"] == 2
    assert after[changed]["event_timestamp"] == later and after[999]["event_timestamp"] == later
    assert after[changed]["emb_32"] != before[changed]["emb_32"]
    for i, r in before.items():
        if i != changed:
            assert after[i] == r  # untouched, old event time kept
    # a new model version re-embeds everything
    m = run_embed_job(catalog, None, out, CFG, encoder=StandInEncoder("stub-v2"))
    assert m["n_embedded"] == 31 and set(_read(out).column("model_version").to_pylist()) == {
        "stub-v2"
    }


def test_sharded_ranks_merge_deterministically(
    catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = tmp_path / "ref"
    run_embed_job(catalog, None, ref, CFG, encoder=StandInEncoder())
    out = tmp_path / "sharded"
    monkeypatch.setattr(embed, "_barrier", lambda world: None)
    for rank in (1, 0):  # rank 1 finishes first; rank 0 assembles
        monkeypatch.setattr(embed, "_dist", lambda rank=rank: (rank, 2))
        r = run_embed_job(catalog, None, out, CFG, encoder=StandInEncoder())
        if rank == 1:
            assert r == {"rank": 1, "chunks": 2}
    _assert_same_output(ref, out)


def _tiny_checkpoint(world: Path, out: Path) -> Path:
    from moon_rec.encoders import EncoderConfig, MoonTokenizer, build_encoder

    titles = pq.read_table(world / "items.parquet", columns=["title"]).column(0).to_pylist()
    cfg = EncoderConfig(hidden_size=32, num_heads=2, vision_layers=1, text_layers=1)
    return build_encoder(cfg, MoonTokenizer.train(titles, vocab_size=300)).save_pretrained(out)


@pytest.mark.slow
def test_tiny_world_real_encoder_kill_resume_and_torchrun(tiny_world: Path, tmp_path: Path) -> None:
    """The job on the tiny world with a real MoonEncoder checkpoint: killed and resumed
    equals uninterrupted, and two torchrun ranks give the same parts."""
    import os
    import subprocess
    import sys

    ckpt = _tiny_checkpoint(tiny_world, tmp_path / "ckpt")
    cfg = EmbedJobConfig(batch_size=32, part_rows=128, progress=False, event_ts=T0)
    ref = tmp_path / "ref"
    m = run_embed_job(tiny_world, ckpt, ref, cfg)
    n_items = pq.read_table(tiny_world / "items.parquet", columns=["item_id"]).num_rows
    assert m["n_items"] + m["n_rejects"] == n_items and m["n_rejects"] == 0
    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        run_embed_job(tiny_world, ckpt, out, cfg, on_chunk=kill_after(1))
    run_embed_job(tiny_world, ckpt, out, cfg)
    _assert_same_output(ref, out)
    # incremental: nothing changed, nothing embedded
    assert run_embed_job(tiny_world, ckpt, out, cfg)["n_embedded"] == 0
    _assert_same_output(ref, out)
    sharded = tmp_path / "sharded"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--standalone",  # a free rendezvous port: parallel runs never clash
            "-m",
            "moon_rec.cli",
            "embed",
            "--world",
            str(tiny_world),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(sharded),
            "--batch-size",
            "32",
            "--part-rows",
            "128",
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in sorted(p.name for p in ref.glob("part-*.parquet")):
        a, b = pq.read_table(ref / name), pq.read_table(sharded / name)
        assert a.drop_columns(["event_timestamp"]).equals(b.drop_columns(["event_timestamp"]))


def test_precision_bf16_within_tolerance_of_fp32_and_the_public_api(
    tiny_world: Path, tmp_path: Path
) -> None:
    """bf16 autocast (what ``auto`` picks on a CPU with native bf16) stays within cosine
    0.999 of the encoder's own fp32 ``encode_product``; fp32 matches it exactly; the
    resolved precision is in the manifest and separates resumable plans."""
    import torch

    from moon_rec.data.images import decode_image
    from moon_rec.encoders import MoonEncoder
    from moon_rec.encoders.base import images_to_tensor, matryoshka

    ckpt = _tiny_checkpoint(tiny_world, tmp_path / "ckpt")
    items = pq.read_table(tiny_world / "items.parquet").slice(0, 40)
    enc = MoonEncoder.from_pretrained(ckpt).eval()
    with torch.inference_mode():
        imgs = images_to_tensor(
            [np.array(decode_image(b)) for b in items.column("image").to_pylist()],
            enc.config.image_size,
        )
        ref = enc.encode_product(items.column("title").to_pylist(), imgs)
    outs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        cfg = EmbedJobConfig(
            batch_size=16, part_rows=64, progress=False, event_ts=T0, precision=precision
        )
        m = run_embed_job(tiny_world, ckpt, out, cfg)
        assert m["precision"] == precision
        outs[precision] = _read(out).slice(0, 40)
    for d in (32, 256):
        want = matryoshka(ref, d).numpy()
        fp32 = np.array(outs["fp32"].column(f"emb_{d}").to_pylist(), dtype=np.float32)
        np.testing.assert_allclose(fp32, want, atol=1e-5)
        bf16 = np.array(outs["bf16"].column(f"emb_{d}").to_pylist(), dtype=np.float32)
        assert (bf16 * want).sum(1).min() > 0.999
    from moon_rec.encoders.inference import resolve_precision

    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", "cpu")


@pytest.mark.parametrize("backbone", ["dual_tower", "mllm"])
def test_embed_rows_equals_the_public_encode_product(tiny_world: Path, backbone: str) -> None:
    """The job's fast path (one pixel tensor per chunk, batches padded to their longest
    title instead of max_text_len) gives the vectors of ``encode_product`` in fp32."""
    import torch

    from moon_rec.data.images import decode_image
    from moon_rec.encoders import EncoderConfig, MoonTokenizer, build_encoder
    from moon_rec.encoders.base import images_to_tensor, matryoshka

    items = pq.read_table(tiny_world / "items.parquet").slice(0, 24)
    titles = items.column("title").to_pylist()
    titles = [t + " and more words" * (i % 3) for i, t in enumerate(titles)]  # lengths vary
    images = [np.array(decode_image(b)) for b in items.column("image").to_pylist()]
    cfg = EncoderConfig(
        backbone=backbone, hidden_size=32, num_heads=2, vision_layers=1, text_layers=1
    )
    enc = build_encoder(cfg, MoonTokenizer.train(titles, vocab_size=300)).eval()
    tok = enc.tokenizer
    with torch.inference_mode():
        ref = enc.encode_product(titles, images_to_tensor(images, cfg.image_size))
    got = embed.embed_rows(enc, titles, images, batch_size=8, precision="fp32")
    assert enc.tokenizer is tok  # the job's padding proxy is gone afterwards
    for d in cfg.dims:
        np.testing.assert_allclose(got[d], matryoshka(ref, d).numpy(), atol=1e-5)


def test_text_only_catalog_embeds_product_text(tmp_path: Path) -> None:
    """A text-only catalog (MovieLens: every image null) is embedded from
    ``product_text(title, attributes)`` with no image, as training encodes it; a changed
    attribute text re-embeds that item only; an empty title is still a reject."""
    import torch
    from movielens_data import write_grouplens_fixture

    from moon_rec.data.movielens import import_movielens
    from moon_rec.encoders import EncoderConfig, MoonTokenizer, build_encoder, product_text
    from moon_rec.encoders.base import matryoshka

    world = tmp_path / "world"
    import_movielens(write_grouplens_fixture(tmp_path / "ml", n_movies=20, n_users=6), world)
    items = pq.read_table(world / "items.parquet")
    texts = [product_text(t, a) for t, a in zip(items.column("title").to_pylist(),
                                                 items.column("attributes").to_pylist(),
                                                 strict=True)]
    assert texts[0].startswith(items.column("title")[0].as_py() + ". year: ")
    cfg = EncoderConfig(hidden_size=32, num_heads=2, vision_layers=1, text_layers=1,
                        patch_size=16, embed_dim=64, dims=(16, 64), max_text_len=32)
    enc = build_encoder(cfg, MoonTokenizer.train(texts, vocab_size=200)).eval()
    job = EmbedJobConfig(batch_size=8, part_rows=8, progress=False, event_ts=T0,
                         precision="fp32")
    out = tmp_path / "emb"
    m = run_embed_job(world, None, out, job, encoder=enc)
    assert m["n_items"] == 20 and m["n_rejects"] == 0
    with torch.inference_mode():
        ref = enc.encode_product(texts, None)
        with_title_only = enc.encode_product(items.column("title").to_pylist(), None)
    t = _read(out)
    assert t.column("item_id").to_pylist() == items.column("item_id").to_pylist()
    for d in (16, 64):
        got = np.array(t.column(f"emb_{d}").to_pylist(), dtype=np.float32)
        np.testing.assert_allclose(got, matryoshka(ref, d).numpy(), atol=1e-5)
    got = np.array(t.column("emb_64").to_pylist(), dtype=np.float32)
    assert not np.allclose(got, with_title_only.numpy(), atol=1e-3)  # attributes count

    # incremental: a changed attribute text is a changed product; an empty title a reject
    attrs = items.column("attributes").to_pylist()
    titles = items.column("title").to_pylist()
    attrs[3] = "year: 1999; genres: Comedy"
    titles[5] = "  "
    changed = items.set_column(items.schema.get_field_index("attributes"), "attributes",
                               pa.array(attrs, pa.string()))
    changed = changed.set_column(changed.schema.get_field_index("title"), "title",
                                 pa.array(titles, pa.string()))
    pq.write_table(changed, world / "items.parquet")
    m = run_embed_job(world, None, out, job, encoder=enc)
    assert m["n_embedded"] == 1 and m["n_rejects"] == 1 and m["n_items"] == 19
    rej = pq.read_table(out / "rejects.parquet").to_pylist()
    assert [(r["item_id"], r["reason"]) for r in rej] == [(items.column("item_id")[5].as_py(),
                                                          "empty title")]


def test_recall_measures_exactly_what_the_embed_job_writes(tiny_world: Path,
                                                          tmp_path: Path) -> None:
    """One encode path: the catalog vectors recall ranks (``evaluate_encoder``'s
    ``embed_products``, at the hardware's batch precision) are the vectors the embed job
    writes, size by size."""
    from moon_rec.data.embeddings import EmbeddingSnapshot, prefixes_of
    from moon_rec.encoders import MoonEncoder
    from moon_rec.encoders.inference import embed_products
    from moon_rec.training.data import load_world

    ckpt = _tiny_checkpoint(tiny_world, tmp_path / "ckpt")
    out = tmp_path / "emb"
    cfg = EmbedJobConfig(batch_size=256, part_rows=4096, progress=False, event_ts=T0)
    run_embed_job(tiny_world, ckpt, out, cfg)
    snap = EmbeddingSnapshot.open(out)
    data = load_world(tiny_world)
    enc = MoonEncoder.from_pretrained(ckpt)
    recall_vectors = prefixes_of(embed_products(enc, data.product_titles, data.images), enc.dims)
    for d in snap.dims:
        written = snap.vectors(d)
        rows = written.item_rows(data.item_id)
        assert (rows >= 0).all()
        np.testing.assert_array_equal(written.item_vectors[rows], recall_vectors[d])

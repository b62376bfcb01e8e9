"""Benchmark: batch embedding job throughput vs a one-item-at-a-time loop.

Builds a MOON encoder (``EncoderConfig`` defaults unless ``--tiny``, tokenizer trained on
the titles), saves it as a checkpoint and embeds a synthetic catalog of N items (title +
64x64 PNG):
  - job:  ``moon_rec.featurestore.embed_job.run_embed_job`` (loads the checkpoint with ``from_pretrained``,
          decodes, batches, writes the parquet parts);
  - loop: decode one image, ``encode_product`` on one item, ``matryoshka`` per size.
Both under ``torch.inference_mode`` with the same thread count (the job uses no extra
threads). The loop is the public API used one product per call, in float32; the job runs
at ``--precision`` (``auto``: bf16 autocast where the CPU has native bf16), and the JSON
reports how far its vectors are from the loop's (min cosine, max abs difference).

The machine is shared, so besides wall time each side's CPU time (``time.process_time``,
this process, all threads) is reported: the CPU-time ratio does not depend on how much of
the machine other processes took during either phase. Prints one JSON object.

    python benchmarks/embed_throughput.py --n 4096 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from moon_rec.data.embeddings import emb_column

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_catalog(world: Path, n: int, image_size: int = 64, seed: int = 0) -> list[str]:
    from moon_rec.data.images import encode_png
    from moon_rec.data.schemas import TIMESTAMP

    rng = np.random.default_rng(seed)
    colors = ["red", "blue", "green", "black", "white", "beige"]
    kinds = ["dress", "shirt", "sneaker", "bag", "lamp", "mug", "jacket"]
    titles = [
        f"{colors[i % 6]} {kinds[(i // 6) % 7]} with pattern {i % 11} by brand {i % 17}"
        for i in range(n)
    ]
    images = [
        encode_png(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8))
        for _ in range(n)
    ]
    world.mkdir(parents=True, exist_ok=True)
    t = pa.table(
        {
            "item_id": pa.array(np.arange(n), pa.int64()),
            "category_id": pa.array(np.zeros(n, dtype=np.int64)),
            "brand_id": pa.array(np.zeros(n, dtype=np.int64)),
            "title": titles,
            "attributes": [""] * n,
            "price": pa.array(np.ones(n)),
            "launch_ts": pa.array(np.zeros(n, dtype=np.int64)).cast(TIMESTAMP),
            "image": pa.array(images, pa.binary()),
            "spu_id": pa.array(np.zeros(n, dtype=np.int64)),
        }
    )
    pq.write_table(t, world / "items.parquet")
    return titles


def main() -> None:
    from moon_rec import runtime
    from moon_rec.data.images import decode_image
    from moon_rec.encoders import EncoderConfig, MoonEncoder, MoonTokenizer, build_encoder
    from moon_rec.encoders.base import images_to_tensor, matryoshka
    from moon_rec.featurestore.embed_job import EmbedJobConfig, run_embed_job

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4096, help="catalog items")
    p.add_argument("--loop-n", type=int, default=128, help="items for the one-at-a-time loop")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="a tiny encoder (smoke runs)")
    args = p.parse_args()
    threads = runtime.set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="moon-bench-embed-") as tmp:
        world = Path(tmp) / "world"
        titles = make_catalog(world, args.n)
        tok = MoonTokenizer.train(titles, vocab_size=500)
        cfg = (
            EncoderConfig(hidden_size=32, num_heads=2, vision_layers=1, text_layers=1)
            if args.tiny
            else EncoderConfig()
        )
        enc = build_encoder(cfg, tok)
        ckpt = enc.save_pretrained(Path(tmp) / "ckpt")
        # job: the real thing, checkpoint loaded inside
        t0, c0 = time.perf_counter(), time.process_time()
        manifest = run_embed_job(
            world,
            ckpt,
            Path(tmp) / "emb",
            EmbedJobConfig(
                batch_size=args.batch_size,
                part_rows=max(args.batch_size, 1024),
                progress=False,
                precision=args.precision,
            ),
        )
        job_s, job_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert manifest["n_items"] == args.n
        job_vecs = np.array(
            pq.read_table(
                Path(tmp) / "emb" / manifest["parts"][0], columns=[emb_column(cfg.embed_dim)]
            )
            .column(0)
            .to_pylist()[: args.loop_n],
            dtype=np.float32,
        )
        # loop: the same work, one item per encoder call
        model = MoonEncoder.from_pretrained(ckpt)
        items = pq.read_table(world / "items.parquet").slice(0, args.loop_n)
        loop_vecs = []
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for title, data in zip(
                items.column("title").to_pylist(), items.column("image").to_pylist(), strict=True
            ):
                img = images_to_tensor([np.array(decode_image(data))], cfg.image_size)
                x = model.encode_product([title], img)
                for d in model.dims:
                    v = matryoshka(x, d).numpy()
                loop_vecs.append(v[0])
        loop_s, loop_cpu = time.perf_counter() - t0, time.process_time() - c0
    ref = np.stack(loop_vecs)
    cos = (job_vecs * ref).sum(1) / np.linalg.norm(job_vecs, axis=1) / np.linalg.norm(ref, axis=1)
    job_rate = args.n / job_s
    loop_rate = args.loop_n / loop_s
    print(
        json.dumps(
            {
                "benchmark": "embed_throughput",
                "encoder": cfg.backbone + (" (tiny)" if args.tiny else " (EncoderConfig defaults)"),
                "n_items": args.n,
                "loop_items": args.loop_n,
                "batch_size": args.batch_size,
                "threads": threads,
                "precision": manifest.get("precision"),
                "job_items_per_s": round(job_rate, 1),
                "job_seconds_incl_checkpoint_load_and_parquet": round(job_s, 2),
                "job_cpu_seconds": round(job_cpu, 2),
                "loop_items_per_s": round(loop_rate, 1),
                "loop_cpu_seconds": round(loop_cpu, 2),
                "speedup": round(job_rate / loop_rate, 2),
                "speedup_cpu_time": round((loop_cpu / args.loop_n) / (job_cpu / args.n), 2),
                "job_vs_loop_min_cosine": round(float(cos.min()), 6),
                "job_vs_loop_max_abs_diff": float(np.abs(job_vecs - ref).max()),
                "loadavg": os.getloadavg()[0],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

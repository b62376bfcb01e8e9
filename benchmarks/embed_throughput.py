"""Benchmark: batch embedding job throughput vs a one-item-at-a-time loop.

Builds a MOON encoder (``EncoderConfig`` defaults unless ``--tiny``, tokenizer trained on
the titles), saves it as a checkpoint and embeds a synthetic catalog of N items (title +
64x64 PNG):
  - job:  ``pipelines.embed.run_embed_job`` (loads the checkpoint with ``from_pretrained``,
          decodes, batches, writes the parquet parts);
  - loop: decode one image, ``encode_product`` on one item, ``matryoshka`` per size.
Both under ``torch.inference_mode`` with the same thread count. Prints one JSON object.

    python benchmarks/embed_throughput.py --n 512 --batch-size 64
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
    from moon_rec.data.images import decode_image
    from moon_rec.encoders import EncoderConfig, MoonEncoder, MoonTokenizer, build_encoder
    from moon_rec.encoders.base import images_to_tensor, matryoshka
    from pipelines.embed import EmbedJobConfig, run_embed_job

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=512, help="catalog items")
    p.add_argument("--loop-n", type=int, default=128, help="items for the one-at-a-time loop")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="a tiny encoder (smoke runs)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
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
        t0 = time.perf_counter()
        manifest = run_embed_job(
            world,
            ckpt,
            Path(tmp) / "emb",
            EmbedJobConfig(
                batch_size=args.batch_size, part_rows=max(args.batch_size, 1024), progress=False
            ),
        )
        job_s = time.perf_counter() - t0
        assert manifest["n_items"] == args.n
        # loop: the same work, one item per encoder call
        model = MoonEncoder.from_pretrained(ckpt)
        items = pq.read_table(world / "items.parquet").slice(0, args.loop_n)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for title, data in zip(
                items.column("title").to_pylist(), items.column("image").to_pylist(), strict=True
            ):
                img = images_to_tensor([np.array(decode_image(data))], cfg.image_size)
                x = model.encode_product([title], img)
                for d in model.dims:
                    matryoshka(x, d).numpy()
        loop_s = time.perf_counter() - t0
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
                "threads": args.threads,
                "job_items_per_s": round(job_rate, 1),
                "job_seconds_incl_checkpoint_load_and_parquet": round(job_s, 2),
                "loop_items_per_s": round(loop_rate, 1),
                "speedup": round(job_rate / loop_rate, 2),
                "loadavg": os.getloadavg()[0],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

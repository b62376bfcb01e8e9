"""What a pretrained image tower buys (issue 26): one world, one training set, several
encoder versions through the same loop, one table.

    python -m benchmarks.pretrained_towers --root runs/pt --world-seed 0 \
        --lite0 data/pretrained/efficientnet-lite0-57934424.pth \
        --minilm data/pretrained/all-MiniLM-L6-v2 --rows scratch lite0 lite0_top lite0_minilm \
        --ranker-seeds 0 1 2

Rows (``ROWS``; each 250 pretraining + 3,500 stage-1 + 150 stage-2 steps):

- ``scratch``: today's tower (conv stem + ViT, random init), ``configs/encoder/small.yaml``.
- ``lite0``: ``configs/encoder/small_pretrained.yaml`` on ``--lite0``: ImageNet
  EfficientNet-Lite0 at 64 px, the stem and stages 4-5 pooled by mean and std, frozen in
  every stage, its features cached per photo (``FrozenTrunkCache``) over 4 fixed
  user-photo views per catalog photo.
- ``lite0_top``: the same, the top block trained (block 10, the last of stage 5:
  ``frozen_image_blocks: 11``, the stem and blocks 0-9 frozen and cached) at
  ``image_tower_lr`` 1e-4 (5e-5 in stage 2).
- ``lite0_minilm``: ``lite0`` beside the all-MiniLM-L6-v2 text tower (frozen, its pooled
  output cached per text), instead of the SigLIP text transformer trained from scratch on
  the catalog tokenizer.

Per row: the encoder, image-search recall per stage (``moon recall``), the style probe of
the 64-d image vector (``benchmarks/look_layers.py``: linear R^2 of the 8-d oracle style,
pattern / shape accuracy), the catalog embedding, the query embeddings, and per ranker seed
``moon ranker compare`` of ``din_ids`` (the baseline), ``cube_moon`` and ``cube_moon_look``
with the world's perfect look vectors (content share); the ID baseline and the runs on
perfect look vectors do not depend on the encoder and are reused across rows (``--reuse``).
Steps are the loop's (``moon_rec.loop.run_steps``): a second run skips what is done, a
killed one resumes. Prints the table as JSON (``ROOT/s<seed>/table.json``), with each
row's exchange-rate point (recall@10 -> cube_moon AUC, against ``scratch``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from moon_rec.loop import (
    GENERATE_WORLD,
    RANKER_EXPERIMENTS,
    TRAINING_SET,
    Layout,
    Step,
    command_step,
    embed_step,
    encoder_step,
    feature_tables_step,
    recall_step,
    run_steps,
    training_features,
    training_set_step,
    world_steps,
)
from moon_rec.metrics.exchange import metric_exchange
from moon_rec.ranking.commands import EmbedQueries, RankerCompare, StyleEmbeddings

EXPERIMENTS = ["din_ids", "cube_moon", "cube_moon_look"]
STAGES = ("pretrain", "stage1", "stage2")


def row_recipe(row: str, minilm: Path) -> tuple[str, list[str]]:
    """The encoder recipe (``configs/encoder/<name>.yaml``) and overrides of a table row;
    every row but ``scratch`` starts from the image tower given to ``encoder_step``."""
    if row == "scratch":
        return "small", []
    if row == "lite0":
        return "small_pretrained", []
    if row == "lite0_top":
        return "small_pretrained", [f"{s}.frozen_image_blocks={TOP_FROZEN}" for s in STAGES] + [
            "pretrain.image_tower_lr=1e-4", "stage1.image_tower_lr=1e-4",
            "stage2.image_tower_lr=5e-5"]
    if row == "lite0_minilm":
        return "small_pretrained", [f"encoder.text_tower={minilm}"] + [
            f"{s}.text_tower_lr=0" for s in STAGES]
    raise ValueError(f"unknown row {row!r} ({', '.join(ROWS)})")


ROWS = ("scratch", "lite0", "lite0_top", "lite0_minilm")
# lite0_top: the stem and EfficientNet-Lite0's blocks 0-9 frozen (cached), its block 10 (the
# last of stage 5, the highest pooled stage) trained. Training stages 4-5 whole
# (frozen_image_blocks 6) ran at ~64 pairs/s on the 2-core machine: ~2 h for stage 1 alone.
TOP_FROZEN = 11


def _probe_step(name: str, world: Path, ckpt: Path, out: Path, dep: str) -> Step:
    def run() -> None:
        res = subprocess.run([sys.executable, "-m", "benchmarks.look_layers", "--world",
                              str(world), "--encoder", str(ckpt)],
                             check=True, capture_output=True, text=True)
        out.write_text(res.stdout)

    return Step(name, out, run, {"checkpoint": str(ckpt)}, (dep,),
                command=f"python -m benchmarks.look_layers --world {world} --encoder {ckpt}")


def _compare_step(name: str, cmd: RankerCompare, keep: Path, dep: str) -> Step:
    def run() -> None:
        if cmd.run():
            raise RuntimeError(f"{name}: `{cmd.shell()}` failed")
        shutil.copy(cmd.out / "compare.json", keep)

    return Step(name, keep, run, {"experiments": cmd.experiments, "seed": cmd.seed}, (dep,),
                commands=(cmd,), command=cmd.shell())


def build(root: Path, world_seed: int, rows: list[str], ranker_seeds: list[int], lite0: Path,
          minilm: Path, threads: int, look_rows: list[str] | None = None,
          rankers_dir: str = "rankers") -> list[Step]:
    """The steps; ``look_rows``: the rows that also train ``cube_moon_look`` (its look head
    is most of a seed's time; default all); ``rankers_dir``: where the rankers of all rows
    go (``ROOT/<rankers_dir>/seed<k>``, one per invocation)."""
    base = Layout.at(root)
    steps = [s for s in world_steps(base, "small", world_seed) if s.name == GENERATE_WORLD]
    steps += [feature_tables_step(base),
              training_set_step(base, features=training_features(EXPERIMENTS))]
    style = base.rankers / "style_embeddings"
    steps.append(command_step("style embeddings", style / "items.parquet",
                              [StyleEmbeddings(world=base.world, out=style)],
                              deps=(GENERATE_WORLD,)))
    def rankers(row: str, seed: int) -> Step:
        lay = Layout.at(root / row, world=base.world)
        cmd = RankerCompare(
            training_set=base.training_set, embeddings=lay.embeddings,
            query_embeddings=lay.query_embeddings, world=base.world,
            config=RANKER_EXPERIMENTS, seed=seed,
            experiments=EXPERIMENTS if look_rows is None or row in look_rows else EXPERIMENTS[:2],
            out=root / rankers_dir / f"seed{seed}", reuse=True,
            style_embeddings=style / "items.parquet", quiet=True)
        return _compare_step(f"{row}: rankers seed {seed}", cmd,
                             lay.file(f"compare-seed{seed}.json"), f"{row}: query embeddings")

    for row in rows:  # each row whole with the first ranker seed: the table fills row by row
        lay = Layout.at(root / row, world=base.world)
        recipe, overrides = row_recipe(row, minilm)
        enc = encoder_step(lay, recipe, threads=threads, overrides=overrides, progress=False,
                           image_tower=None if row == "scratch" else lite0)
        enc_name = f"{row}: {enc.name}"
        steps.append(replace(enc, name=enc_name))
        for s in (recall_step(lay, threads=threads, encoder_dep=enc_name),
                  embed_step(lay, encoder_dep=enc_name)):
            steps.append(replace(s, name=f"{row}: {s.name}"))
        steps.append(_probe_step(f"{row}: style probe", base.world, lay.checkpoint,
                                 lay.file("look_layers.json"), enc_name))
        steps.append(command_step(
            f"{row}: query embeddings", lay.query_embeddings,
            [EmbedQueries(training_set=base.training_set, checkpoint=lay.checkpoint,
                          out=lay.query_embeddings)], {}, (TRAINING_SET, enc_name),
            clean=(lay.query_embeddings,)))
        steps.append(rankers(row, ranker_seeds[0]))
    steps += [rankers(row, seed) for seed in ranker_seeds[1:] for row in rows]
    return steps


def table(root: Path, rows: list[str], ranker_seeds: list[int]) -> dict[str, Any]:
    """The filled table (what each row has so far)."""
    out: dict[str, Any] = {}
    for row in rows:
        d = root / row
        rec: dict[str, Any] = {}
        recall = d / "recall.json"
        if recall.is_file():
            r = json.loads(recall.read_text())
            rec["recall"] = {k: r.get(k) for k in r if str(k).startswith("recall")}
            rec["recall_raw"] = r
        probe = d / "look_layers.json"
        if probe.is_file():
            p = json.loads(probe.read_text())
            ck = next(v for k, v in p.items() if isinstance(v, dict) and "image_64" in v)
            rec["style_probe_64"] = {"image": ck["image_64"], "product": ck["product_64"]}
        summ = d / "encoder" / "stage1" / "summary.json"
        rec["train_s"] = sum(json.loads((d / "encoder" / s / "summary.json").read_text())
                             ["seconds"] for s in STAGES
                             if (d / "encoder" / s / "summary.json").is_file())
        if summ.is_file():
            s1 = json.loads(summ.read_text())
            rec["frozen_image_cache"] = s1.get("frozen_image_cache")
            rec["frozen_text_cache"] = s1.get("frozen_text_cache")
        seeds: dict[str, Any] = {}
        for seed in ranker_seeds:
            f = d / f"compare-seed{seed}.json"
            if f.is_file():
                seeds[str(seed)] = json.loads(f.read_text())
        rec["rankers"] = seeds
        out[row] = rec
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--ranker-seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--lite0", type=Path, default=Path("data/pretrained/efficientnet-lite0-57934424.pth"))
    p.add_argument("--minilm", type=Path, default=Path("data/pretrained/all-MiniLM-L6-v2"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--look-rows", nargs="*", default=None, choices=ROWS,
                   help="only these rows also train cube_moon_look (default: all)")
    p.add_argument("--state", default="state",
                   help="the run record ROOT/s<seed>/<STATE>.json (two invocations on one "
                   "world: different rows, different records)")
    p.add_argument("--table-only", action="store_true", help="print what is there, run nothing")
    args = p.parse_args(argv)
    root = (args.root / f"s{args.world_seed}").resolve()
    lite0, minilm = args.lite0.resolve(), args.minilm.resolve()
    if not args.table_only:
        run_steps(build(root, args.world_seed, args.rows, args.ranker_seeds, lite0, minilm,
                        args.threads, args.look_rows,
                        "rankers" if args.state == "state" else f"rankers-{args.state}"),
                  root / f"{args.state}.json",
                  label="pretrained_towers")
    result = {"world_seed": args.world_seed, "rows": table(root, args.rows, args.ranker_seeds)}
    pts = {}
    for row, rec in result["rows"].items():
        aucs = [float(s["rows"]["cube_moon"]["auc"]) for s in rec["rankers"].values()]
        r10 = rec.get("recall_raw", {}).get("recall@10")
        if aucs and r10 is not None:
            pts[row] = {"recall@10": r10, "auc": float(np.mean(aucs))}
    if "scratch" in pts and len(pts) > 1:
        result["exchange"] = metric_exchange(pts, "recall@10", "scratch")
    (root / "table.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

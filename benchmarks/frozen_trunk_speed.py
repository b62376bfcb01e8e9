"""The CPU cost of a pretrained image tower's training step (issue 26's budget): median
seconds per stage-1 step (the small recipe's batch and mix) of the scratch tower (the
same-run baseline) against EfficientNet-Lite0 frozen without the cache, frozen with the
cache cold (its first pass over the photos) and warm (every photo seen: what most of a
long run is), beside the frozen all-MiniLM-L6-v2 text tower with its pooled output uncached,
cached cold and warm (the trunk's cache warm in all three), partly unfrozen (the top block
trained above the cached stem and blocks, as ``pretrained_towers``' ``lite0_top``; cold and
warm), and frozen at 128 px; plus the frozen trunk's forward at 64 px in bf16 against fp32
(speed, and how far its features move).

    python -m benchmarks.frozen_trunk_speed --world WORLD \
        --lite0 data/pretrained/efficientnet-lite0-57934424.pth \
        --minilm data/pretrained/all-MiniLM-L6-v2 --steps 30

Each variant runs ``train_stage`` for ``--steps`` steps in this process, one torch thread
(the recipe's); the first 3 steps are left out of the median. A warm variant repeats the
cold one's steps (same seed, the same photos) with the process's cache already filled.
Prints JSON: per variant the median step seconds and its ratio to the scratch tower's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.pretrained_towers import TOP_FROZEN


def variants(minilm: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (encoder recipe, overrides): the scratch tower's ``small``, and
    ``small_pretrained`` (Lite0 frozen at 64 px, stages 0/4/5, 4 views) and its variations.
    A warm variant follows its cold one: the same steps again, the process's cache filled.
    The MiniLM variants follow the frozen trunk's warm one, so only the text side differs."""
    top = [f"stage1.frozen_image_blocks={TOP_FROZEN}", "stage1.image_tower_lr=1e-4"]
    text = [f"encoder.text_tower={minilm}", "stage1.text_tower_lr=0"]
    return {
        "scratch": ("small", []),
        "lite0_frozen_nocache": ("small_pretrained", ["stage1.cache_frozen_image=false"]),
        "lite0_frozen_cache_cold": ("small_pretrained", []),
        "lite0_frozen_cache_warm": ("small_pretrained", []),
        "lite0_minilm_frozen_text_nocache": ("small_pretrained",
                                             [*text, "stage1.cache_frozen_text=false"]),
        "lite0_minilm_frozen_text_cache_cold": ("small_pretrained", text),
        "lite0_minilm_frozen_text_cache_warm": ("small_pretrained", text),
        "lite0_top_cache_cold": ("small_pretrained", top),
        "lite0_top_cache_warm": ("small_pretrained", top),
        "lite0_frozen_128px_nocache": ("small_pretrained", ["encoder.image_resolution=128",
                                                            "stage1.cache_frozen_image=false"]),
    }


def step_seconds(world: Any, recipe: str, overrides: list[str], lite0: Path, steps: int,
                 out: Path) -> dict[str, Any]:
    from moon_rec.training.commands import encoder_config
    from moon_rec.training.trainer import train_stage

    config = encoder_config(recipe, None, [*overrides, f"stage1.steps={steps}",
                                           "stage1.log_every=1",
                                           f"stage1.checkpoint_every={steps + 1}",
                                           "stage1.warmup_steps=1"],
                            image_tower=None if recipe == "small" else lite0)
    t0 = time.perf_counter()
    summary = train_stage(world, "stage1", config, out, progress=False, resume=False)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    batch = config.stage1.batch_size
    per_step = [batch / r["pairs_per_s"] for r in rows if r["step"] > 3]
    return {"median_step_s": round(float(np.median(per_step)), 4), "steps": len(per_step),
            "wall_s": round(wall, 1), "frozen_image_cache": summary.get("frozen_image_cache"),
            "frozen_text_cache": summary.get("frozen_text_cache")}


def bf16_forward(world: Any, lite0: Path, n: int = 256) -> dict[str, Any]:
    import torch

    from moon_rec.encoders.backbones import ImageTower

    tower = ImageTower.from_source(lite0, resolution=64, stages=(0, 4, 5)).eval()
    x = world.images[:n].float() / 255.0
    out: dict[str, Any] = {}
    with torch.no_grad():
        ref = tower(x)
        for name, ctx in (("fp32", torch.autocast("cpu", enabled=False)),
                          ("bf16", torch.autocast("cpu", dtype=torch.bfloat16))):
            with ctx:
                tower(x[:32])
                t0 = time.perf_counter()
                y = tower(x).float()
                out[f"{name}_ms_per_photo"] = round((time.perf_counter() - t0) / n * 1000, 3)
            out[f"{name}_rel_error"] = round(float((y - ref).norm() / ref.norm()), 5)
    out["bf16_speedup"] = round(out["fp32_ms_per_photo"] / out["bf16_ms_per_photo"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from moon_rec.training.data import load_world

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--lite0", type=Path,
                   default=Path("data/pretrained/efficientnet-lite0-57934424.pth"))
    p.add_argument("--minilm", type=Path, default=Path("data/pretrained/all-MiniLM-L6-v2"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--only", nargs="*", default=None, help="variant names")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    world = load_world(args.world)
    result: dict[str, Any] = {"world": str(args.world), "steps": args.steps, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (recipe, keys) in variants(args.minilm.resolve()).items():
            if args.only and name not in args.only:
                continue
            result["variants"][name] = step_seconds(world, recipe, keys, args.lite0, args.steps,
                                                    Path(tmp) / name)
            print(name, result["variants"][name], flush=True)
    base = result["variants"].get("scratch", {}).get("median_step_s")
    for v in result["variants"].values():
        v["vs_scratch"] = round(v["median_step_s"] / base, 2) if base else None
    result["lite0_forward_64px"] = bf16_forward(world, args.lite0.resolve())
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ranker training speed by feature spec, against a baseline source tree, in one run.

    python benchmarks/ranker_spec_speed.py --training-set T --embeddings E \
        --baseline-src DIR [--experiments din_ids din_full] [--baseline-experiment din_ids] \
        [--max-steps 300] [--repeats 3] [--out DIR]

Every repeat trains, one after the other and alone, each experiment of ``--experiments``
with this tree's code, and ``--baseline-experiment`` with the code of ``--baseline-src``
(a checkout of an earlier commit: ``git worktree add --detach DIR <commit>``), each a fresh
``moon ranker train --no-resume --max-steps N`` process on the same training set. The
figure is the trainer's own ``examples_per_s`` (meta.json: examples of the steps run over
the wall time of the training loop, checkpoint writes included; data loading and model
construction excluded), the median over repeats. Ratios are against the baseline's median:
``ids / baseline`` is "training on the ``ids`` spec vs before the spec existed"
(issue 24: within 10%).

Prints one JSON object (also ``DIR/ranker_spec_speed.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = "configs/ranker/experiments.yaml"


def train_once(src: Path, experiment: str, args: argparse.Namespace, out: Path) -> float:
    """One ``moon ranker train`` with the code of ``src``; its examples/s."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-c", "from moon_rec.cli import main; raise SystemExit(main())",
           "ranker", "train", "--training-set", str(args.training_set),
           "--config", str(src / EXPERIMENTS), "--experiment", experiment,
           "--out", str(out), "--no-resume", "--max-steps", str(args.max_steps),
           "--device", "cpu", "--quiet"]
    if args.embeddings:
        cmd += ["--embeddings", str(args.embeddings)]
    if args.query_embeddings:
        cmd += ["--query-embeddings", str(args.query_embeddings)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=src)
    if done.returncode != 0:
        raise SystemExit(f"{experiment} ({src}) failed:\n{done.stderr[-3000:]}")
    meta = json.loads((out / "meta.json").read_text())
    rate = meta.get("examples_per_s")
    if not rate:
        raise SystemExit(f"{out / 'meta.json'} has no examples_per_s")
    return float(rate)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--training-set", type=Path, required=True)
    p.add_argument("--embeddings", type=Path)
    p.add_argument("--query-embeddings", type=Path)
    p.add_argument("--baseline-src", type=Path, required=True,
                   help="source tree of the baseline commit")
    p.add_argument("--experiments", nargs="+", default=["din_ids", "din_full"])
    p.add_argument("--baseline-experiment", default="din_ids")
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if not (args.baseline_src / EXPERIMENTS).is_file():
        p.error(f"--baseline-src {args.baseline_src}: no {EXPERIMENTS} (not a moon_rec tree)")
    work = Path(tempfile.mkdtemp(prefix="spec-speed-"))
    runs: dict[str, list[float]] = {"baseline": [], **{e: [] for e in args.experiments}}
    try:
        for r in range(args.repeats):
            runs["baseline"].append(train_once(args.baseline_src, args.baseline_experiment,
                                               args, work / "baseline"))
            for e in args.experiments:
                runs[e].append(train_once(ROOT, e, args, work / e))
            print(f"repeat {r + 1}/{args.repeats}: "
                  + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in runs.items()), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(runs["baseline"])
    report = {
        "benchmark": "ranker_spec_speed",
        "training_set": str(args.training_set),
        "baseline_src": str(args.baseline_src),
        "baseline_experiment": args.baseline_experiment,
        "max_steps": args.max_steps,
        "repeats": args.repeats,
        "examples_per_s": {k: v for k, v in runs.items()},
        "median_examples_per_s": {k: round(statistics.median(v), 1) for k, v in runs.items()},
        "ratio_to_baseline": {e: round(statistics.median(runs[e]) / base, 3)
                              for e in args.experiments},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_end": os.getloadavg()},
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ranker_spec_speed.json").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

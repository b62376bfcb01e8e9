"""CPU contention: encoder training steps/s alone vs next to another 2-thread torch job.

The subject is an encoder-like training loop: the ``small`` preset's dual-tower encoder
(tokenizer trained on synthetic titles); one step = ``encode_product`` on B titles +
64x64 images and ``encode_image`` on B photos, Matryoshka InfoNCE, AdamW. A rival is the
same loop in another process with 2 threads, training without pause while it is let run.

OpenMP reads its wait policy once, when torch loads it, so every setting is its own
process. Every worker starts once (start-up is not measured); a subject measures when
asked, a rival is paused (SIGSTOP) outside the conditions it takes part in. Subjects:

- ``spin``: 2 threads, OpenMP's default wait policy (libgomp spins ~300k iterations at
  every barrier before it sleeps), torch imported before moon_rec: the trainer before
  ``moon_rec.runtime``;
- ``passive``: ``runtime.configure_cpu()`` (which ``import moon_rec`` runs) before torch is
  imported, then 2 threads: idle threads sleep at once (``OMP_WAIT_POLICY=PASSIVE``);
- ``late``: torch imported first (the policy stays spinning), then
  ``runtime.set_threads(2)``, which cuts the threads to the cores the load average leaves;
- ``one_thread``: 1 thread, no barrier to wait at.

Rivals: ``spin`` (a foreign job with the default policy) and ``passive`` (another moon job
with the fix). Conditions are interleaved over ``--repeats`` rounds; the machine may be
shared, so the JSON has medians, every run and the load average. Prints one JSON object.

    python benchmarks/cpu_contention.py --seconds 8 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES = ("spin", "passive", "late", "one_thread")
# name: (subject mode, rival mode or None)
CONDITIONS: dict[str, tuple[str, str | None]] = {
    "spin/alone": ("spin", None),
    "spin/vs_spin": ("spin", "spin"),
    "passive/alone": ("passive", None),
    "passive/vs_spin": ("passive", "spin"),
    "passive/vs_passive": ("passive", "passive"),
    "late/vs_spin": ("late", "spin"),
    "one_thread/alone": ("one_thread", None),
    "one_thread/vs_spin": ("one_thread", "spin"),
}
DEFAULT = ",".join(CONDITIONS)


def _training_step(batch_size: int) -> Callable[[int], None]:
    """A function running training step k of the small encoder on synthetic products."""
    import torch

    from moon_rec.encoders import MoonTokenizer, build_encoder
    from moon_rec.training.config import load_config
    from moon_rec.training.losses import info_nce, matryoshka_loss

    cfg = load_config("small").encoder
    colours = ["red", "blue", "green", "black", "white", "beige"]
    kinds = ["dress", "shirt", "sneaker", "bag", "lamp", "mug", "jacket"]
    titles = [f"{colours[i % 6]} {kinds[(i // 6) % 7]} pattern {i % 11} brand {i % 17}"
              for i in range(512)]
    enc = build_encoder(cfg, MoonTokenizer.train(titles, vocab_size=cfg.vocab_size))
    enc.train()
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, cfg.image_size, cfg.image_size, generator=g)
    photos = (images + 0.1 * torch.rand(images.shape, generator=g)).clamp(0, 1)

    def step(k: int) -> None:
        t = [titles[(k * batch_size + i) % len(titles)] for i in range(batch_size)]
        loss = matryoshka_loss(enc.encode_image(photos), enc.encode_product(t, images),
                               cfg.dims, info_nce, temperature=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def worker(mode: str, batch_size: int, rival: bool) -> None:
    """A subject answers each ``run SECONDS`` line on stdin with one JSON line (steps/s,
    threads, CPU-time split); a rival trains until killed."""
    sys.path.insert(0, str(ROOT))
    os.environ.pop("OMP_WAIT_POLICY", None)  # before torch loads OpenMP
    os.environ.pop("OMP_NUM_THREADS", None)
    if mode == "passive":
        from moon_rec import runtime  # (importing moon_rec already does this)

        runtime.configure_cpu()
    # the other modes load torch (and OpenMP) before moon_rec: the default, spinning policy
    import torch

    from moon_rec import runtime

    if mode == "late":
        runtime.set_threads(2)
    else:
        torch.set_num_threads(1 if mode == "one_thread" else 2)  # exactly, no load-based cut
    step = _training_step(batch_size)
    step(0)
    print("ready", flush=True)
    k = 1
    if rival:
        while True:
            step(k)
            k += 1
    for line in sys.stdin:
        seconds = float(line.split()[1])
        step(k)  # warm the caches again after the pause
        t0, c0 = time.perf_counter(), os.times()
        steps = 0
        while time.perf_counter() - t0 < seconds:
            step(k + steps)
            steps += 1
        k += steps + 1
        wall, c1 = time.perf_counter() - t0, os.times()
        user, system = c1.user - c0.user, c1.system - c0.system
        print(json.dumps({"steps_per_s": steps / wall, "steps": steps,
                          "threads": torch.get_num_threads(),
                          "wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                          "cpu_per_wall": (user + system) / wall,
                          "system_share": system / max(user + system, 1e-9)}), flush=True)


class Worker:
    """One worker process, started once (its start-up is not measured)."""

    def __init__(self, mode: str, batch_size: int, rival: bool) -> None:
        cmd = [sys.executable, __file__, "--worker", mode, "--batch-size", str(batch_size)]
        if rival:
            cmd.append("--rival")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"worker {self.proc.args!r} failed to start")

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def measure(self, seconds: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"run {seconds}\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return result

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--conditions", default=DEFAULT, help=f"of: {', '.join(CONDITIONS)}")
    p.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--rival", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.batch_size, args.rival)
        return 0
    names = [c for c in args.conditions.split(",") if c]
    unknown = set(names) - set(CONDITIONS)
    if unknown:
        p.error(f"unknown conditions {sorted(unknown)} (known: {', '.join(CONDITIONS)})")
    t0 = time.time()
    subjects = {m: Worker(m, args.batch_size, rival=False)
                for m in sorted({CONDITIONS[n][0] for n in names})}
    rivals = {m: Worker(m, args.batch_size, rival=True)
              for m in sorted({CONDITIONS[n][1] or "" for n in names} - {""})}
    runs: dict[str, list[dict[str, Any]]] = {}
    load: list[float] = []
    try:
        for w in [*subjects.values(), *rivals.values()]:
            w.wait_ready()
        for w in rivals.values():
            w.pause()
        load.append(os.getloadavg()[0])
        for _ in range(args.repeats):  # interleaved: a drift in the machine's load hits all
            for name in names:
                subject, rival = CONDITIONS[name]
                if rival is not None:
                    rivals[rival].resume()
                    time.sleep(1.0)  # the rival back in its loop
                runs.setdefault(name, []).append(subjects[subject].measure(args.seconds))
                if rival is not None:
                    rivals[rival].pause()
                load.append(os.getloadavg()[0])
    finally:
        for w in [*subjects.values(), *rivals.values()]:
            w.stop()
    results: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        sps = [r["steps_per_s"] for r in rs]
        results[name] = {
            "steps_per_s_median": round(statistics.median(sps), 3),
            "steps_per_s": [round(s, 3) for s in sps],
            "threads": [r["threads"] for r in rs],
            "wait_policy": rs[-1]["wait_policy"],
            "system_share_median": round(statistics.median(r["system_share"] for r in rs), 3),
            "cpu_per_wall_median": round(statistics.median(r["cpu_per_wall"] for r in rs), 2),
        }
    for name, r in results.items():  # slowdown against the same subject alone
        alone = results.get(name.split("/")[0] + "/alone")
        if alone is not None and name != name.split("/")[0] + "/alone" and r["steps_per_s_median"]:
            r["slowdown_vs_alone"] = round(alone["steps_per_s_median"] / r["steps_per_s_median"], 2)
    print(json.dumps({
        "benchmark": "cpu_contention",
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "seconds_per_run": args.seconds,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "wall_s": round(time.time() - t0, 1),
        "load_average_1min": {"min": round(min(load), 2), "max": round(max(load), 2),
                              "samples": [round(x, 2) for x in load]},
        "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

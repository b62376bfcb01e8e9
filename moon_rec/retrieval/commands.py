"""``moon eval recall`` as a request (:mod:`moon_rec.command`), run by the CLI and by the
loop's recall step alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from moon_rec.command import MoonCommand, write_json


class Recall(MoonCommand):
    """``moon eval recall``: image-search recall@1/10/100 per Matryoshka dim, text recall
    and the category probe of a checkpoint, with the untrained-encoder and colour-histogram
    baselines in the same run (unless ``no_baselines``); the JSON is written to every
    ``out`` (repeatable) and printed as a table (or as JSON with ``as_json``)."""

    words = ("eval", "recall")
    flags: ClassVar[dict[str, str]] = {"as_json": "--json"}
    repeated: ClassVar[frozenset[str]] = frozenset({"out"})
    code = ("moon_rec.retrieval.recall",)

    world: Path
    checkpoint: Path
    as_json: bool = False
    out: list[Path] = Field(default_factory=list)
    no_baselines: bool = False
    threads: int = 1
    batch_size: int = 256

    def run(self) -> int:
        from moon_rec import runtime
        from moon_rec.retrieval.recall import evaluate_checkpoint

        runtime.set_threads(self.threads)
        result = evaluate_checkpoint(self.world, self.checkpoint,
                                     baselines=not self.no_baselines, batch_size=self.batch_size)
        for path in self.out:
            write_json(path, result)
        if self.as_json:
            print(json.dumps(result, indent=2))
            return 0
        rows = [("model", result), *list(result.get("baselines", {}).items())]
        print(f"{'':18s} {'R@1':>6s} {'R@10':>6s} {'R@100':>6s} {'text@10':>8s} {'probe':>6s}")
        for name, r in rows:
            if r is None:  # a baseline that could not run here
                print(f"{name:18s} {'n/a':>6s}")
                continue
            cells = [r.get(k) for k in ("recall@1", "recall@10", "recall@100", "text_recall@10",
                                        "probe_acc")]
            # None: "n/a" (image metrics of a text-only world, no text queries)
            print(f"{name:18s} " + " ".join(f"{'n/a' if v is None else f'{v:.3f}':>{w}s}"
                                            for v, w in zip(cells, (6, 6, 6, 8, 6), strict=True)))
        return 0

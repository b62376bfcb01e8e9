"""The ranker's batch ``moon`` commands as requests (:mod:`moon_rec.command`): ``moon
ranker embed-queries | style-embeddings | compare``, run by the CLI and by the loop's
steps alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from moon_rec.command import MoonCommand

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "ranker" / "experiments.yaml"


class EmbedQueries(MoonCommand):
    """``moon ranker embed-queries``: the training set's query texts encoded by the encoder
    at ``checkpoint`` (CUBE's s_q) into the parquet file ``out``."""

    words = ("ranker", "embed-queries")
    code = ("moon_rec.ranking.queries",)

    training_set: Path
    checkpoint: Path
    out: Path
    batch_size: int = 256

    def run(self) -> int:
        from moon_rec.ranking.queries import write_query_embeddings

        out = write_query_embeddings(self.training_set, self.checkpoint, self.out,
                                     self.batch_size)
        print(json.dumps({"out": str(out)}))
        return 0


class StyleEmbeddings(MoonCommand):
    """``moon ranker style-embeddings``: a synthetic world's perfect look vectors (its
    hidden ``oracle_style``, plus ``noise``; ``style_noise`` blurs the style itself) as an
    embedding table ``out/items.parquet``, for ``moon ranker compare --style-embeddings``
    (each content ranker's content share). A world without that truth is an error."""

    words = ("ranker", "style-embeddings")
    code = ("moon_rec.ranking.diagnostics",)

    world: Path
    out: Path
    noise: float = 0.05
    style_noise: float = 0.0

    def run(self) -> int:
        from moon_rec.ranking.diagnostics import has_style_truth, write_oracle_style_embeddings

        if not has_style_truth(self.world):
            raise ValueError(f"{self.world}: its items carry no oracle_style (only a synthetic "
                             "world knows the look that drives its clicks)")
        path = write_oracle_style_embeddings(self.world, self.out, noise=self.noise,
                                             style_noise=self.style_noise)
        print(json.dumps({"out": str(path)}))
        return 0


class RankerCompare(MoonCommand):
    """``moon ranker compare``: train and evaluate each experiment of ``config`` (the first
    is the baseline) into ``out/<id>`` and ``out/compare.json``, with the gap closed when
    ``world`` gives the oracle AUC."""

    words = ("ranker", "compare")
    flags: ClassVar[dict[str, str]] = {"as_json": "--json"}
    code = ("moon_rec.ranking.compare",)

    training_set: Path
    embeddings: Path
    query_embeddings: Path | None = None
    world: Path | None = None
    config: Path = DEFAULT_CONFIG
    experiments: list[str] = Field(default_factory=lambda: ["din_ids", "cube_moon", "sim_moon"])
    seed: int | None = None
    reuse: bool = False
    style_embeddings: Path | None = None
    out: Path
    as_json: bool = False
    quiet: bool = False

    def run(self) -> int:
        from moon_rec.ranking.compare import compare_rankers, format_table

        result = compare_rankers(self.training_set, self.embeddings, self.config, self.out,
                                 experiments=tuple(self.experiments), world=self.world,
                                 query_embeddings=self.query_embeddings, seed=self.seed,
                                 progress=not self.quiet, reuse=self.reuse,
                                 style_embeddings=self.style_embeddings)
        print(json.dumps(result, sort_keys=True) if self.as_json else format_table(result))
        return 0

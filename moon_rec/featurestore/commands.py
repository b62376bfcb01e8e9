"""The representation center's batch ``moon`` commands as requests
(:mod:`moon_rec.command`): ``moon embed``, ``moon features build | publish |
training-set``, run by the CLI and by the loop's steps alike. ``summary``: also write the
JSON the command prints there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moon_rec.command import MoonCommand, write_json
from moon_rec.featurestore.layout import DEFAULT_SEQ_LEN
from moon_rec.featurestore.repo import DEFAULT_STATE_DIR


def _report(summary: Any, path: Path | None) -> None:
    if path is not None:
        write_json(path, summary)
    print(json.dumps(summary, indent=2, default=str))


class Embed(MoonCommand):
    """``moon embed``: the batch embedding job over the catalog (incremental, resumable,
    torchrun-sharded) into the embedding snapshot ``out``."""

    words = ("embed",)
    code = ("moon_rec.featurestore.embed_job",)

    world: Path
    checkpoint: Path
    out: Path
    batch_size: int = 64
    part_rows: int = 4096
    device: str | None = None
    precision: str = "auto"
    no_progress: bool = False
    summary: Path | None = None

    def run(self) -> int:
        from moon_rec.featurestore.embed_job import EmbedJobConfig, run_embed_job

        cfg = EmbedJobConfig(batch_size=self.batch_size, part_rows=self.part_rows,
                             progress=not self.no_progress, device=self.device,
                             precision=self.precision)
        summary = run_embed_job(self.world, self.checkpoint, self.out, cfg)
        _report(summary, self.summary)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # under torchrun
            dist.destroy_process_group()
        return 0


class FeaturesBuild(MoonCommand):
    """``moon features build``: the offline feature tables (behaviour sequences of length
    ``seq_len``, item attributes and counts) into ``out``."""

    words = ("features", "build")
    code = ("moon_rec.featurestore.feature_tables",)

    world: Path
    out: Path
    seq_len: int = DEFAULT_SEQ_LEN
    summary: Path | None = None

    def run(self) -> int:
        from moon_rec.featurestore.feature_tables import build_feature_tables

        _report(build_feature_tables(self.world, self.out, seq_len=self.seq_len), self.summary)
        return 0


class FeaturesPublish(MoonCommand):
    """``moon features publish``: record the data paths (``init``), register the
    definitions (``apply``), materialize the online store (``materialize``) and write the
    self-contained repository folder ``serving_repo`` (``moon serve --repo``), in one go;
    prints the materialize reports."""

    words = ("features", "publish")
    code = ("moon_rec.featurestore.repo",)

    data: Path
    embeddings: Path | None = None
    profile: str = "embedded"
    state: Path = DEFAULT_STATE_DIR
    project: str | None = None
    seq_len: int = DEFAULT_SEQ_LEN
    serving_repo: Path
    summary: Path | None = None

    def run(self) -> int:
        from moon_rec.featurestore.layout import FeatureDataPaths
        from moon_rec.featurestore.repo import publish_store

        if not self.data.is_dir():
            raise FileNotFoundError(f"feature data folder not found: {self.data}")
        paths = FeatureDataPaths.from_dir(self.data, self.embeddings)
        _repo, reports = publish_store(paths, self.state, self.serving_repo,
                                       profile=self.profile, project=self.project,
                                       seq_len=self.seq_len)
        _report(reports, self.summary)
        return 0


class TrainingSetBuild(MoonCommand):
    """``moon features training-set``: the point-in-time ranker training set through Feast
    (the feature tables in ``data``, built now when None)."""

    words = ("features", "training-set")
    code = ("moon_rec.featurestore.training_set",)

    world: Path
    out: Path
    data: Path | None = None
    profile: str = "embedded"
    seq_len: int = DEFAULT_SEQ_LEN
    features: str = "ids"
    summary: Path | None = None

    def run(self) -> int:
        from moon_rec.featurestore.training_set import build_training_set

        summary = build_training_set(self.world, self.out, data_dir=self.data,
                                     profile=self.profile, seq_len=self.seq_len,
                                     features=self.features)
        _report(summary, self.summary)
        return 0

"""Prepare everything the ranking service reads, from a world: the loop in one call.

    encoder checkpoint -> batch embeddings -> feature tables -> Feast (apply, materialize)
    -> point-in-time training set -> query embeddings -> trained ranker -> Feast repo dir

Each step is the library's own job (``moon_rec.featurestore.embed_job``, ``moon_rec.featurestore.feature_tables``,
``moon_rec.featurestore``, ``moon_rec.featurestore.training_set``, ``moon_rec.ranking``); this module
only composes them, for tests, benchmarks and a quick start:

    python -m serving.loop --world W --out S [--encoder C] [--profile embedded]
    moon serve --model S/ranker --repo S/repo

Without ``--encoder`` an *untrained* encoder is built from ``configs/encoder/tiny.yaml``
(its tokenizer trained on the catalog titles): fine for plumbing and latency, not quality.
"""

from __future__ import annotations

import argparse
import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
RANKER_CONFIGS = REPO_ROOT / "configs" / "ranker" / "experiments.yaml"
SERVING_PATHS = "paths.json"


@dataclass(frozen=True)
class ServingLoop:
    """Where ``prepare_serving_loop`` put things (all absolute)."""

    encoder: Path
    embeddings: Path
    feature_data: Path
    state: Path
    repo: Path
    training_set: Path
    query_embeddings: Path
    ranker: Path
    profile: str
    project: str

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def load(cls, out: str | Path) -> ServingLoop:
        """The loop written to ``out`` by ``prepare_serving_loop``."""
        d = json.loads((Path(out) / "serving_loop.json").read_text())
        text = {"profile", "project"}
        return cls(**{k: v if k in text else Path(v) for k, v in d.items()})  # type: ignore[arg-type]


def build_untrained_encoder(world: str | Path, out: str | Path, preset: str = "tiny") -> Path:
    """Save an untrained encoder of ``configs/encoder/<preset>.yaml`` (tokenizer trained on
    the world's titles, attributes and query texts) to ``out``; returns ``out``."""
    from moon_rec.data.io import read_table
    from moon_rec.encoders import MoonTokenizer, build_encoder
    from moon_rec.training.config import load_config

    cfg = load_config(preset)
    items = read_table(world, "items", columns=["title", "attributes"])
    texts = [t for t in items.column("title").to_pylist() if t]
    texts += [t for t in items.column("attributes").to_pylist() if t]
    beh = read_table(world, "behaviors", columns=["query_text"])
    texts += [t for t in beh.column("query_text").to_pylist() if t]
    tok = MoonTokenizer.train(texts, vocab_size=cfg.encoder.vocab_size)
    enc = build_encoder(cfg.encoder, tok).eval()
    enc.save_pretrained(out)
    return Path(out).resolve()


def write_feast_repo(
    repo: str | Path, profile: str, state: str | Path, project: str, data_paths: Any
) -> Path:
    """Write a Feast repository folder for ``profile`` whose registry / SQLite file live in
    ``state`` (absolute paths), plus ``paths.json`` (the offline data paths)."""
    from moon_rec.featurestore.store import build_repo_config, load_profile

    repo = Path(repo).resolve()
    repo.mkdir(parents=True, exist_ok=True)
    cfg = build_repo_config(profile, state, project=project)

    body = load_profile(profile)
    body["project"] = project
    reg = body.get("registry")
    if isinstance(reg, str):
        reg = {"path": reg}
    if isinstance(reg, dict) and reg.get("registry_type", "file") == "file":
        reg["path"] = str(Path(cfg.registry.path).resolve())
        body["registry"] = reg
    online = body.get("online_store") or {}
    if "path" in online:
        online["path"] = str(Path(state).resolve() / Path(online["path"]).name)
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    (repo / SERVING_PATHS).write_text(data_paths.to_json() + "\n")
    return repo


def publish_store(
    paths: Any,
    state: str | Path,
    repo: str | Path,
    *,
    profile: str = "embedded",
    project: str | None = None,
    seq_len: int = 50,
    model_version: str | None = None,
) -> Path:
    """Apply the definitions over ``paths`` to a store of ``profile`` (state in ``state``),
    materialize it and write its Feast repository folder ``repo``; returns ``repo``.

    Args:
        model_version: the embedding view's tag (default: the embed job's manifest).
    """
    from moon_rec.featurestore.layout import ITEM_ATTRIBUTES_VIEW, USER_BEHAVIOUR_VIEW
    from moon_rec.featurestore.materialize import materialize_embeddings, materialize_views
    from moon_rec.featurestore.store import open_store

    project = project or f"serve_{uuid.uuid4().hex[:10]}"
    mfs = open_store(
        profile, state, paths, project=project, seq_len=seq_len, model_version=model_version
    )
    materialize_embeddings(mfs)
    materialize_views(mfs, [ITEM_ATTRIBUTES_VIEW, USER_BEHAVIOUR_VIEW])
    return write_feast_repo(repo, profile, state, project, paths)


def prepare_serving_loop(
    world: str | Path,
    out: str | Path,
    *,
    encoder: str | Path | None = None,
    experiment: str = "cube_moon_tiny",
    profile: str = "embedded",
    project: str | None = None,
    train_overrides: dict[str, Any] | None = None,
    progress: bool = False,
) -> ServingLoop:
    """Run the loop on ``world`` into ``out`` (see the module docstring).

    Args:
        experiment: the ranker experiment of ``configs/ranker/experiments.yaml``.
        profile: the feature store profile the service will read.
        project: the Feast project (default: a fresh one).
        train_overrides: nested overrides of the experiment's config, e.g.
            ``{"train": {"epochs": 1}}`` (tests).
    """
    from moon_rec.featurestore.embed_job import EmbedJobConfig, run_embed_job
    from moon_rec.featurestore.feature_tables import build_feature_tables
    from moon_rec.featurestore.layout import FeatureDataPaths
    from moon_rec.featurestore.training_set import build_training_set
    from moon_rec.ranking.config import RankerConfig, _merge, load_ranker_config
    from moon_rec.ranking.queries import write_query_embeddings
    from moon_rec.ranking.train import train_ranker

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    project = project or f"serve_{uuid.uuid4().hex[:10]}"
    enc = Path(encoder).resolve() if encoder else build_untrained_encoder(world, out / "encoder")
    emb = out / "embeddings"
    run_embed_job(world, enc, emb, EmbedJobConfig(progress=progress))
    data = out / "feature_data"
    config = load_ranker_config(RANKER_CONFIGS, experiment)
    if train_overrides:
        config = RankerConfig.from_dict(_merge(config.to_dict(), train_overrides))
    build_feature_tables(world, data, seq_len=config.max_seq_len)
    paths = FeatureDataPaths.from_dir(data, emb)
    state = out / "state"
    repo = publish_store(
        paths, state, out / "repo", profile=profile, project=project, seq_len=config.max_seq_len
    )
    ts = out / "training_set.parquet"
    build_training_set(
        world, ts, data_dir=data, state_dir=out / "ts_state", profile="embedded",
        seq_len=config.max_seq_len,
    )
    queries = write_query_embeddings(ts, enc, out / "query_embeddings.parquet")
    ranker = out / "ranker"
    train_ranker(
        ts, config, ranker, embeddings=emb, query_embeddings=queries, progress=progress,
        resume=False,
    )
    loop = ServingLoop(
        encoder=enc, embeddings=emb, feature_data=data, state=state, repo=repo,
        training_set=ts, query_embeddings=Path(queries), ranker=ranker, profile=profile,
        project=project,
    )
    (out / "serving_loop.json").write_text(json.dumps(loop.as_dict(), indent=2) + "\n")
    return loop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--encoder", type=Path, default=None, help="MoonEncoder checkpoint")
    p.add_argument("--experiment", default="cube_moon_tiny")
    p.add_argument("--profile", default="embedded")
    p.add_argument("--project", default=None)
    args = p.parse_args(argv)
    loop = prepare_serving_loop(
        args.world, args.out, encoder=args.encoder, experiment=args.experiment,
        profile=args.profile, project=args.project, progress=True,
    )
    print(json.dumps(loop.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``moon serve``: the online ranking service (HTTP, FastAPI + uvicorn).

    moon serve --model RANKER_DIR --repo feature_repo [--encoder C] [--port 8000]
    moon serve --model M --repo feature_repo -f feature_repo/production/feature_store.yaml

Refuses to start (exit 2, naming both versions) when the ranker's embedding model_version
differs from the stored embeddings' or the encoder's.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from serving.app import create_app
    from serving.service import RankingService, ServiceConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = ServiceConfig(
        max_candidates=args.max_candidates,
        retrieve_k=args.retrieve_k,
        allow_unknown_users=args.allow_unknown_users,
        refresh_s=args.refresh_s,
        ann_kind=args.ann,
        threads=args.threads,
    )
    service = RankingService(
        args.model, args.repo, encoder=args.encoder, fs_yaml=args.feature_store_yaml,
        config=config,
    )
    service.start_refresher()
    info = service.info()
    print(
        f"moon serve: ranker {info['model_version']}, embeddings {info['embedding_version']}, "
        f"{info['items_in_center']} items in the center, http://{args.host}:{args.port}/docs",
        flush=True,
    )
    try:
        uvicorn.run(create_app(service), host=args.host, port=args.port,
                    log_level=args.log_level, access_log=False)
    finally:
        service.close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``moon serve``."""
    p = subparsers.add_parser("serve", help="the online ranking service (HTTP API)")
    p.add_argument("--model", type=Path, required=True, help="trained ranker directory")
    p.add_argument("--repo", type=Path, default=Path("feature_repo"),
                   help="Feast repository folder (default: feature_repo)")
    p.add_argument("-f", "--feature-store-yaml", type=Path, default=None,
                   help="another feature_store.yaml (e.g. the production profile's)")
    p.add_argument("--encoder", type=Path, default=None,
                   help="MOON encoder checkpoint (default: MODEL/encoder)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-candidates", type=int, default=1000)
    p.add_argument("--retrieve-k", type=int, default=100,
                   help="candidates retrieved by ANN when /rank has none")
    p.add_argument("--allow-unknown-users", action="store_true",
                   help="rank users without stored behaviour as cold users (default: 404)")
    p.add_argument("--refresh-s", type=float, default=30.0,
                   help="seconds between checks for a new embedding snapshot (0: never)")
    p.add_argument("--ann", default="auto", choices=["auto", "flat", "hnsw", "ivf_pq_rf"])
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=_cmd_serve)

"""``moon serve``: the online ranking service (HTTP, FastAPI + uvicorn).

    moon serve --model RANKER_DIR --repo feature_repo [--encoder C] [--port 8000]
    moon serve --model M --repo feature_repo -f feature_repo/production/feature_store.yaml
    MOON_WRITE_TOKEN=... moon serve --model M    # or --write-token-file FILE

Refuses to start (exit 2, naming both versions) when the ranker's embedding model_version
differs from the stored embeddings' or the encoder's, or when the write token is shorter
than 16 characters. Writes (``POST /items``, ``/behaviors``) need the write token; without
one they are refused. Reads are open to whoever reaches ``--host``: a host other than
loopback gets a warning saying so.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from moon_rec.data.errors import DataError

TOKEN_ENV = "MOON_WRITE_TOKEN"
GIL_SWITCH_S = 0.0005  # Python's default is 0.005
log = logging.getLogger("moon.serve")


def write_token(path: Path | None) -> str | None:
    """The write token: the first line of ``path`` (``--write-token-file``), else the
    ``MOON_WRITE_TOKEN`` environment variable, else None (writes refused)."""
    if path is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise DataError("empty write token file", file=str(path))
        return token
    return os.environ.get(TOKEN_ENV) or None


def exposure_warning(host: str, port: int, has_token: bool) -> str | None:
    """What an operator binding ``host`` should know, or None on loopback."""
    from serving.server import is_loopback

    if is_loopback(host):
        return None
    where = f"{host}:{port}"
    if not has_token:
        return (f"moon serve binds {where}, beyond loopback, and no credentials are set: "
                f"/rank, /search, /healthz and /metrics are open to anyone who can reach it "
                f"(POST /items and /behaviors are refused until a write token is set: "
                f"--write-token-file or {TOKEN_ENV})")
    return (f"moon serve binds {where}, beyond loopback: /rank, /search, /healthz and "
            f"/metrics are open to anyone who can reach it, and the write token travels "
            f"in plain HTTP (put an authenticating TLS proxy in front)")


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import SecretStr, ValidationError

    from serving.app import create_app
    from serving.server import header_timeout_protocol
    from serving.service import RankingService, ServiceConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = ServiceConfig(
            max_candidates=args.max_candidates,
            retrieve_k=args.retrieve_k,
            allow_unknown_users=args.allow_unknown_users,
            refresh_s=args.refresh_s,
            ann_kind=args.ann,
            threads=args.threads,
            workers=args.workers,
            write_workers=args.write_workers,
            max_queue=args.max_queue,
            header_timeout_s=args.header_timeout_s,
            max_image_pixels=args.max_image_pixels,
            max_image_side=args.max_image_side,
            max_image_aspect=args.max_image_aspect,
            write_token=SecretStr(token) if (token := write_token(args.write_token_file))
            else None,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]).replace("_", "-") if err["loc"] else "config"
        raise DataError(f"--{name}: {err['msg']}") from None
    # the convoy effect: a worker back from a store call (the GIL released) waits for the
    # GIL up to a switch interval per other busy thread, and a SQLite write transaction
    # makes several such calls while it holds the database's write lock, which the
    # other processes' writers wait on; a short interval keeps the transaction short
    sys.setswitchinterval(GIL_SWITCH_S)
    warning = exposure_warning(args.host, args.port, config.write_token is not None)
    if warning:
        log.warning(warning)
    service = RankingService(
        args.model, args.repo, encoder=args.encoder, fs_yaml=args.feature_store_yaml,
        config=config,
    )
    service.start_refresher()
    info = service.info()
    writes = "writes need the write token" if config.write_token else "writes refused (no token)"
    print(
        f"moon serve: ranker {info['model_version']}, embeddings {info['embedding_version']}, "
        f"{info['items_in_center']} items in the center, {config.workers} + "
        f"{config.write_workers} workers, {writes}, "
        f"http://{args.host}:{args.port}/docs",
        flush=True,
    )
    app = create_app(service)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                    access_log=False, http=header_timeout_protocol(config.header_timeout_s))
    finally:
        app.state.pool.close()
        app.state.write_pool.close()
        service.close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``moon serve``."""
    from serving.config import ServiceConfig

    d = ServiceConfig()
    p = subparsers.add_parser("serve", help="the online ranking service (HTTP API)")
    p.add_argument("--model", type=Path, required=True, help="trained ranker directory")
    p.add_argument("--repo", type=Path, default=Path("feature_repo"),
                   help="Feast repository folder (default: feature_repo)")
    p.add_argument("-f", "--feature-store-yaml", type=Path, default=None,
                   help="another feature_store.yaml (e.g. the production profile's)")
    p.add_argument("--encoder", type=Path, default=None,
                   help="MOON encoder checkpoint (default: MODEL/encoder)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default loopback; reads are open to whoever "
                        "reaches it)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--write-token-file", type=Path, default=None,
                   help=f"file whose first line is the bearer token POST /items and "
                        f"/behaviors need (default: ${TOKEN_ENV}; neither: writes refused)")
    p.add_argument("--max-candidates", type=int, default=d.max_candidates)
    p.add_argument("--retrieve-k", type=int, default=d.retrieve_k,
                   help="candidates retrieved by ANN when /rank has none")
    p.add_argument("--allow-unknown-users", action="store_true",
                   help="rank users without stored behaviour as cold users (default: 404)")
    p.add_argument("--refresh-s", type=float, default=d.refresh_s,
                   help="seconds between checks for a new embedding snapshot (0: never)")
    p.add_argument("--ann", default="auto", choices=["auto", "flat", "hnsw", "ivf_pq_rf"])
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    p.add_argument("--workers", type=int, default=d.workers,
                   help=f"threads running requests off the event loop (default {d.workers})")
    p.add_argument("--write-workers", type=int, default=d.write_workers,
                   help="threads running POST /items and /behaviors (default "
                        f"{d.write_workers}: one store write at a time per process)")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help="requests waiting for a worker before 503 + Retry-After "
                        f"(default {d.max_queue})")
    p.add_argument("--header-timeout-s", type=float, default=d.header_timeout_s,
                   help="close a connection whose request headers take longer (default "
                        f"{d.header_timeout_s:g})")
    p.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels)
    p.add_argument("--max-image-side", type=int, default=d.max_image_side)
    p.add_argument("--max-image-aspect", type=float, default=d.max_image_aspect)
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=_cmd_serve)

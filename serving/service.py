"""The ranking service's engine, independent of HTTP: rank, search, new items, behaviour.

``RankingService`` holds the trained ranker (``moon_rec.ranking``), the MOON encoder (for
query texts / images and new items), the Feast store of a feature repository and the
in-memory ``EmbeddingCenter``:

- rank: one Feast online read per request (the user's behaviour sequence); candidate and
  behaviour-item embeddings and attributes come from the center; the RankerBatch is built
  by ``moon_rec.ranking.features.request_batch`` (the same ``make_batch`` and query
  hashing as training); the model's content lookup *is* the center;
- search: the query's MOON embedding against a faiss ANN index over the center
  (``moon_rec.retrieval.ann``); rank without candidates retrieves them this way;
- new items: encoder -> Feast push (embedding + attributes) -> center -> ANN index;
- behaviour: ``moon_rec.featurestore.push.push_behaviour`` (the next rank reads it).

Start-up refuses (``VersionMismatch``) when the ranker's embedding model_version differs
from the store's (the embedding view's tag and the embedding snapshot) or the encoder's.

Errors: ``BadInput`` (422) / ``NotFound`` (404) name the field; ``StoreUnavailable``
(503) wraps any failure of the online store; then requests fail fast while a background
probe waits for the store to answer again (circuit breaker).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from moon_rec.data.errors import DataError

log = logging.getLogger(__name__)

ACTIONS = ("click", "cart", "buy")
MAX_ID = 2**63 - 1


class ServiceError(Exception):
    """An error with an HTTP status and the request field at fault."""

    status = 500

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BadInput(ServiceError):
    status = 422


class NotFound(ServiceError):
    status = 404


class StoreUnavailable(ServiceError):
    status = 503


class VersionMismatch(ValueError):
    """The ranker, the encoder and the stored embeddings disagree on model_version."""


@dataclass
class ServiceConfig:
    """Serving limits and policies.

    Args:
        max_candidates: most item_ids per /rank request.
        retrieve_k: candidates retrieved by ANN when /rank has none.
        max_k: most results of /search and top_k.
        allow_unknown_users: rank users the store has no behaviour for as cold users
            (default: 404 naming user_id).
        query_cache: query embeddings kept (LRU).
        refresh_s: seconds between checks for a new embedding snapshot (0: never).
        store_retry_s: seconds between probes of a store that failed (503s meanwhile).
        ann_kind: ``auto`` or an ``moon_rec.retrieval.ann`` kind.
        threads: torch intra-op threads.
    """

    max_candidates: int = 1000
    retrieve_k: int = 100
    max_k: int = 1000
    allow_unknown_users: bool = False
    query_cache: int = 10_000
    refresh_s: float = 30.0
    ann_kind: str = "auto"
    threads: int = 1
    store_retry_s: float = 1.0


@dataclass
class RankResult:
    item_ids: list[int]
    scores: list[float]
    top_k: list[dict[str, Any]]
    retrieved: bool
    model_version: str
    embedding_version: str
    history_length: int


@dataclass
class _Counters:
    lock: threading.Lock = field(default_factory=threading.Lock)
    feast_reads: int = 0


def decode_image_field(data: str | bytes | None, field: str, size: int) -> np.ndarray | None:
    """A base64 (str) or raw (bytes) PNG/JPEG -> (size, size, 3) uint8; DataError naming
    ``field`` when it is not a decodable image."""
    if data is None:
        return None
    if isinstance(data, str):
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DataError(f"not base64 ({exc})", column=field) from exc
    else:
        raw = data
    if not raw:
        raise DataError("empty image", column=field)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as src:
            rgb = src.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.array(rgb, dtype=np.uint8)  # writable, as torch.from_numpy wants
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"not a decodable PNG/JPEG image ({exc})", column=field) from exc
    return np.ascontiguousarray(arr)


def _file_version(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def open_repo_store(repo: str | Path, fs_yaml: str | Path | None = None) -> Any:
    """A ``MoonFeatureStore`` over a Feast repository folder (``feature_repo/`` or one
    written by ``serving.loop.write_feast_repo``); data paths from ``REPO/paths.json``,
    else ``moon_rec.featurestore.repo.resolve_data_paths``."""
    from feast import FeatureStore

    from moon_rec.featurestore.definitions import build_definitions
    from moon_rec.featurestore.layout import FeatureDataPaths
    from moon_rec.featurestore.repo import resolve_data_paths
    from moon_rec.featurestore.store import MoonFeatureStore

    repo = Path(repo).resolve()
    yaml_file = Path(fs_yaml).resolve() if fs_yaml else repo / "feature_store.yaml"
    if not yaml_file.is_file():
        raise FileNotFoundError(f"no Feast repository config at {yaml_file}")
    store = FeatureStore(repo_path=str(repo), fs_yaml_file=yaml_file)
    local = repo / "paths.json"
    paths = (
        FeatureDataPaths.from_json(local.read_text()) if local.is_file() else resolve_data_paths()
    )
    return MoonFeatureStore(
        store=store, definitions=build_definitions(paths), paths=paths, profile=str(yaml_file)
    )


class RankingService:
    """See the module docstring.

    Args:
        model_dir: a trained ranker (``moon ranker train --out``).
        repo: the Feast repository folder.
        encoder: the MOON encoder checkpoint (default: ``MODEL/encoder`` if present).
        fs_yaml: another ``feature_store.yaml`` (e.g. the production profile's).
        config: limits and policies.
    """

    def __init__(
        self,
        model_dir: str | Path,
        repo: str | Path,
        *,
        encoder: str | Path | None = None,
        fs_yaml: str | Path | None = None,
        config: ServiceConfig | None = None,
    ) -> None:
        from moon_rec.encoders import MoonEncoder
        from moon_rec.featurestore.layout import (
            ITEM_EMBEDDING_VIEW,
            UNKNOWN_MODEL_VERSION,
            embeddings_model_version,
        )
        from moon_rec.featurestore.online import OnlineFeatureClient
        from moon_rec.ranking.evaluate import load_ranker
        from moon_rec.ranking.train import WEIGHTS
        from serving.center import CenterContentArch

        self.config = config or ServiceConfig()
        torch.set_num_threads(max(1, self.config.threads))
        model_dir = Path(model_dir)
        self.model, self.meta = load_ranker(model_dir)
        self.ranker_config = self.model.config
        self.model_version = f"ranker-{_file_version(model_dir / WEIGHTS)}"
        wanted: str | None = self.meta.get("model_version")
        self.dim = int(self.ranker_config.moon_dim)
        enc_path = Path(encoder) if encoder else model_dir / "encoder"
        if not (enc_path / "moon_encoder.json").is_file():
            raise FileNotFoundError(
                f"no MOON encoder checkpoint at {enc_path} (pass --encoder DIR)"
            )
        self.encoder = MoonEncoder.from_pretrained(enc_path).eval()
        self.mfs = open_repo_store(repo, fs_yaml)
        try:
            tag = self.mfs.store.get_feature_view(ITEM_EMBEDDING_VIEW).tags.get("model_version")
        except Exception as exc:
            raise StoreUnavailable(f"cannot read the feature registry of {repo}: {exc}") from exc
        snapshot = embeddings_model_version(self.mfs.paths)
        wanted = wanted or self.encoder.model_version
        problems = []
        if self.encoder.model_version != wanted:
            problems.append(f"the encoder at {enc_path} is {self.encoder.model_version}")
        if tag not in (None, UNKNOWN_MODEL_VERSION) and tag != wanted:
            problems.append(f"the feature store serves embeddings of {tag} (item_embedding tag)")
        if snapshot != UNKNOWN_MODEL_VERSION and snapshot != wanted:
            problems.append(f"the embedding snapshot {self.mfs.paths.embeddings_dir()} is {snapshot}")
        if problems:
            raise VersionMismatch(
                f"refusing to start: the ranker {model_dir} was trained on MOON embeddings of "
                f"model_version {wanted}, but " + "; ".join(problems)
                + ". Re-train the ranker on the stored embeddings, or embed and materialize "
                "with the ranker's encoder."
            )
        self.embedding_version = wanted
        self.client = OnlineFeatureClient(self.mfs, expected_model_version=wanted)
        self._snapshot_key = self._snapshot_state()
        self.center = self._load_center()
        if self.ranker_config.uses_moon:
            # the model's content lookup is the center: new items are rankable at once
            self.model.content_arch = CenterContentArch(self.center)  # type: ignore[assignment]
        self.ann = self._build_ann()
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # model + encoder calls
        self.counters = _Counters()
        self.started = time.time()
        self.store_ok = True
        self._store_error = ""
        self._probe: threading.Thread | None = None
        self._probe_lock = threading.Lock()
        self.stale_reason: str | None = None
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    # -- start-up / refresh ------------------------------------------------------------
    def _load_center(self) -> Any:
        from serving.center import EmbeddingCenter

        paths = self.mfs.paths
        center = EmbeddingCenter.from_parquet(paths.embeddings_dir(), paths.item_features, self.dim)
        if center.model_version != self.embedding_version:
            raise VersionMismatch(
                f"refusing to start: {paths.embeddings_dir()} holds model_version "
                f"{center.model_version}, the ranker wants {self.embedding_version}"
            )
        return center

    def _build_ann(self) -> Any:
        from moon_rec.retrieval.ann import AnnConfig, AnnIndex

        ids, vecs = self.center.all_items()
        kind = self.config.ann_kind
        cfg = AnnConfig.auto(len(ids)) if kind == "auto" else AnnConfig(kind=kind)
        return AnnIndex.build(vecs, ids, cfg)

    def _snapshot_state(self) -> str:
        from moon_rec.featurestore.layout import EMBEDDING_MANIFEST

        m = self.mfs.paths.embeddings_dir() / EMBEDDING_MANIFEST
        try:
            return m.read_text()
        except OSError:
            return ""

    def refresh(self) -> bool:
        """Reload the center when the embed job wrote a new snapshot. A snapshot of the
        ranker's model_version replaces the base (items added online are kept); one of
        another version is not loaded (``stale_reason`` says so in /healthz) because this
        ranker cannot use it. Returns True when the center was reloaded."""
        from moon_rec.featurestore.layout import embeddings_model_version

        key = self._snapshot_state()
        if key == self._snapshot_key:
            return False
        version = embeddings_model_version(self.mfs.paths)
        if version != self.embedding_version:
            self.stale_reason = (
                f"a snapshot of model_version {version} was written; this ranker serves "
                f"{self.embedding_version}: deploy a ranker trained on it"
            )
            self._snapshot_key = key
            return False
        from serving.center import EmbeddingCenter

        paths = self.mfs.paths
        fresh = EmbeddingCenter.from_parquet(paths.embeddings_dir(), paths.item_features, self.dim)
        self.center.replace_base(fresh)
        ann = self._build_ann()
        self.ann = ann
        self._snapshot_key = key
        self.stale_reason = None
        log.info("embedding center refreshed: %d items", len(self.center))
        return True

    def start_refresher(self) -> None:
        if self.config.refresh_s <= 0 or self._refresher is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.config.refresh_s):
                try:
                    self.refresh()
                except Exception:  # keep serving the loaded center
                    log.exception("embedding refresh failed")

        self._refresher = threading.Thread(target=loop, name="center-refresh", daemon=True)
        self._refresher.start()

    def close(self) -> None:
        self._stop.set()

    # -- store access --------------------------------------------------------------------
    def _store(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the online store; its failures become ``StoreUnavailable`` (503).

        A circuit breaker: after a failure, requests fail fast (no wait on the client's
        own retries) while a background probe reads the store every ``store_retry_s``;
        the first probe that succeeds closes the breaker."""
        from moon_rec.featurestore.online import ModelVersionMismatch

        if not self.store_ok:
            raise StoreUnavailable(
                f"online store unavailable ({what}): {self._store_error}; "
                "probing it in the background"
            )
        try:
            out = fn(*args, **kwargs)
        except (DataError, ModelVersionMismatch):
            raise
        except Exception as exc:
            self._store_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            self._trip()
            raise StoreUnavailable(f"online store unavailable ({what}): {self._store_error}") from exc
        with self.counters.lock:
            self.counters.feast_reads += 1
        return out

    def _trip(self) -> None:
        with self._probe_lock:
            self.store_ok = False
            if self._probe is not None and self._probe.is_alive():
                return

            def probe() -> None:
                while not self._stop.wait(self.config.store_retry_s):
                    try:
                        self.client.user_sequences([0])
                    except Exception as exc:
                        self._store_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                        continue
                    self.store_ok = True
                    log.warning("online store is back")
                    return

            log.warning("online store unavailable: %s", self._store_error)
            self._probe = threading.Thread(target=probe, name="store-probe", daemon=True)
            self._probe.start()

    def check_store(self) -> bool:
        """True when the online store answers a one-row read (False at once while the
        breaker is open)."""
        if not self.store_ok:
            return False
        try:
            self._store("health", self.client.user_sequences, [0])
        except StoreUnavailable:
            return False
        return True

    # -- encoding --------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return int(self.encoder.config.image_size)

    def _encode(
        self, kind: str, text: str | None = None, image: np.ndarray | None = None
    ) -> dict[int, np.ndarray]:
        from moon_rec.encoders import images_to_tensor, matryoshka

        with self._lock, torch.inference_mode():
            if kind == "text":
                x = self.encoder.encode_text([text or ""])
            elif kind == "image":
                x = self.encoder.encode_image(images_to_tensor([image], self.image_size))
            else:
                x = self.encoder.encode_product(
                    [text or ""], images_to_tensor([image], self.image_size)
                )
            full = x.float()
        return {d: matryoshka(full, d)[0].numpy() for d in self.encoder.dims}

    def query_vector(self, text: str | None, image: str | bytes | None) -> np.ndarray | None:
        """The query's MOON embedding at the ranker's size (text first; an image query
        alone uses the image embedding, the same space); None for neither."""
        img = decode_image_field(image, "query_image", self.image_size)
        if text and text.strip():
            key = "t:" + text
            hit = self._qcache.get(key)
            if hit is not None:
                self._qcache.move_to_end(key)
                return hit
            vec = self._encode_checked("text", "query_text", text=text)[self.dim]
            self._qcache[key] = vec
            if len(self._qcache) > self.config.query_cache:
                self._qcache.popitem(last=False)
            return vec
        if img is not None:
            return self._encode_checked("image", "query_image", image=img)[self.dim]
        return None

    def _encode_checked(self, kind: str, field: str, **kw: Any) -> dict[int, np.ndarray]:
        try:
            out = self._encode(kind, **kw)
        except DataError as exc:
            raise BadInput(f"{field}: {exc.reason}", field) from exc
        return out

    # -- items -----------------------------------------------------------------------------
    def _ensure_items(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(category, brand, found) of ``ids``; items missing from the center are read
        from the online store (pushed by another process) and added to it."""
        _, cat, brand, found = self.center.lookup(ids)
        if found.all():
            return cat, brand, found
        missing = np.unique(ids[~found])
        emb = self._store("item embeddings", self.client.item_embeddings, missing, self.dim,
                          on_mismatch="missing")
        if emb.found.any():
            attrs = self._store("item attributes", self.client.item_attributes, missing)
            ok = emb.found
            self.center.upsert(missing[ok], emb.vectors[ok], attrs["category_id"][ok],
                               attrs["brand_id"][ok])
            self.ann.add(emb.vectors[ok], missing[ok])
            _, cat, brand, found = self.center.lookup(ids)
        return cat, brand, found

    def add_item(
        self,
        item_id: int,
        title: str,
        image: str | bytes,
        *,
        category_id: int = -1,
        brand_id: int = -1,
        spu_id: int | None = None,
        price: float | None = None,
    ) -> dict[str, Any]:
        """Embed a new (or changed) item, push it online and into the center."""
        from moon_rec.featurestore.layout import TIMESTAMP_FIELD
        from moon_rec.featurestore.push import push_item_attributes, push_item_embeddings
        from moon_rec.featurestore.tables import ITEM_FEATURE_SCHEMA

        if not title or not title.strip():
            raise BadInput("title: empty title", "title")
        try:
            img = decode_image_field(image, "image", self.image_size)
        except DataError as exc:
            raise BadInput(f"image: {exc.reason}", "image") from exc
        vecs = self._encode_checked("product", "title", text=title, image=img)
        now = datetime.now(UTC)
        ts = pa.array([now], pa.timestamp("us", tz="UTC"))
        cols: dict[str, Any] = {"item_id": pa.array([item_id], pa.int64())}
        for d, v in vecs.items():
            cols[f"emb_{d}"] = pa.array([v.tolist()], pa.list_(pa.float32()))
        cols["model_version"] = pa.array([self.encoder.model_version])
        cols[TIMESTAMP_FIELD] = ts
        attrs = pa.Table.from_pydict(
            {
                "item_id": [item_id], TIMESTAMP_FIELD: [now], "category_id": [category_id],
                "brand_id": [brand_id], "spu_id": [spu_id], "price": [price], "launch_ts": [now],
                **{f.name: [0] for f in ITEM_FEATURE_SCHEMA if f.name.startswith("n_")},
            },
            schema=ITEM_FEATURE_SCHEMA,
        )
        self._store("push item", push_item_embeddings, self.mfs, pa.table(cols))
        self._store("push item attributes", push_item_attributes, self.mfs, attrs)
        vec = vecs[self.dim]
        self.center.upsert(np.array([item_id]), vec[None, :], np.array([category_id]),
                           np.array([brand_id]))
        self.ann.add(vec[None, :], np.array([item_id]))
        return {"item_id": item_id, "embedding_version": self.encoder.model_version,
                "event_timestamp": now.isoformat()}

    # -- behaviour -------------------------------------------------------------------------
    def add_behaviour(
        self, user_id: int, item_id: int, action: str, ts: datetime | None = None
    ) -> dict[str, Any]:
        from moon_rec.featurestore.push import push_behaviour

        if action not in ACTIONS:
            raise BadInput(f"action: {action!r} not in {ACTIONS}", "action")
        _, _, found = self._ensure_items(np.array([item_id], np.int64))
        if not found[0]:
            raise NotFound(f"item_id: unknown item {item_id}", "item_id")
        ts = ts or datetime.now(UTC)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        events = pa.table(
            {
                "user_id": pa.array([user_id], pa.int64()),
                "item_id": pa.array([item_id], pa.int64()),
                "ts": pa.array([ts], pa.timestamp("us", tz="UTC")),
                "action": pa.array([action]),
            }
        )
        self._store("push behaviour", push_behaviour, self.mfs, events, client=self.client)
        return {"user_id": user_id, "item_id": item_id, "action": action, "ts": ts.isoformat()}

    # -- search / rank ---------------------------------------------------------------------
    def search(
        self, query_text: str | None, query_image: str | bytes | None, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(item ids [k'], cosine scores [k']) nearest to the query (ANN over the center)."""
        if k < 1 or k > self.config.max_k:
            raise BadInput(f"k: must be in 1..{self.config.max_k}, got {k}", "k")
        vec = self.query_vector(query_text, query_image)
        if vec is None:
            raise BadInput("query_text: give a non-empty query_text or a query_image",
                           "query_text")
        scores, ids = self.ann.search(vec[None, :], k)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def rank(
        self,
        user_id: int,
        item_ids: list[int] | None,
        *,
        query_text: str | None = None,
        query_image: str | bytes | None = None,
        top_k: int = 10,
    ) -> RankResult:
        """Score ``item_ids`` (or ANN-retrieved candidates) for the user and query."""
        from moon_rec.ranking.features import request_batch

        cfg = self.config
        if top_k < 1 or top_k > cfg.max_k:
            raise BadInput(f"top_k: must be in 1..{cfg.max_k}, got {top_k}", "top_k")
        if item_ids is not None:
            if len(item_ids) == 0:
                raise BadInput("item_ids: empty candidate list (omit it to retrieve by the "
                               "query)", "item_ids")
            if len(item_ids) > cfg.max_candidates:
                raise BadInput(f"item_ids: {len(item_ids)} candidates, at most "
                               f"{cfg.max_candidates}", "item_ids")
            if any(i < 0 or i > MAX_ID for i in item_ids):
                raise BadInput("item_ids: ids must be in 0..2^63-1", "item_ids")
        if not 0 <= user_id <= MAX_ID:
            raise BadInput("user_id: must be in 0..2^63-1", "user_id")
        qvec = self.query_vector(query_text, query_image)
        if item_ids is None and qvec is None:
            raise BadInput("item_ids: give candidates, or a query_text / query_image to "
                           "retrieve them", "item_ids")
        seq = self._store("user features", self.client.user_sequences, [user_id])
        n_hist = int(seq.lengths[0])
        if n_hist == 0 and not cfg.allow_unknown_users:
            raise NotFound(f"user_id: unknown user {user_id} (no behaviour in the store)",
                           "user_id")
        retrieved = item_ids is None
        if item_ids is None:
            assert qvec is not None
            _, ids_found = self.ann.search(qvec[None, :], cfg.retrieve_k)
            cands = ids_found[0][ids_found[0] >= 0]
            if len(cands) == 0:
                raise NotFound("item_ids: nothing retrieved (empty catalog)", "item_ids")
        else:
            cands = np.asarray(item_ids, np.int64)
        cat, brand, found = self._ensure_items(cands)
        if not found.all():
            bad = np.unique(cands[~found])[:10].tolist()
            raise NotFound(f"item_ids: unknown items {bad}", "item_ids")
        batch = request_batch(
            user_id=user_id,
            item_ids=cands,
            category_ids=cat,
            brand_ids=brand,
            hist_item_ids=seq.item_ids[0, :n_hist],
            hist_category_ids=seq.category_ids[0, :n_hist],
            query_text=query_text,
            query_embedding=qvec,
            query_token_buckets=self.ranker_config.query_token_buckets,
            max_seq_len=self.ranker_config.max_seq_len,
            content_dim=self.model.content_dim,
        )
        with self._lock, torch.inference_mode():
            scores = torch.sigmoid(self.model(batch)).numpy().astype(np.float64)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return RankResult(
            item_ids=cands.tolist(),
            scores=scores.tolist(),
            top_k=[{"item_id": int(cands[i]), "score": float(scores[i])} for i in order],
            retrieved=retrieved,
            model_version=self.model_version,
            embedding_version=self.embedding_version,
            history_length=n_hist,
        )

    def info(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "embedding_version": self.embedding_version,
            "behaviour_module": self.ranker_config.behaviour.module,
            "feature_set": self.ranker_config.feature_set,
            "moon_dim": self.dim,
            "items_in_center": len(self.center),
            "ann": self.ann.config.kind,
            "stale_reason": self.stale_reason,
            "uptime_s": round(time.time() - self.started, 1),
            "meta": json.loads(json.dumps({k: self.meta.get(k) for k in ("steps", "done")})),
        }

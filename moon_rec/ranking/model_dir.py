"""The ranker's model directory: the one owner of its layout.

    meta.json      config, ``tables`` (rows of the ranker's own tables and of its
                   behaviour sequences' tables, by table name), the embedding snapshot's
                   model_version and path, inputs, progress (``done`` once training
                   finished), and ``features``: the feature spec the ranker read and its
                   encoded features' fitted transforms and table rows (``FittedFeatures``,
                   fitted on the train split)
    model.pt       the trained weights (unsharded), written on rank 0 at the end. The frozen
                   MOON vectors and semantic-ID codes are not copied into it: it keeps the
                   item ids the ranker was trained on, and loading reads their vectors and
                   codes back from the embedding snapshot (the truth), refusing a snapshot of
                   another model_version
    checkpoint.pt  full weights + optimizer states + position, for resume (any world size),
                   with one ``checkpoint.fused.rank{r}-of-{w}.pt`` per rank (its sparse
                   optimizer state)

Everything that reads or writes these files goes through ``RankerDir``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from moon_rec import runtime
from moon_rec.data.feature_spec import FeatureSpec, FeatureSpecError, FittedFeatures

META = "meta.json"
WEIGHTS = "model.pt"
CHECKPOINT = "checkpoint.pt"
# state-dict entries that copy the snapshot (the frozen content vectors, the codes); the
# ids beside them (``...rows.item_ids``) stay in model.pt
CONTENT_ROWS = "content_arch.rows.item_ids"
CONTENT_VECTORS = "content_arch.embedding_collection.embeddings.moon_content.weight"
CODE_ROWS = "semantic_id_table.rows.item_ids"
CODES = "semantic_id_table.codes"
SNAPSHOT_COPIES = (CONTENT_VECTORS, CODES)


class RankerDir:
    """A ranker model directory (see the module docstring).

    Args:
        path: the directory (``moon ranker train --out``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def meta_file(self) -> Path:
        return self.path / META

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS

    @property
    def checkpoint_file(self) -> Path:
        return self.path / CHECKPOINT

    def fused_checkpoint_file(self, rank: int, world_size: int) -> Path:
        """Rank ``rank``'s sparse optimizer state beside ``checkpoint.pt``."""
        return self.path / f"{Path(CHECKPOINT).stem}.fused.rank{rank}-of-{world_size}.pt"

    # -- meta ---------------------------------------------------------------------------
    def read_meta(self) -> dict[str, Any]:
        """``meta.json``; FileNotFoundError saying the folder is not a model directory."""
        if not self.meta_file.is_file():
            raise FileNotFoundError(
                f"{self.meta_file} not found (is {self.path} a ranker model directory?)"
            )
        meta: dict[str, Any] = json.loads(self.meta_file.read_text())
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        runtime.atomic_write_json(self.meta_file, meta)

    def finished_meta(self) -> dict[str, Any] | None:
        """The meta of a finished training (``done`` and ``model.pt`` present), else None."""
        if not (self.meta_file.is_file() and self.weights_file.is_file()):
            return None
        meta = self.read_meta()
        return meta if meta.get("done") else None

    def features(self, meta: dict[str, Any] | None = None) -> FittedFeatures:
        """The feature spec and fitted transforms the ranker was trained with.
        FeatureSpecError naming the directory when they do not read: a directory written
        before specs existed, or before the ranker built itself from the spec (its spec's
        sequences name no target): retrain it."""
        meta = self.read_meta() if meta is None else meta
        if "features" not in meta:
            raise FeatureSpecError(f"{self.meta_file}: no fitted features recorded (written "
                                   "before feature specs); retrain the ranker")
        try:
            FeatureSpec.from_dict(meta["features"].get("spec"), f"{self.meta_file}: its spec")
            return FittedFeatures.from_dict(meta["features"])
        except (ValueError, KeyError, AttributeError) as exc:
            raise FeatureSpecError(
                f"{str(exc).splitlines()[0]}; a ranker written by another version (e.g. "
                "before id_sequence entries named their target) must be retrained") from None

    def table_rows(self, meta: dict[str, Any], tables: list[str]) -> dict[str, int]:
        """``meta``'s table rows; FeatureSpecError naming the directory when one of
        ``tables`` is not recorded (a directory of another version of the ranker)."""
        rows = meta.get("tables") or {}
        missing = [t for t in tables if t not in rows]
        if missing:
            raise FeatureSpecError(f"{self.meta_file}: no rows recorded for table {missing[0]} "
                                   "(written by another version of the ranker); retrain it")
        return {t: int(rows[t]) for t in rows}

    # -- weights ------------------------------------------------------------------------
    def save_weights(self, state: dict[str, Any]) -> None:
        """Write ``model.pt`` atomically: ``state`` without its copies of the snapshot."""
        save(
            {k: v for k, v in state.items() if k not in SNAPSHOT_COPIES}, self.weights_file
        )

    def load_weights(self) -> dict[str, Any]:
        """``model.pt`` (FileNotFoundError when training did not finish)."""
        if not self.weights_file.is_file():
            raise FileNotFoundError(f"{self.weights_file} not found (training did not finish?)")
        state: dict[str, Any] = torch.load(self.weights_file, map_location="cpu",
                                           weights_only=True)
        return state

    def weights_version(self) -> str:
        """The first 12 hex digits of a SHA-256 over ``model.pt``'s tensors (names, dtypes,
        shapes, values): the same for the same weights, whatever bytes ``torch.save``
        wrote around them (its archive carries a per-save id)."""
        h = hashlib.sha256()
        for name, value in sorted(self.load_weights().items()):
            h.update(name.encode())
            if isinstance(value, torch.Tensor):
                t = value.detach().cpu().contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            else:
                h.update(repr(value).encode())
        return h.hexdigest()[:12]

    def remove_weights(self) -> None:
        """Drop ``model.pt`` and the checkpoints (a study keeps only meta and reports)."""
        self.weights_file.unlink(missing_ok=True)
        self.checkpoint_file.unlink(missing_ok=True)
        for fused in self.path.glob(f"{Path(CHECKPOINT).stem}.fused.*"):
            fused.unlink()


def save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    with runtime.atomic_path(path) as tmp:
        torch.save(obj, tmp)

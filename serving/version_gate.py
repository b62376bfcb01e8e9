"""The version gate: the service serves one embedding ``model_version`` or refuses to start.

A ranker is trained on the MOON embeddings of one encoder version; fed the vectors of
another it scores garbage without any error. The gate names the version the ranker wants
(its meta, else the encoder's), checks the encoder, the feature registry's embedding tag
and the embed job's snapshot against it at start-up (``VersionMismatch`` naming both
versions), and later tells whether a new snapshot can be loaded by this ranker.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from moon_rec.featurestore.layout import UNKNOWN_MODEL_VERSION
from serving.errors import VersionMismatch


def file_version(path: Path) -> str:
    """The first 12 hex digits of the SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


class VersionGate:
    """The embedding version a ranker serves, and the checks against it.

    Args:
        ranker_dir: the trained ranker's folder (named in errors).
        wanted: the ranker's embedding model_version (its meta), or None to take the
            encoder's.
        encoder_version: the loaded MOON encoder's model_version.

    Example::

        gate = VersionGate(Path("ranker"), meta.get("model_version"), encoder.model_version)
        gate.check_start(encoder_path=enc, registry_tag=tag, snapshot=(version, folder))
        gate.embedding_version  # the version every vector served must have
    """

    def __init__(self, ranker_dir: Path, wanted: str | None, encoder_version: str) -> None:
        self.ranker_dir = ranker_dir
        self.encoder_version = encoder_version
        self.embedding_version: str = wanted or encoder_version

    def check_start(
        self, *, encoder_path: Path, registry_tag: str | None, snapshot: tuple[str, Path]
    ) -> None:
        """Raise ``VersionMismatch`` unless the encoder, the registry's ``item_embedding``
        tag and the embedding snapshot (version, folder) all hold the wanted version
        (an absent or ``unknown`` tag / snapshot version is not checked)."""
        wanted = self.embedding_version
        problems = []
        if self.encoder_version != wanted:
            problems.append(f"the encoder at {encoder_path} is {self.encoder_version}")
        if registry_tag not in (None, UNKNOWN_MODEL_VERSION) and registry_tag != wanted:
            problems.append(
                f"the feature store serves embeddings of {registry_tag} (item_embedding tag)"
            )
        version, folder = snapshot
        if version != UNKNOWN_MODEL_VERSION and version != wanted:
            problems.append(f"the embedding snapshot {folder} is {version}")
        if problems:
            raise VersionMismatch(
                f"refusing to start: the ranker {self.ranker_dir} was trained on MOON "
                f"embeddings of model_version {wanted}, but " + "; ".join(problems)
                + ". Re-train the ranker on the stored embeddings, or embed and materialize "
                "with the ranker's encoder."
            )

    def check_loaded(self, version: str, where: Path) -> None:
        """Raise ``VersionMismatch`` when vectors loaded from ``where`` are of ``version``."""
        if version != self.embedding_version:
            raise VersionMismatch(
                f"refusing to start: {where} holds model_version {version}, the ranker "
                f"wants {self.embedding_version}"
            )

    def snapshot_problem(self, version: str) -> str | None:
        """Why a new snapshot of ``version`` cannot be served (None: it can)."""
        if version == self.embedding_version:
            return None
        return (
            f"a snapshot of model_version {version} was written; this ranker serves "
            f"{self.embedding_version}: deploy a ranker trained on it"
        )

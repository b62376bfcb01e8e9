"""The version gate: the service serves one embedding ``model_version`` or refuses to start.

A ranker is trained on the MOON embeddings of one encoder version; fed the vectors of
another it scores garbage without any error. The gate names the version the ranker wants
(its meta, else the encoder's), checks the encoder, the feature registry's embedding tag
and the embed job's snapshot against it at start-up (``VersionMismatch`` naming both
versions), and later tells whether a new snapshot can be loaded by this ranker.

The same holds for semantic-ID codes: new items are coded with the quantiser saved beside
the snapshot, which must have been fitted on vectors of the served version, and a ranker
trained with semantic IDs needs one whose codes fit its tables (levels, codebook).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from moon_rec.featurestore.layout import UNKNOWN_MODEL_VERSION
from moon_rec.ranking.config import SemanticIdFeatures
from moon_rec.retrieval.semantic_ids import SEMANTIC_IDS_FILE, SemanticIdQuantiser
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
        semantic_ids: the ranker's semantic-ID features (None: it reads no codes).

    Example::

        gate = VersionGate(Path("ranker"), meta.get("model_version"), encoder.model_version)
        gate.check_start(encoder_path=enc, registry_tag=tag, snapshot=(version, folder))
        gate.embedding_version  # the version every vector served must have
    """

    def __init__(
        self,
        ranker_dir: Path,
        wanted: str | None,
        encoder_version: str,
        semantic_ids: SemanticIdFeatures | None = None,
    ) -> None:
        self.ranker_dir = ranker_dir
        self.encoder_version = encoder_version
        self.embedding_version: str = wanted or encoder_version
        self.semantic_ids = semantic_ids

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

    def quantiser_problem(
        self, quantiser: SemanticIdQuantiser | None, where: Path, code_levels: int
    ) -> str | None:
        """Why the semantic-ID quantiser of the snapshot folder ``where`` (None: it has
        none) cannot code this service's items (None: it can): fitted on another
        model_version, not the one of the snapshot's codes (``code_levels`` levels in its
        ``semantic_ids`` column, 0: none), or codes that do not fit the ranker's tables."""
        file = where / SEMANTIC_IDS_FILE
        sid = self.semantic_ids
        if quantiser is None:
            if sid is None and code_levels == 0:
                return None
            return (
                (f"the ranker {self.ranker_dir} reads semantic-ID codes" if sid is not None
                 else "the snapshot's items have semantic-ID codes")
                + f", but the embedding snapshot {where} has no quantiser "
                f"({SEMANTIC_IDS_FILE}) to code new items with: run `moon embed` with "
                "semantic IDs on"
            )
        if quantiser.model_version != self.embedding_version:
            return (
                f"{file} is a semantic-ID quantiser fitted on MOON embeddings of "
                f"model_version {quantiser.model_version}, the service serves "
                f"{self.embedding_version}: it would code new items in another code space"
            )
        if quantiser.levels != code_levels:
            return (
                f"{file} codes items with {quantiser.levels} levels, the snapshot's "
                f"semantic_ids column has {code_levels}"
            )
        if sid is None:
            return None
        # codewords past the fit's item count are never assigned (semantic_ids.py)
        used = min(quantiser.codebook, quantiser.n_train)
        if quantiser.levels != sid.levels or used > sid.codebook:
            return (
                f"{file} codes items with {quantiser.levels} levels of {used} codewords, the "
                f"ranker {self.ranker_dir} was trained with semantic_ids.levels {sid.levels}"
                f", semantic_ids.codebook {sid.codebook}"
            )
        return None

    def check_quantiser(
        self, quantiser: SemanticIdQuantiser | None, where: Path, code_levels: int
    ) -> None:
        """Raise ``VersionMismatch`` when ``quantiser_problem`` finds one (at start-up)."""
        problem = self.quantiser_problem(quantiser, where, code_levels)
        if problem is not None:
            raise VersionMismatch(f"refusing to start: {problem}")

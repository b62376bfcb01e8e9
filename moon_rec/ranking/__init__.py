"""The ranker of MOON's application stage: a TorchRec CTR model with DIN / CUBE / SIM
behaviour modules, trained with DistributedModelParallel (see ``model.py``, ``modules.py``,
``train.py``, ``evaluate.py``; CLI ``moon ranker``)."""

# Lazy exports (PEP 562): `moon --help` must not pay for torch/faiss/torchrec imports.

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "RankerConfig": "moon_rec.ranking.config",
    "load_ranker_config": "moon_rec.ranking.config",
    "RankerBatch": "moon_rec.ranking.features",
    "MoonRanker": "moon_rec.ranking.model",
    "BehaviourInputs": "moon_rec.ranking.modules",
    "CubeModule": "moon_rec.ranking.modules",
    "DinModule": "moon_rec.ranking.modules",
    "MoonContentArch": "moon_rec.ranking.modules",
    "SimModule": "moon_rec.ranking.modules",
    "TableSizes": "moon_rec.ranking.modules",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

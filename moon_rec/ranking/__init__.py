"""The ranker of MOON's application stage: a TorchRec CTR model with DIN / CUBE / SIM
behaviour modules, trained with DistributedModelParallel (see ``model.py``, ``modules.py``,
``train.py``, ``evaluate.py``; CLI ``moon ranker``)."""

from moon_rec._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "RankerConfig": "moon_rec.ranking.config",
    "load_ranker_config": "moon_rec.ranking.config",
    "RankerBatch": "moon_rec.ranking.features",
    "LookHead": "moon_rec.ranking.look_head",
    "LookHeadConfig": "moon_rec.ranking.config",
    "MoonRanker": "moon_rec.ranking.model",
    "BehaviourInputs": "moon_rec.ranking.modules",
    "CubeModule": "moon_rec.ranking.modules",
    "DinModule": "moon_rec.ranking.modules",
    "FrozenContentTable": "moon_rec.ranking.modules",
    "SemanticIdArch": "moon_rec.ranking.modules",
    "SemanticIdTable": "moon_rec.ranking.modules",
    "MoonContentArch": "moon_rec.ranking.modules",
    "SimModule": "moon_rec.ranking.modules",
    "TableSizes": "moon_rec.ranking.modules",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)

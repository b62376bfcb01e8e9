"""The ranker of MOON's application stage: a TorchRec CTR model with DIN / CUBE / SIM
behaviour modules, trained with DistributedModelParallel. ``model.py`` composes the Arch
modules: ``sparse.py`` (ID lookups), ``item_tables.py`` (item-keyed lookups of the
embedding snapshot: content vectors, semantic-ID codes), ``behaviours.py`` (DIN / CUBE /
SIM and their registry), ``over_arch.py`` (pairwise dots, DCN-v2, MLP); ``train.py``,
``evaluate.py``, ``compare.py`` run them (CLI ``moon ranker``)."""

from moon_rec._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "RankerConfig": "moon_rec.ranking.config",
    "load_ranker_config": "moon_rec.ranking.config",
    "RankerBatch": "moon_rec.ranking.features",
    "LookHead": "moon_rec.ranking.look_head",
    "LookHeadConfig": "moon_rec.ranking.config",
    "MoonRanker": "moon_rec.ranking.model",
    "BEHAVIOUR_MODULES": "moon_rec.ranking.behaviours",
    "BehaviourInputs": "moon_rec.ranking.behaviours",
    "CubeModule": "moon_rec.ranking.behaviours",
    "DinModule": "moon_rec.ranking.behaviours",
    "SimModule": "moon_rec.ranking.behaviours",
    "FrozenContentTable": "moon_rec.ranking.item_tables",
    "ItemRows": "moon_rec.ranking.item_tables",
    "MoonContentArch": "moon_rec.ranking.item_tables",
    "SemanticIdTable": "moon_rec.ranking.item_tables",
    "SemanticIdArch": "moon_rec.ranking.sparse",
    "RankerTables": "moon_rec.ranking.sparse",
    "RankerLayout": "moon_rec.ranking.features",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)

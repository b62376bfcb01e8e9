"""The MOON feature repository, as the ``feast`` CLI reads it.

    moon features init --data DIR [--embeddings E]   # record absolute data paths
    feast -c feature_repo apply
    feast -c feature_repo materialize-incremental 2030-01-01T00:00:00
    feast -c feature_repo serve

Definitions live in ``moon_rec.featurestore.definitions`` (shared with the library); data
paths come from ``moon_rec.featurestore.repo.resolve_data_paths`` and are absolute, so
the working directory never matters. The production profile (Redis + PostgreSQL
registry): ``feast -c feature_repo -f feature_repo/production/feature_store.yaml apply``.
"""

from moon_rec.featurestore.definitions import build_definitions
from moon_rec.featurestore.repo import resolve_data_paths

_definitions = build_definitions(resolve_data_paths())

item = _definitions.item
user = _definitions.user
item_embedding_source = _definitions.item_embedding_source
item_attributes_source = _definitions.item_attributes_source
user_behaviour_source = _definitions.user_behaviour_source
new_item_embedding_push = _definitions.item_embedding_push
new_item_attributes_push = _definitions.item_attributes_push
behaviour_push = _definitions.behaviour_push
item_embedding = _definitions.item_embedding
item_attributes = _definitions.item_attributes
user_behaviour = _definitions.user_behaviour
# the entities of the user x category / brand views, the daily aggregates and the entity
# attributes (item_extra_attributes only when the items have extra columns)
category = _definitions.category
brand = _definitions.brand
user_clicks = _definitions.user_clicks
user_category_clicks = _definitions.user_category_clicks
user_brand_clicks = _definitions.user_brand_clicks
item_ctr = _definitions.item_ctr
user_attributes = _definitions.user_attributes
if _definitions.item_extra_attributes is not None:
    item_extra_attributes = _definitions.item_extra_attributes

# One FeatureService per feature spec (configs/features/*.yaml), as `moon features apply`
# registers them (moon_rec.featurestore.services; a spec naming a feature these views lack
# is an error naming it).
from feast import FeatureView  # noqa: E402

from moon_rec.featurestore.services import feature_services  # noqa: E402

for _service in feature_services(o for o in _definitions.objects() if isinstance(o, FeatureView)):
    globals()[_service.name] = _service

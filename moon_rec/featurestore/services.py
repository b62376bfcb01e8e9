"""Feature specs in Feast: one ``FeatureService`` per spec, and the check that a store holds
every feature a spec names, with its type.

``feature_services`` builds ``moon_<spec>`` (a ``FeatureService`` over exactly the spec's
fields, ``spec`` tag = the spec's name) for the specs asked for (``moon features apply
--features full``: a spec that does not fit the repository is an error naming the
feature), or for every spec of ``configs/features/`` that fits (the others are left out
with a warning naming the feature: a spec may be of another world); they are applied with
the repository (``MoonFeatureStore.apply``, ``moon features apply``). A MOON
entry whose field is ``emb`` serves every Matryoshka field of the embedding view (the
ranker picks one by its ``moon_dim``).

``check_spec`` refuses a store (its definitions, or the registry a service reads) that
lacks a spec feature or holds it with another type, naming the feature: at apply, when the
training set is built, and when serving starts.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from feast import FeatureService, FeatureView
from feast.types import Array, Float32, Float64, Int32, Int64, String, UnixTimestamp

from moon_rec.data.feature_spec import (
    FeatureEntry,
    FeatureSpec,
    FeatureSpecError,
    known_specs,
    load_feature_spec,
)

SERVICE_PREFIX = "moon_"

# the Feast types a feature of each kind may have
KIND_TYPES: dict[str, tuple[Any, ...]] = {
    "categorical": (Int64, Int32),
    "numeric": (Float64, Float32, Int64, Int32),
    "id_sequence": (Array(Int64), Array(Int32)),
    "moon_embedding": (Array(Float32),),
    "semantic_ids": (Array(Int32), Array(Int64)),
}


def service_name(spec: FeatureSpec | str) -> str:
    """``moon_<spec name>`` (``+`` spelled ``_plus_``, as Feast names allow)."""
    name = spec.name if isinstance(spec, FeatureSpec) else spec
    return SERVICE_PREFIX + name.replace("+", "_plus_")


def _fields(entry: FeatureEntry, view: FeatureView) -> list[str]:
    if entry.kind == "moon_embedding" and entry.field == "emb":
        return [f.name for f in view.features if f.name.startswith("emb_")]
    return [entry.field]


def check_spec(store_or_views: Any, spec: FeatureSpec, where: str = "the feature store") -> None:
    """Raise FeatureSpecError naming the first feature of ``spec`` that the views lack or
    hold with a type its kind does not take.

    Args:
        store_or_views: a ``MoonFeatureStore`` (its definitions), a Feast
            ``FeatureStore`` (its registry) or an iterable of ``FeatureView``.
        spec: the spec.
        where: how the error names the store.
    """
    views = _views(store_or_views)
    for entry in spec.features:
        view = views.get(entry.view)
        if view is None:
            raise FeatureSpecError(
                f"feature spec {spec.name!r}: feature {entry.column} ({entry.source}): "
                f"{where} has no feature view {entry.view!r} (views: {', '.join(sorted(views))})")
        types = {f.name: f.dtype for f in view.features}
        fields = _fields(entry, view)
        if not fields:
            raise FeatureSpecError(
                f"feature spec {spec.name!r}: feature {entry.column} ({entry.source}): view "
                f"{entry.view} of {where} has no emb_* field")
        for field in fields:
            if field not in types:
                raise FeatureSpecError(
                    f"feature spec {spec.name!r}: feature {entry.column} ({entry.source}): "
                    f"view {entry.view} of {where} has no field {field!r} (fields: "
                    f"{', '.join(sorted(types))})")
            kinds = ((String,) if entry.dtype == "string"
                     else (UnixTimestamp,) if "since" in entry.transform
                     else KIND_TYPES[entry.kind])
            if types[field] not in kinds:
                allowed = ", ".join(str(t) for t in kinds)
                raise FeatureSpecError(
                    f"feature spec {spec.name!r}: feature {entry.column} ({entry.source}): "
                    f"{where} holds it as {types[field]}, a {entry.kind} feature"
                    f"{' of dtype string' if entry.dtype == 'string' else ''} takes {allowed}")


def _views(source: Any) -> dict[str, FeatureView]:
    definitions = getattr(source, "definitions", None)
    if definitions is not None:  # a MoonFeatureStore
        found = [o for o in definitions.objects() if isinstance(o, FeatureView)]
    elif hasattr(source, "list_feature_views"):  # a Feast FeatureStore: its registry
        found = list(source.list_feature_views())
    else:
        found = list(source)
    return {v.name: v for v in found}


def extra_join_keys(store_or_views: Any, spec: FeatureSpec) -> list[str]:
    """The join keys of the views ``spec``'s extras read (``item_id``, ``user_id``, and
    ``target_category_id`` / ``target_brand_id`` for the user x category / brand views),
    in order of first use."""
    views = _views(store_or_views)
    keys: list[str] = []
    for e in spec.extras():
        for key in views[e.view].join_keys:
            if key not in keys:
                keys.append(key)
    return keys


def feature_service(spec: FeatureSpec, views: Iterable[FeatureView]) -> FeatureService:
    """The ``FeatureService`` of ``spec`` over ``views`` (checked first: FeatureSpecError
    naming a feature the views lack or type differently)."""
    by_name = _views(views)
    check_spec(by_name.values(), spec, "the repository's definitions")
    fields: dict[str, list[str]] = {}
    for entry in spec.features:
        for field in _fields(entry, by_name[entry.view]):
            names = fields.setdefault(entry.view, [])
            if field not in names:
                names.append(field)
    projections = [by_name[view][names] for view, names in fields.items()]
    return FeatureService(
        name=service_name(spec),
        features=projections,
        tags={"spec": spec.name},
        description=spec.description or f"the ranker features of spec {spec.name}",
    )


def feature_services(
    views: Iterable[FeatureView], specs: Iterable[str] | None = None
) -> list[FeatureService]:
    """One ``FeatureService`` per spec.

    Args:
        views: the repository's feature views.
        specs: the specs to serve (names or YAML paths): each must load and fit the views,
            else a FeatureSpecError names the spec and the feature. None: every spec of
            ``configs/features/`` that fits the views; one that does not (a spec of another
            world: MovieLens demographics on a synthetic store) is left out with a warning
            naming the feature, and a spec that does not load is an error.
    """
    views = list(views)
    if specs is not None:
        return [feature_service(load_feature_spec(name), views) for name in specs]
    out = []
    for name in known_specs():
        spec = load_feature_spec(name)
        try:
            out.append(feature_service(spec, views))
        except FeatureSpecError as exc:
            warnings.warn(f"{exc}: no FeatureService for it in this repository",
                          UserWarning, stacklevel=2)
    return out

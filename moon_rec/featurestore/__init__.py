"""The MOON representation center on Feast: the only package (with ``feature_repo/``) that
imports Feast.

Modules (import the one you need; ``layout`` and ``tables`` do not import Feast):
    layout         names, Matryoshka sizes, ``FeatureDataPaths``
    tables         behaviour-sequence and item-feature tables from world tables
    definitions    entities, sources, push sources, feature views
    stores         the online store interface ``MoonOnlineStore`` (``stores.base``) and one
                   module per back-end (``stores.sqlite``, ``stores.redis``)
    store          profiles (embedded / production) -> ``MoonFeatureStore``
    materialize    chunked, bounded-memory embedding materialization
    online         ``OnlineFeatureClient``: numpy arrays for a batch of ids
    push           new-item and fresh-behaviour pushes
    retrieval      point-in-time joins in input order
    repo           data paths of ``feature_repo/`` for the ``feast`` CLI
"""

"""The MOON representation center on Feast: the only package (with ``feature_repo/``) that
imports Feast.

Modules (import the one you need; ``layout`` and ``tables`` do not import Feast):
    layout         names, Matryoshka sizes, ``FeatureDataPaths``
    tables         behaviour-sequence and item-feature tables from world tables
    definitions    entities, sources, push sources, feature views
    online_stores  ``MoonSqliteOnlineStore``: Feast's SQLite store, newest-wins writes
    store          profiles (embedded / production) -> ``MoonFeatureStore``
    materialize    chunked, bounded-memory embedding materialization
    online         ``OnlineFeatureClient``: numpy arrays for a batch of ids
    push           new-item and fresh-behaviour pushes
    retrieval      point-in-time joins in input order
    repo           data paths of ``feature_repo/`` for the ``feast`` CLI
"""

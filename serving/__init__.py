"""The online ranking service (DESIGN §9): ``moon serve``.

Modules:
    service        ``RankingService``: the composition of the parts below (no HTTP)
    version_gate   the embedding model_version served; refuses to start on a mismatch
    store_guard    the circuit breaker around every online-store call
    catalog        the embedding center + ANN index, loaded, refreshed, filled from the store
    center         ``EmbeddingCenter``: item embeddings + attributes in process memory
    query_encoder  MOON vectors of queries and new products (image decoding, query cache)
    writer         new items and behaviour events into the online store and the catalog
    ranking        rank and search of one request with the trained ranker
    config, errors ``ServiceConfig``; the errors with their HTTP status
    repo           opening the Feast repository folder the service reads
    app            the FastAPI app (OpenAPI at /openapi.json, docs at /docs)
    server         ``BackgroundServer``: uvicorn on a loopback port in a thread
    cli            ``moon serve``
    loop           the whole loop from a world to a servable ranker + Feast repo (tests, demos)
"""

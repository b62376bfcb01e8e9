"""The online ranking service (DESIGN §9): ``moon serve``.

Modules:
    service  ``RankingService``: rank / search / new items / behaviour over the trained
             ranker, the MOON encoder, Feast and the embedding center (no HTTP)
    center   ``EmbeddingCenter``: item embeddings + attributes in process memory
    app      the FastAPI app (OpenAPI at /openapi.json, docs at /docs)
    server   ``BackgroundServer``: uvicorn on a loopback port in a thread
    cli      ``moon serve``
    loop     the whole loop from a world to a servable ranker + Feast repo (tests, demos)
"""

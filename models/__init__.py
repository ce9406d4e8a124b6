"""Models, grouped by product line: :mod:`models.relevance` (search relevance) and
:mod:`models.retrieval` (homefeed retrieval), over the shared :mod:`models.artifacts` (registry,
gates, publishing) and the small shared modules here (packaged weights, evaluation mode, process
liveness; ``random_models`` for tests and benchmarks only)."""

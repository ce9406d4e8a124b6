"""Homefeed retrieval: two-tower models composed from parts (user side ``(batch, n_vectors, dim)``),
their training and evaluation, FAISS and sharded indexes, and serving. Never imports
:mod:`models.relevance`."""

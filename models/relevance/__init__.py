"""Search relevance: the cross-encoder teacher, its scoring (int8, 4-bit), the distilled students
(MLP, MMoE) and their evaluation. Never imports :mod:`models.retrieval`."""

"""Embeddings of texts by text hash, held once in memory and gathered per row.

``student_features`` rows name their query and pin texts by hash (a key of ``text_embeddings``)
instead of carrying two 384-float vectors each: a text is stored once however many pairs share
it (68,524 CrowdFlower pairs share 7.5k texts), and a Spark scoring task ships each worker the
lookup once (a broadcast) and then only ids and dense features per row.

Memory: ``len(keys) * dim * 4`` bytes per copy (1M texts x 384 dims = 1.5 GB): the lookup holds
the texts of the slice being scored, not the whole cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


class MissingEmbeddings(KeyError):
    """Rows name text hashes the lookup does not hold."""

    def __str__(self) -> str:
        return str(self.args[0])


class EmbeddingLookup:
    """``keys[i]`` (a text hash) has embedding ``matrix[i]`` (float32, ``[n, dim]``)."""

    def __init__(self, keys: Sequence[str] | np.ndarray, matrix: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=object)
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if not matrix.flags.writeable:  # a view of Arrow memory: torch wants arrays it may own
            matrix = matrix.copy()
        if matrix.ndim != 2 or len(keys) != len(matrix):
            raise ValueError(f"embedding lookup: {len(keys)} keys for a matrix of shape {matrix.shape}")
        if len(pd.unique(keys)) != len(keys):
            raise ValueError("embedding lookup: duplicate text hashes")
        self.keys = keys
        self.matrix = matrix
        self._index: pd.Index | None = None

    def __getstate__(self) -> dict:  # the hash index is rebuilt where it is used (once per worker)
        return {"keys": self.keys, "matrix": self.matrix}

    def __setstate__(self, state: dict) -> None:
        self.keys, self.matrix, self._index = state["keys"], state["matrix"], None

    def __len__(self) -> int:
        return len(self.keys)

    def positions(self, hashes) -> np.ndarray:
        """Row of each hash in :attr:`matrix` (a sequence, numpy array or Arrow string array)."""
        if self._index is None:
            self._index = pd.Index(self.keys)
        if hasattr(hashes, "to_numpy") and not isinstance(hashes, np.ndarray | pd.Series):  # Arrow
            hashes = hashes.to_numpy(zero_copy_only=False)
        rows = self._index.get_indexer(np.asarray(hashes, dtype=object))
        missing = rows < 0
        if missing.any():
            example = np.asarray(hashes, dtype=object)[missing][0]
            raise MissingEmbeddings(
                f"{int(missing.sum()):,} rows name texts without an embedding in the lookup "
                f"({len(self):,} texts), e.g. text hash {example}"
            )
        return rows

    def gather(self, hashes) -> np.ndarray:
        """The embeddings of ``hashes``, one row each: ``[len(hashes), dim]`` float32."""
        return self.matrix[self.positions(hashes)]

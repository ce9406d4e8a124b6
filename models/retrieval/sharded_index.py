"""A published FAISS index: its manifest entry, its shards checked against it, searched as one.

An index version (``<lake>/artifacts/indexes/<name>/<version>/``, a registry folder) holds one
``shard-NNNNN.faiss`` per range of item ids that had vectors, and its ``manifest.json`` carries an
``index`` entry (:class:`IndexDescription`): the model family and version whose item tower made
the vectors, dimension, metric, factory string and search parameters, the faiss version, the
recall@10 it was published with, and per shard its file, row count, id range and sha256.

:meth:`ShardedIndex.open` refuses a version with a missing shard or a shard whose bytes are not
the ones the manifest recorded, naming the file; nothing is searched half-loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from models.artifacts.fingerprint import file_sha256
from models.retrieval.ann import merge_top_k, set_search_params
from models.retrieval.filtered_search import ShardFilter, bitmap

INDEX = "index"  # the manifest's key for the description
METRIC = "inner_product"
EXACT_FILTER_BELOW = 20_000  # a filter allowing at most this many ids is answered exactly


class IndexIntegrityError(RuntimeError):
    """An index version cannot be served as published: a shard missing or changed."""


@dataclass(frozen=True)
class ShardInfo:
    file: str
    rows: int
    min_id: int
    max_id: int
    sha256: str


@dataclass(frozen=True)
class IndexDescription:
    model_family: str
    model_version: str
    dim: int
    factory: str
    search_params: str
    faiss_version: str
    recall_at_10: float
    rows: int
    shards: tuple[ShardInfo, ...]
    metric: str = METRIC

    @property
    def model(self) -> str:
        return f"{self.model_family}/{self.model_version}"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], where: str) -> IndexDescription:
        entry = manifest.get(INDEX)
        if not isinstance(entry, dict):
            raise IndexIntegrityError(f"{where}: the manifest has no {INDEX!r} entry: not an index version")
        try:
            shards = tuple(ShardInfo(**s) for s in entry["shards"])
            return cls(**{**entry, "shards": shards})
        except (KeyError, TypeError) as err:
            raise IndexIntegrityError(f"{where}: the manifest's {INDEX!r} entry is malformed: {err}") from err


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.faiss"


def write_shard(index: faiss.Index, folder: Path, number: int, ids: np.ndarray) -> ShardInfo:
    """Write ``index`` (holding ``ids``) as shard ``number`` of ``folder``; its description."""
    path = Path(folder) / shard_name(number)
    faiss.write_index(index, str(path))
    return ShardInfo(path.name, int(len(ids)), int(ids.min()), int(ids.max()), file_sha256(path))


class ShardedIndex:
    """Every shard of one index version, checked and loaded; searched as one index."""

    def __init__(
        self, description: IndexDescription, shards: list[faiss.Index], exact_filter_below: int = EXACT_FILTER_BELOW
    ) -> None:
        self.description = description
        self.shards = shards
        self.exact_filter_below = exact_filter_below
        self._filters: list[ShardFilter] | None = None

    @classmethod
    def open(
        cls,
        folder: str | Path,
        description: IndexDescription,
        where: str,
        exact_filter_below: int = EXACT_FILTER_BELOW,
    ) -> ShardedIndex:
        folder = Path(folder)
        loaded = []
        for shard in description.shards:
            path = folder / shard.file
            if not path.is_file():
                raise IndexIntegrityError(
                    f"{where}: shard {shard.file} is missing (expected at {path}, {shard.rows:,} vectors, ids "
                    f"{shard.min_id}..{shard.max_id}); rebuild the index or roll back to the previous version"
                )
            digest = file_sha256(path)
            if digest != shard.sha256:
                raise IndexIntegrityError(
                    f"{where}: shard {shard.file} is corrupt: its sha256 is {digest[:12]}..., the manifest "
                    f"recorded {shard.sha256[:12]}...; rebuild the index or roll back to the previous version"
                )
            index = faiss.read_index(str(path))
            if index.ntotal != shard.rows or index.d != description.dim:
                raise IndexIntegrityError(
                    f"{where}: shard {shard.file} holds {index.ntotal} vectors of dimension {index.d}, the manifest "
                    f"says {shard.rows} of dimension {description.dim}"
                )
            loaded.append(set_search_params(index, description.search_params))
        return cls(description, loaded, exact_filter_below)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, *, exact: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of each query's ``k`` best vectors over all shards (ids -1 pad only when
        fewer than ``k`` vectors qualify).

        ``allowed``: only these ids (conditional retrieval). A filter allowing at most
        ``exact_filter_below`` ids is searched exactly (``exact`` forces either way); otherwise
        through faiss's selectors (:mod:`models.retrieval.filtered_search`), and a query the
        selector answered with fewer than ``k`` ids is answered exactly instead."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.description.dim:
            raise ValueError(f"queries must be (n, {self.description.dim}), got {queries.shape}")
        if allowed is None:
            return merge_top_k([shard.search(queries, k) for shard in self.shards], k)
        allowed = np.unique(np.asarray(allowed, dtype=np.int64))
        if self._filters is None:
            self._filters = [ShardFilter(shard, self.description.search_params) for shard in self.shards]
        if exact is None:
            exact = len(allowed) <= self.exact_filter_below
        if exact:
            return merge_top_k([f.exact_search(queries, k, allowed) for f in self._filters], k)
        widen, bits = self.description.rows / max(len(allowed), 1), bitmap(allowed)
        scores, ids = merge_top_k([f.selector_search(queries, k, bits, widen) for f in self._filters], k)
        short = np.flatnonzero((ids >= 0).sum(1) < min(k, len(allowed)))
        if len(short):
            scores[short], ids[short] = merge_top_k(
                [f.exact_search(queries[short], k, allowed) for f in self._filters], k
            )
        return scores, ids

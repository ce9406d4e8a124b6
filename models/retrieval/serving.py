"""Serving retrieval: the promoted user model and the index built from its item tower, kept in
step, and the version operations that keep them so.

An index version's manifest names the model version whose item vectors it holds. Promoting an
index promotes that model with it, and rolling an index back promotes the model its previous
version names, so the pair always moves together. :meth:`Retrieval.open` refuses to serve when
they disagree anyway (someone promoted a model alone), when a model file or an index shard is
not the one published, or when a shard is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.artifacts.registry import Registry, RegistryError
from models.retrieval.retriever import merge_vector_results
from models.retrieval.sharded_index import IndexDescription, ShardedIndex
from models.retrieval.two_tower import RetrievalModel, load_artifact

INDEXES = "indexes"  # the index registry's folder under the artifacts root


class VersionMismatch(RuntimeError):
    """The promoted user model is not the one the promoted index was built from."""


@dataclass(frozen=True)
class IndexVersion:
    version: str
    model: str
    rows: int
    shards: int
    factory: str
    recall_at_10: float
    created_at: str
    current: bool


class IndexVersions:
    """The versions of one named index, next to the model registry they refer to."""

    def __init__(self, artifacts: str | Path, name: str, keep: int = 5) -> None:
        self.name = name
        self.models = Registry(artifacts)
        self.indexes = Registry(Path(artifacts) / INDEXES, keep=keep)

    def describe(self, version: str) -> IndexDescription:
        where = f"index {self.name}/{version}"
        return IndexDescription.from_manifest(self.indexes.manifest(self.name, version), where)

    def list(self) -> list[IndexVersion]:
        current = self.indexes.current(self.name)
        rows = []
        for version in self.indexes.versions(self.name):
            d = self.describe(version)
            created = str(self.indexes.manifest(self.name, version).get("created_at", ""))
            rows.append(
                IndexVersion(
                    version, d.model, d.rows, len(d.shards), d.factory, d.recall_at_10, created, version == current
                )
            )
        return rows

    def promote(self, version: str) -> IndexDescription:
        """Promote index ``version`` and the model version it was built from, model first."""
        description = self.describe(self.indexes.resolve(self.name, version))
        self.models.promote(description.model_family, description.model_version)
        self.indexes.promote(self.name, version)
        return description

    def rollback(self) -> tuple[str, IndexDescription]:
        """Promote the previous index version and its model; returns (version, description)."""
        version = self.indexes.rollback(self.name)
        description = self.describe(version)
        self.models.promote(description.model_family, description.model_version)
        return version, description


class Retrieval:
    """Top-k items for a user history: the promoted model's user tower, the promoted index."""

    def __init__(
        self, model: RetrievalModel, pins: list[str], index: ShardedIndex, index_version: str, model_source: str = ""
    ) -> None:
        self.model, self.pins, self.index, self.index_version = model, pins, index, index_version
        self.model_source = model_source  # the engagement source the model was trained on
        self.positions = {pin: i + 1 for i, pin in enumerate(pins)}

    @classmethod
    def open(cls, artifacts: str | Path, name: str) -> Retrieval:
        versions = IndexVersions(artifacts, name)
        index_version = versions.indexes.resolve(name)
        description = versions.describe(index_version)
        family = description.model_family
        promoted = versions.models.current(family)
        if promoted != description.model_version:
            raise VersionMismatch(
                f"index {name}/{index_version} holds the item vectors of {description.model}, but the promoted "
                f"{family} model is {promoted or 'none'}: its users would be scored against another model's items. "
                f"Promote them together (pinpipe index promote {index_version}) or roll back (pinpipe index rollback)"
            )
        try:
            versions.models.verify(family, promoted)
        except RegistryError as err:
            raise RegistryError(f"the promoted user model: {err}") from err
        folder = versions.models.path(family, promoted)
        index = ShardedIndex.open(
            versions.indexes.path(name, index_version), description, f"index {name}/{index_version}"
        )
        source = str(versions.models.manifest(family, promoted).get("inputs", {}).get("source", ""))
        return cls(*load_artifact(folder), index, index_version, source)

    @property
    def description(self) -> IndexDescription:
        return self.index.description

    def history_row(self, history: list[str]) -> torch.Tensor:
        """The user tower's input for a history of pin ids (oldest first); unknown pins dropped."""
        width = self.model.settings.max_len
        items = [self.positions[p] for p in history if p in self.positions][-width:]
        if not items:
            raise ValueError(
                f"none of the {len(history)} engaged pins is an item of {self.description.model}: "
                "nothing to retrieve from"
            )
        return torch.tensor([[0] * (width - len(items)) + items], dtype=torch.long)

    @torch.no_grad()
    def top_k(self, history: list[str], k: int) -> list[tuple[str, float]]:
        """The ``k`` best pins (id, cosine score) the history has not engaged with, best first."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        row = self.history_row(history)
        vectors = self.model.user_tower.encode(row).numpy().astype(np.float32)  # (1, n_vectors, dim)
        engaged = set(row[row > 0].tolist())
        scores, ids = self.index.search(vectors[0], k + len(engaged))  # one search per user vector
        scores, ids = merge_vector_results(scores[None], ids[None])
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0 and i not in engaged]
        return [(self.pins[i - 1], s) for i, s in found[:k]]

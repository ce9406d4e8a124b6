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
from models.artifacts.storage import Storage
from models.retrieval.retriever import best_score, round_robin, without
from models.retrieval.sharded_index import EXACT_FILTER_BELOW, IndexDescription, ShardedIndex
from models.retrieval.two_tower import RetrievalModel, load_artifact, load_interest_names

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

    def __init__(self, artifacts: str | Path | Storage, name: str, keep: int = 5) -> None:
        storage = artifacts if isinstance(artifacts, Storage) else Storage(str(artifacts))
        self.name = name
        self.models = Registry(storage)
        self.indexes = Registry(storage.child(INDEXES), keep=keep)

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

    def promoted_pair(self) -> tuple[str, IndexDescription]:
        """The promoted index version and its description, refused (:class:`VersionMismatch`)
        when the promoted model is not the one the index was built from."""
        version = self.indexes.resolve(self.name)
        description = self.describe(version)
        promoted = self.models.current(description.model_family)
        if promoted != description.model_version:
            raise VersionMismatch(
                f"index {self.name}/{version} holds the item vectors of {description.model}, but the promoted "
                f"{description.model_family} model is {promoted or 'none'}: its users would be scored against "
                f"another model's items. Promote them together (pinpipe index promote {version}) or roll back "
                "(pinpipe index rollback)"
            )
        return version, description

    def rollback(self) -> tuple[str, IndexDescription]:
        """Promote the previous index version and its model; returns (version, description)."""
        version = self.indexes.rollback(self.name)
        description = self.describe(version)
        self.models.promote(description.model_family, description.model_version)
        return version, description


@dataclass(frozen=True)
class Candidate:
    pin: str
    score: float  # cosine with the user vector that found it
    interest: int  # that vector: 0 is the user's heaviest interest (always 0 with one vector)


class Retrieval:
    """Top-k items for a user history: the promoted model's user tower, the promoted index.

    A user with several interest vectors (a capsule tower) is searched once per vector, the
    ``interests`` heaviest kept (0: all), and the lists merged round-robin; several projections
    of one state are merged by best score. A conditional model retrieves for one interest
    (``interest=``, a name of its ``interests.json``): the user tower is conditioned on it and
    the index searched only among that interest's items."""

    def __init__(
        self,
        model: RetrievalModel,
        pins: list[str],
        index: ShardedIndex,
        index_version: str,
        model_source: str = "",
        interest_names: list[str] | None = None,
    ) -> None:
        self.model, self.pins, self.index, self.index_version = model, pins, index, index_version
        self.model_source = model_source  # the engagement source the model was trained on
        self.positions = {pin: i + 1 for i, pin in enumerate(pins)}
        self.interest_names = list(interest_names or [])
        self.interest_ids = {name: i + 1 for i, name in enumerate(self.interest_names)}

    @classmethod
    def open(
        cls,
        artifacts: str | Path | Storage,
        name: str,
        exact_filter_below: int = EXACT_FILTER_BELOW,
        version: str | None = None,
    ) -> Retrieval:
        """The promoted index and model (refused when they are not a pair), or index ``version``
        and the model version its manifest names (a batch job pins the pair it started with)."""
        versions = IndexVersions(artifacts, name)
        if version is None:
            index_version, description = versions.promoted_pair()
        else:
            index_version = versions.indexes.resolve(name, version)
            description = versions.describe(index_version)
        family, model_version = description.model_family, description.model_version
        try:
            versions.models.verify(family, model_version)
        except RegistryError as err:
            whose = "the promoted user model" if version is None else f"the user model of index {name}/{index_version}"
            raise RegistryError(f"{whose}: {err}") from err
        folder = versions.models.path(family, model_version)
        where = f"index {name}/{index_version}"
        index = ShardedIndex.open(versions.indexes.path(name, index_version), description, where, exact_filter_below)
        source = str(versions.models.manifest(family, model_version).get("inputs", {}).get("source", ""))
        return cls(*load_artifact(folder), index, index_version, source, load_interest_names(folder))

    @property
    def description(self) -> IndexDescription:
        return self.index.description

    def history_rows(self, histories: list[list[str]]) -> tuple[torch.Tensor, list[set[int]], list[int]]:
        """For the histories (pin ids, oldest first) with a pin the model knows: the user tower's
        input rows (the ``max_len`` most recent known pins, left-padded), the item indices each
        engaged with (all of them: none is a candidate), and their positions in ``histories``."""
        width = self.model.settings.max_len
        rows, engaged, known = [], [], []
        for at, history in enumerate(histories):
            items = [self.positions[p] for p in history if p in self.positions]
            if items:
                recent = items[-width:]
                rows.append([0] * (width - len(recent)) + recent)
                engaged.append(set(items))
                known.append(at)
        return torch.tensor(rows, dtype=torch.long).view(len(rows), width), engaged, known

    def history_row(self, history: list[str]) -> torch.Tensor:
        """The user tower's input for a history of pin ids (oldest first); unknown pins dropped."""
        rows, _, known = self.history_rows([history])
        if not known:
            raise self._nothing_known(history)
        return rows

    def _nothing_known(self, history: list[str]) -> ValueError:
        return ValueError(
            f"none of the {len(history)} engaged pins is an item of {self.description.model}: nothing to retrieve from"
        )

    def vectors_searched(self, interests: int) -> int:
        """User vectors searched per user when keeping the ``interests`` heaviest (0: all)."""
        if interests < 0:
            raise ValueError(f"interests must be >= 0 (0 = all), got {interests}")
        n = self.model.n_vectors
        return n if interests == 0 else min(interests, n)

    def interest_items(self, interest: str) -> tuple[int, np.ndarray]:
        """A conditional model's interest id for ``interest`` and the item indices it covers."""
        item_interests = self.model.item_interests
        if item_interests is None:
            raise ValueError(
                f"{self.description.model} is not a conditional model (two_tower.model.conditional): "
                "it retrieves without an interest"
            )
        if interest not in self.interest_ids:
            shown = ", ".join(self.interest_names[:5])
            raise ValueError(
                f"unknown interest {interest!r}: {self.description.model} knows {len(self.interest_names):,} "
                f"interests ({shown}, ...)"
            )
        iid = self.interest_ids[interest]
        return iid, np.flatnonzero(item_interests.cpu().numpy() == iid).astype(np.int64)

    def top_k(self, history: list[str], k: int, *, interest: str | None = None, interests: int = 0) -> list[Candidate]:
        """The ``k`` best pins the history has not engaged with (:meth:`candidates` for one user;
        every pin of ``history`` is left out, also those older than the ``max_len`` it reads)."""
        found = self.candidates([history], k, interest=interest, interests=interests)[0]
        if found is None:
            raise self._nothing_known(history)
        return found

    def candidates(
        self, histories: list[list[str]], k: int, *, interest: str | None = None, interests: int = 0
    ) -> list[list[Candidate] | None]:
        """Each history's ``k`` best pins, its engaged ones left out (None for a history with no
        pin the model knows): one batched encoding and one batched index search for all of them."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        kept = self.vectors_searched(interests)
        rows, engaged, known = self.history_rows(histories)
        out: list[list[Candidate] | None] = [None] * len(histories)
        if known:
            for at, found in zip(known, self._search(rows, engaged, k, interest, kept), strict=True):
                out[at] = found
        return out

    @torch.no_grad()
    def _search(
        self, rows: torch.Tensor, engaged: list[set[int]], k: int, interest: str | None, kept: int
    ) -> list[list[Candidate]]:
        """The batched core of :meth:`candidates`: ``rows`` encoded, the ``kept`` heaviest user
        vectors each searched, the lists merged per user."""
        allowed, condition = None, None
        if interest is not None:
            iid, allowed = self.interest_items(interest)
            condition = torch.full((len(rows),), iid, dtype=torch.long)
        vectors, mass = self.model.user_tower.encode_with_mass(rows, interests=condition)
        vectors, mass = vectors[:, :kept].numpy().astype(np.float32), mass[:, :kept].numpy()
        depth = k + max(len(e) for e in engaged)
        scores, ids = self.index.search(vectors.reshape(-1, vectors.shape[-1]), depth, allowed)
        scores, ids = scores.reshape(len(rows), kept, depth), ids.reshape(len(rows), kept, depth)
        by_round_robin = self.model.user_tower.label_aware
        out = []
        for u in range(len(rows)):
            live = np.flatnonzero(mass[u] > 0) if by_round_robin else np.arange(kept)
            user_ids, user_scores = without(ids[u, live], scores[u, live], engaged[u])
            if by_round_robin:
                found, found_scores, origin = round_robin(user_ids, user_scores, k)
                origin = live[origin]
            else:
                found, found_scores, origin = best_score(user_ids, user_scores, k)
            out.append(
                [
                    Candidate(self.pins[i - 1], float(s), int(o))
                    for i, s, o in zip(found, found_scores, origin, strict=True)
                ]
            )
        return out

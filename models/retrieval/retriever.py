"""The serving side of a two-tower model: the item vectors computed once, users scored against
all of them (an item's score the best of the user's vectors) with the items they already
engaged with masked out; and the merges of per-vector top lists from an ANN index (by best
score, or round-robin over a multi-interest user's interests)."""

from __future__ import annotations

import numpy as np
import torch

from models.retrieval.towers import user_item_scores
from models.retrieval.two_tower import RetrievalModel


class Retriever:
    """Exact retrieval over the whole catalogue."""

    def __init__(self, model: RetrievalModel) -> None:
        self.model = model.eval()
        with torch.no_grad():
            self.items = model.all_items()

    def user_vectors(self, histories: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        """(users, n_vectors, dim) unit vectors."""
        return self.model.user_tower.encode(histories, batch)

    @torch.no_grad()
    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """(users, n_items) scores; column j is item j+1; engaged items are -inf."""
        return mask_engaged(user_item_scores(self.user_vectors(histories), self.items), histories)

    def top_k(self, histories: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(item indices 1..n, scores) of each user's k best items."""
        values, columns = self.scores(histories).topk(k, dim=1)
        return columns + 1, values


def mask_engaged(scores: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
    """``scores`` with each user's history items (index i -> column i-1) set to -inf."""
    rows = torch.arange(len(histories), device=scores.device).unsqueeze(1).expand_as(histories)
    present = histories > 0
    scores = scores.clone()
    scores[rows[present], histories[present] - 1] = float("-inf")
    return scores


def merge_vector_results(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-vector top lists of users with several vectors, ``scores``/``ids`` (users, n_vectors,
    k) as an index answers them (-1: none), merged into one list per user (users, n_vectors * k):
    best score first, an item found by several vectors once, at its best score (the score the
    exact retriever gives it), -1 padding the end. One vector: its list as it is."""
    users, n_vectors, k = ids.shape
    if n_vectors == 1:
        return scores[:, 0], ids[:, 0]
    flat_scores, flat_ids = scores.reshape(users, -1), ids.reshape(users, -1)
    out_scores = np.full_like(flat_scores, -np.inf)
    out_ids = np.full_like(flat_ids, -1)
    for u in range(users):
        order = np.argsort(-flat_scores[u], kind="stable")
        seen: set[int] = set()
        j = 0
        for i in order:
            item = int(flat_ids[u, i])
            if item < 0 or item in seen:
                continue
            seen.add(item)
            out_scores[u, j], out_ids[u, j] = flat_scores[u, i], item
            j += 1
    return out_scores, out_ids


def round_robin(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-interest top lists of one user, ``ids``/``scores`` (n_interests, depth) heaviest
    interest first (-1: none), merged round-robin into at most ``k`` items: every interest's
    best, then every interest's second best, ..., an item found again skipped. Returns (ids,
    scores, the interest each came from), in that order."""
    out_ids, out_scores, origin = [], [], []
    seen: set[int] = set()
    n_interests, depth = ids.shape
    for rank in range(depth):
        for interest in range(n_interests):
            item = int(ids[interest, rank])
            if item < 0 or item in seen:
                continue
            seen.add(item)
            out_ids.append(item)
            out_scores.append(float(scores[interest, rank]))
            origin.append(interest)
            if len(out_ids) == k:
                return np.array(out_ids), np.array(out_scores), np.array(origin)
    return np.array(out_ids, dtype=np.int64), np.array(out_scores, dtype=np.float32), np.array(origin, dtype=np.int64)


def without(ids: np.ndarray, scores: np.ndarray, engaged: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-vector lists (n_vectors, depth) with the ``engaged`` ids taken out and each list
    closed up (-1 padding its end), so every list's first entries are its best new items."""
    keep = (ids >= 0) & ~np.isin(ids, list(engaged))
    out_ids, out_scores = np.full_like(ids, -1), np.full_like(scores, -np.inf)
    for v in range(len(ids)):
        row = ids[v][keep[v]]
        out_ids[v, : len(row)], out_scores[v, : len(row)] = row, scores[v][keep[v]]
    return out_ids, out_scores


def best_score(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-vector lists (n_vectors, depth) merged by score: an item once, at its best score,
    with the vector that gave it."""
    order = np.argsort(-np.where(ids >= 0, scores, -np.inf), axis=None, kind="stable")
    out: dict[int, tuple[float, int]] = {}
    for flat in order:
        vector, rank = divmod(int(flat), ids.shape[1])
        item = int(ids[vector, rank])
        if item >= 0 and item not in out:
            out[item] = (float(scores[vector, rank]), vector)
            if len(out) == k:
                break
    items = np.array(list(out), dtype=np.int64)
    return items, np.array([v[0] for v in out.values()]), np.array([v[1] for v in out.values()], dtype=np.int64)

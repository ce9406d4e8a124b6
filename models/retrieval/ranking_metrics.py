"""Full-ranking retrieval metrics (the S3-Rec protocol): each user's held-out item is ranked
against ALL items, with the items of the user's input sequence masked out; HR@k is the share of
users whose item ranks in the top k, NDCG@k adds 1/log2(rank + 2) for those that do."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.retrieval.two_tower_settings import RANKING_KS

KS = RANKING_KS


@dataclass(frozen=True)
class RankingMetrics:
    users: int
    hr: dict[int, float]
    ndcg: dict[int, float]
    coverage: dict[int, float]  # share of the catalogue that appears in some user's top k

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {"users": self.users}
        for k in sorted(self.hr):
            out[f"hr@{k}"] = self.hr[k]
            out[f"ndcg@{k}"] = self.ndcg[k]
            out[f"coverage@{k}"] = self.coverage[k]
        return out


class RankAccumulator:
    """Ranks of the held-out items, fed batch by batch (scores of one batch of users at a time)."""

    def __init__(self, n_items: int, ks: tuple[int, ...] = KS) -> None:
        self.ks, self.n_items = ks, n_items
        self.ranks: list[torch.Tensor] = []
        self.seen = {k: torch.zeros(n_items, dtype=torch.bool) for k in ks}

    def add(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """``scores`` (users, n_items), masked already; ``targets`` item indices 1..n_items."""
        target_scores = scores.gather(1, (targets - 1).unsqueeze(1))
        self.ranks.append((scores > target_scores).sum(1).cpu())  # ties count in the user's favour
        values, top = scores.topk(min(max(self.ks), scores.shape[1]), dim=1)  # a catalogue may be smaller than k
        recommended = values.isfinite().cpu()  # a user's masked items are not recommendations
        top = top.cpu()
        for k in self.ks:
            self.seen[k][top[:, :k][recommended[:, :k]]] = True

    def result(self) -> RankingMetrics:
        ranks = torch.cat(self.ranks)
        hr, ndcg = metrics_from_ranks(ranks, self.ks)
        coverage = {k: float(self.seen[k].double().mean()) for k in self.ks}
        return RankingMetrics(len(ranks), hr, ndcg, coverage)


def ranks_from_top_lists(
    top_ids: torch.Tensor, histories: torch.Tensor, targets: torch.Tensor, depth: int
) -> torch.Tensor:
    """Rank of each target within its user's candidate list (``top_ids``, best first, item
    indices 1..n, -1 for none) once the user's history items are dropped; ``depth`` when the
    target is not among the first ``depth`` kept candidates (an ANN index answers a top list,
    not a full ranking: ranks beyond ``depth`` are unknown, and count as misses for k <= depth)."""
    ranks = torch.full((len(targets),), depth, dtype=torch.long)
    for u in range(len(targets)):
        engaged = set(histories[u][histories[u] > 0].tolist())
        kept = [i for i in top_ids[u].tolist() if i > 0 and i not in engaged][:depth]
        target = int(targets[u])
        if target in kept and target not in engaged:
            ranks[u] = kept.index(target)
    return ranks


def metrics_from_ranks(ranks: torch.Tensor, ks: tuple[int, ...] = KS) -> tuple[dict[int, float], dict[int, float]]:
    """(HR@k, NDCG@k) from 0-based ranks."""
    ranks = ranks.double()
    gain = 1.0 / torch.log2(ranks + 2.0)
    hr = {k: float((ranks < k).double().mean()) for k in ks}
    ndcg = {k: float(torch.where(ranks < k, gain, torch.zeros_like(gain)).mean()) for k in ks}
    return hr, ndcg

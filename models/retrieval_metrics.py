"""Full-ranking retrieval metrics (the S3-Rec protocol): each user's held-out item is ranked
against ALL items, with the items of the user's input sequence masked out; HR@k is the share of
users whose item ranks in the top k, NDCG@k adds 1/log2(rank + 2) for those that do."""

from __future__ import annotations

from dataclasses import dataclass

import torch

KS = (5, 10, 20)


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
        top = scores.topk(max(self.ks), dim=1).indices.cpu()
        for k in self.ks:
            self.seen[k][top[:, :k].reshape(-1)] = True

    def result(self) -> RankingMetrics:
        ranks = torch.cat(self.ranks).double()
        hr = {k: float((ranks < k).double().mean()) for k in self.ks}
        gain = 1.0 / torch.log2(ranks + 2.0)
        ndcg = {k: float(torch.where(ranks < k, gain, torch.zeros_like(gain)).mean()) for k in self.ks}
        coverage = {k: float(self.seen[k].double().mean()) for k in self.ks}
        return RankingMetrics(len(ranks), hr, ndcg, coverage)

"""Evaluation of two-tower models by the S3-Rec full-ranking protocol: exact (every item ranked,
the history masked), through a FAISS index, and for a model whose catalogue differs from the
evaluation rows' (production on a new model's test users)."""

from __future__ import annotations

import torch

from models.retrieval.ranking_metrics import (
    KS,
    RankAccumulator,
    RankingMetrics,
    metrics_from_ranks,
    ranks_from_top_lists,
)
from models.retrieval.retriever import Retriever, mask_engaged, merge_vector_results
from models.retrieval.sequences import Sequences, trim_padding
from models.retrieval.two_tower import RetrievalModel
from models.torch_modes import evaluating


def evaluate(model: RetrievalModel, sequences: Sequences, batch: int = 1024) -> RankingMetrics:
    """Full ranking of each row's held-out item, its history masked."""
    ranks = RankAccumulator(model.n_items)
    order = torch.argsort((sequences.histories > 0).sum(1), stable=True)  # similar lengths together
    with evaluating(model):
        retriever = Retriever(model)
        for i in range(0, len(order), batch):
            rows = sequences.rows[order[i : i + batch]]
            ranks.add(retriever.scores(trim_padding(rows[:, :-1])), rows[:, -1])
    return ranks.result()


def evaluate_popularity(counts: torch.Tensor, sequences: Sequences, batch: int = 1024) -> RankingMetrics:
    """The popularity baseline by the same protocol: every user gets the most engaged items
    (``counts``: index 0 padding, then each item's training engagements) they have not engaged
    with; equal counts are broken by item index, never in the target's favour."""
    n_items = len(counts) - 1
    tie_break = torch.arange(n_items, 0, -1, dtype=torch.float64) / (n_items + 1)  # in (0, 1): below one count
    popularity = counts[1:].to(torch.float64) + tie_break
    ranks = RankAccumulator(n_items)
    for i in range(0, len(sequences.rows), batch):
        rows = sequences.rows[i : i + batch]
        ranks.add(mask_engaged(popularity.expand(len(rows), n_items), rows[:, :-1]), rows[:, -1])
    return ranks.result()


def evaluate_with_items(
    model: RetrievalModel, model_items: list[str], sequences: Sequences, sequence_items: list[str]
) -> dict[str, float]:
    """Full-ranking metrics of ``sequences`` (1-based indices into ``sequence_items``) for a model
    whose own items are ``model_items``, e.g. production evaluated on a new model's test users:
    items it does not know leave the histories (which are re-packed to the right and cut to its
    ``max_len``), and a held-out item it does not know is a miss. HR and NDCG are over all rows."""
    position = {pin: i + 1 for i, pin in enumerate(model_items)}
    lut = torch.tensor([0] + [position.get(pin, 0) for pin in sequence_items], dtype=torch.long)
    rows = lut[sequences.rows]
    histories = rows[:, :-1]
    packed = histories.gather(1, torch.argsort((histories > 0).long(), dim=1, stable=True))
    rows = torch.cat([packed, rows[:, -1:]], 1)[:, -(model.settings.max_len + 1) :]
    known = rows[:, -1] > 0
    result = evaluate(model, Sequences(rows[known])).as_dict() if known.any() else {}
    share = float(known.double().mean()) if len(rows) else 0.0
    scaled = {k: v * share for k, v in result.items() if k.startswith(("hr@", "ndcg@"))}
    for k in KS:
        scaled.setdefault(f"hr@{k}", 0.0)
        scaled.setdefault(f"ndcg@{k}", 0.0)
    return {"users": len(rows), "known_targets": int(known.sum()), **scaled}


def evaluate_ann(
    model: RetrievalModel, sequences: Sequences, factory: str, params: str = "", depth: int = max(KS), batch: int = 4096
) -> dict[str, float]:
    """HR/NDCG@k of the held-out items when retrieval goes through a FAISS ``factory`` index of
    the item vectors: each user's top ``depth + max_len`` items are searched, the history
    dropped, the target's rank read from what is left."""
    from models.retrieval.ann import build_index, search

    ranks = []
    with evaluating(model):
        retriever = Retriever(model)
        index = build_index(retriever.items.numpy(), factory, params)
        for i in range(0, len(sequences.rows), batch):
            histories, targets = sequences.histories[i : i + batch], sequences.targets[i : i + batch]
            users = retriever.user_vectors(trim_padding(histories)).numpy()
            scores, top = search(index, users.reshape(-1, users.shape[-1]), depth + histories.shape[1])
            _, top = merge_vector_results(
                scores.reshape(len(users), users.shape[1], -1), top.reshape(len(users), users.shape[1], -1)
            )
            ranks.append(ranks_from_top_lists(torch.from_numpy(top), histories, targets, depth))
    hr, ndcg = metrics_from_ranks(torch.cat(ranks))
    return {
        "factory": factory,
        "params": params,
        **{f"hr@{k}": hr[k] for k in KS},
        **{f"ndcg@{k}": ndcg[k] for k in KS},
    }

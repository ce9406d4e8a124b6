"""Teacher inference, one module for training-time validation and batch scoring alike.

* ``encode_pairs`` tokenizes once: the query cut to its token budget, the pin text to what is
  left of ``max_length`` (the budgets the teacher was trained with travel in its artifact);
* ``inference_batches`` orders pairs by token length and cuts batches bounded by rows and by
  padded tokens; ``collate`` pads each batch only to its own longest pair;
* ``predict_proba`` scores in that order and returns per-level probabilities in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from models.relevance.teacher import CrossEncoderTeacher
from models.torch_modes import evaluating


class TokenBudget(Protocol):
    """What encoding needs to know (``TrainSettings`` at training, the scorer at inference)."""

    max_length: int
    query_tokens: int


@dataclass
class EncodedPairs:
    """Token ids per (query, text) pair, with the label index (0..L-1) and query id."""

    input_ids: list[list[int]]
    labels: np.ndarray  # level index, -1 when unknown
    query_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def encode_pairs(
    tokenizer,
    queries: Sequence[str],
    texts: Sequence[str],
    settings: TokenBudget,
    labels: Sequence[int] | None = None,
    query_ids: Sequence | None = None,
) -> EncodedPairs:
    """Tokenize once: query cut to ``query_tokens``, text to what is left of ``max_length``."""
    q_ids = tokenizer(list(queries), add_special_tokens=False)["input_ids"]
    cut = [
        q if len(ids) <= settings.query_tokens else tokenizer.decode(ids[: settings.query_tokens])
        for q, ids in zip(queries, q_ids, strict=False)
    ]
    encoded = tokenizer(cut, [t or "" for t in texts], truncation="only_second", max_length=settings.max_length)[
        "input_ids"
    ]
    n = len(encoded)
    return EncodedPairs(
        encoded,
        np.asarray(labels if labels is not None else [-1] * n, dtype=np.int64),
        np.asarray(query_ids if query_ids is not None else queries),
    )


def collate(
    encoded: EncodedPairs, index: np.ndarray, pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad the chosen examples to their own longest length."""
    rows = [encoded.input_ids[i] for i in index]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[j, : len(r)] = 1
    return ids.to(device), mask.to(device)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters are; CPU for a module without any (an OpenVINO model)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def inference_batches(lengths: np.ndarray, batch_size: int, max_batch_tokens: int = 0) -> list[np.ndarray]:
    """Indices in length order, cut into batches of at most ``batch_size`` rows and, when
    ``max_batch_tokens`` > 0, at most that many padded tokens (rows x longest); a pair longer
    than the budget gets a batch of its own."""
    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    for end in range(1, len(order) + 1):
        rows = end - start
        full = rows == batch_size or end == len(order)
        if not full and max_batch_tokens > 0:
            full = (rows + 1) * lengths[order[end]] > max_batch_tokens
        if full:
            batches.append(order[start:end])
            start = end
    return batches


@torch.inference_mode()
def predict_proba(
    model: CrossEncoderTeacher, encoded: EncodedPairs, batch_size: int, pad_id: int, max_batch_tokens: int = 0
) -> np.ndarray:
    """Per-level probabilities, in input order (batches are formed in length order)."""
    out = np.zeros((len(encoded), model.settings.num_levels), dtype=np.float64)
    device = model_device(model)
    with evaluating(model):
        for idx in inference_batches(encoded.lengths, batch_size, max_batch_tokens):
            ids, mask = collate(encoded, idx, pad_id, device)
            out[idx] = torch.softmax(model(ids, mask).float(), dim=-1).cpu().numpy()
    return out

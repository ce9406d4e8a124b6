"""Training a student: the data it reads, the losses (the training task) and the loop.

``StudentData`` holds one row per (query, pin): the embeddings and dense features, the
teacher's level distribution where the teacher labeled the pair, the human level where a person
did (training folds only — the caller keeps held-out labels out), and click/save rates with
their impression counts.

``StudentLoss`` is the task. Relevance targets:

* ``distillation`` ``pointwise`` or ``both``: KL divergence to the teacher's level distribution
  (soft labels, ``soft_weight``); otherwise cross-entropy to the teacher's most likely level
  (hard labels, ``hard_weight``);
* ``pairwise`` or ``both`` add RankNet on teacher-ordered pairs of one query: for rows i, j of
  the same query whose teacher expected relevance differs by more than ``pairwise_margin``,
  ``softplus(-(s_i - s_j))`` on the student's expected relevance (``pairwise_weight``);
* human levels: cross-entropy (``human_weight``);
* MMoE: click and save towers by binary cross-entropy to the observed rates, weighted by
  impressions (``engagement_weight``).

``incremental=True`` turns both distillation terms off (the teacher contributes only its hard
level), as Pinterest found distillation overfits in incremental training.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from models.relevance.student import CLICK, RELEVANCE, SAVE, Student
from models.relevance.student_settings import StudentTrainSettings

log = logging.getLogger(__name__)


@dataclass
class StudentData:
    query: np.ndarray  # [n, d] float32
    pin: np.ndarray  # [n, d] float32
    dense: np.ndarray  # [n, k] float32, through models.relevance.student.dense_matrix
    query_ids: np.ndarray  # [n] int: rows of one query share an id
    teacher_probs: np.ndarray  # [n, L] float32; rows without a teacher label are zeros
    has_teacher: np.ndarray  # [n] bool
    human_level: np.ndarray  # [n] int, 0-based; -1 = no human label
    click_rate: np.ndarray  # [n] float32
    save_rate: np.ndarray  # [n] float32
    impressions: np.ndarray  # [n] float32: 0 = no engagement target

    def __len__(self) -> int:
        return len(self.query_ids)

    def subset(self, idx: np.ndarray) -> StudentData:
        return StudentData(**{name: value[idx] for name, value in vars(self).items()})

    def tensors(self, idx: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        return {name: torch.as_tensor(value[idx], device=device) for name, value in vars(self).items()}


def expected_relevance(logits: torch.Tensor) -> torch.Tensor:
    """Expected level (1-based) of a level distribution given as logits."""
    levels = torch.arange(1, logits.shape[-1] + 1, device=logits.device, dtype=torch.float32)
    return torch.softmax(logits.float(), dim=-1) @ levels


def ranknet(student_scores: torch.Tensor, teacher_scores: torch.Tensor, query_ids: torch.Tensor, margin: float):
    """Mean ``softplus(-(s_i - s_j))`` over pairs of one query the teacher orders i > j by more
    than ``margin``; None when the batch has no such pair."""
    same = query_ids.unsqueeze(0) == query_ids.unsqueeze(1)
    ordered = same & ((teacher_scores.unsqueeze(1) - teacher_scores.unsqueeze(0)) > margin)
    if not ordered.any():
        return None
    diff = student_scores.unsqueeze(1) - student_scores.unsqueeze(0)
    return nn.functional.softplus(-diff[ordered]).mean()


class StudentLoss:
    """The weighted loss terms of one batch (see the module docstring)."""

    def __init__(self, settings: StudentTrainSettings) -> None:
        self.settings = settings

    def terms(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s = self.settings
        logits = outputs[RELEVANCE].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        teacher = batch["has_teacher"]
        terms: dict[str, torch.Tensor] = {}
        if teacher.any():
            targets = batch["teacher_probs"][teacher]
            if s.pointwise:
                kl = nn.functional.kl_div(log_probs[teacher], targets, reduction="batchmean")
                terms["soft"] = s.soft_weight * kl
            else:
                hard = nn.functional.nll_loss(log_probs[teacher], targets.argmax(-1))
                terms["hard"] = s.hard_weight * hard
            if s.pairwise:
                levels = torch.arange(1, targets.shape[-1] + 1, device=targets.device, dtype=torch.float32)
                pair = ranknet(
                    expected_relevance(logits[teacher]),
                    targets @ levels,
                    batch["query_ids"][teacher],
                    s.pairwise_margin,
                )
                if pair is not None:
                    terms["pairwise"] = s.pairwise_weight * pair
        human = batch["human_level"] >= 0
        if human.any() and s.human_weight > 0:
            terms["human"] = s.human_weight * nn.functional.nll_loss(log_probs[human], batch["human_level"][human])
        shown = batch["impressions"] > 0
        if shown.any() and s.engagement_weight > 0:
            weight = batch["impressions"][shown]
            for task, rate in ((CLICK, "click_rate"), (SAVE, "save_rate")):
                if task in outputs:
                    bce = nn.functional.binary_cross_entropy_with_logits(
                        outputs[task][shown].float(), batch[rate][shown], weight=weight / weight.mean()
                    )
                    terms[task] = s.engagement_weight * bce
        return terms

    def __call__(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        terms = self.terms(outputs, batch)
        if not terms:
            return outputs[RELEVANCE].sum() * 0.0
        return torch.stack(list(terms.values())).sum()


def batches(data: StudentData, batch_size: int, rng: np.random.Generator, by_query: bool) -> list[np.ndarray]:
    """Shuffled row batches; ``by_query`` keeps each query's rows together (whole queries in a
    random order, rows shuffled within), so within-query pairs meet in a batch."""
    order = rng.permutation(len(data))
    if by_query:
        rank = rng.permutation(int(data.query_ids.max()) + 1)
        order = order[np.argsort(rank[data.query_ids[order]], kind="stable")]
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]] = field(default_factory=list)


def train_student(model: Student, train: StudentData, settings: StudentTrainSettings, validate) -> TrainResult:
    """Train with AdamW; after each epoch ``validate(model) -> score`` (higher is better) picks
    the best epoch, whose weights are kept; stops after ``patience`` epochs without a better one."""
    device = next(model.parameters()).device
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    loss_fn = StudentLoss(settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    best = TrainResult(best_epoch=0, best_score=-np.inf)
    best_state = None
    for epoch in range(1, settings.epochs + 1):
        model.train()
        started, total, seen = time.perf_counter(), {}, 0
        for idx in batches(train, settings.batch_size, rng, by_query=settings.pairwise):
            batch = train.tensors(idx, device)
            outputs = model(batch["query"], batch["pin"], batch["dense"])
            terms = loss_fn.terms(outputs, batch)
            if not terms:
                continue
            loss = torch.stack(list(terms.values())).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in terms.items():
                total[name] = total.get(name, 0.0) + value.item() * len(idx)
            seen += len(idx)
        model.eval()  # no dropout while validating
        score = float(validate(model))
        row = {"epoch": epoch, "seconds": round(time.perf_counter() - started, 2), "validation_kappa": score}
        row.update({f"loss_{k}": v / max(seen, 1) for k, v in total.items()})
        best.history.append(row)
        log.info("student epoch %d: %s", epoch, " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"))
        if score > best.best_score:
            best.best_epoch, best.best_score = epoch, score
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best.best_epoch >= settings.patience:
            log.info("student: stopping after epoch %d (best %d)", epoch, best.best_epoch)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return best

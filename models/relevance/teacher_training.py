"""The teacher's training task (the loss) and training loop (CPU or one GPU per process).

The model is ``models/relevance/teacher.py``; encoding and scoring are ``models/relevance/teacher_inference.py``,
which validation here and batch scoring (``models/relevance/scoring.py``) share. Fast on few CPU cores
by doing less work, not by cutting corners:

* tokenization happens once per dataset (``encode_pairs``), not once per epoch;
* batches are formed from length-sorted windows of the shuffled data and padded only to their
  own longest example (dynamic padding), so little compute goes to pad tokens.

``train`` is a plain function: ``train(model, encoded_train, encoded_val, settings) ->
TrainResult``; it early-stops on validation kappa, keeps the best weights, shows progress (loss,
steps/s, ETA) and, with the same seed on CPU, gives the same result every time.

Data-parallel: when ``torch.distributed`` is initialised (``TorchDistributor`` starts the
processes), every rank draws the same batch order and trains on its share of the batches
through ``DistributedDataParallel``; gradients are averaged, so the weights stay identical
across ranks, and every rank validates (identically) so all agree on when to stop.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from models.relevance.metrics import RelevanceReport, evaluate_relevance
from models.relevance.teacher import CrossEncoderTeacher, autocast_dtype
from models.relevance.teacher_inference import EncodedPairs, collate, model_device, predict_proba
from models.relevance.teacher_settings import TrainSettings

log = logging.getLogger(__name__)


class LevelClassificationTask:
    """The training objective: cross-entropy of the teacher's level logits against the human
    label's level index (computed in fp32 whatever the autocast dtype)."""

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.float(), labels)


def length_sorted_batches(
    lengths: np.ndarray, batch_size: int, window: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffle, sort by length inside windows of ``window`` batches, cut into batches, shuffle
    the batches: similar lengths share a batch, and every epoch sees a new order."""
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class TrainResult:
    best_epoch: int
    best: RelevanceReport
    history: list[dict] = field(default_factory=list)
    val_probabilities: np.ndarray | None = None  # of the weights the model holds on return


def _optimizer(model: CrossEncoderTeacher, settings: TrainSettings) -> torch.optim.Optimizer:
    head = [p for p in model.head.parameters() if p.requires_grad]
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    return torch.optim.AdamW(
        [{"params": body, "lr": settings.lr}, {"params": head, "lr": settings.head_lr}],
        weight_decay=settings.weight_decay,
    )


def _world() -> tuple[int, int]:
    """(rank, world size) of the running process group; (0, 1) when not distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _share(batches: list[np.ndarray], rank: int, world: int) -> list[np.ndarray]:
    """This rank's batches: every ``world``-th one, the same count on every rank (DDP needs it)."""
    usable = len(batches) // world * world
    return batches[:usable][rank::world] if world > 1 else batches


def train(
    model: CrossEncoderTeacher,
    train_set: EncodedPairs,
    val_set: EncodedPairs,
    settings: TrainSettings,
    levels: Sequence[int],
    pad_id: int,
) -> TrainResult:
    """Fine-tune ``model`` in place; on return it holds the weights of the best epoch."""
    if (train_set.labels < 0).any() or (val_set.labels < 0).any():
        raise ValueError("every training and validation pair needs a label")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    device = model_device(model)
    rank, world = _world()
    if world > 1 and len(train_set) < settings.batch_size * world:
        raise ValueError(
            f"{len(train_set)} training pairs cannot fill a batch of {settings.batch_size} on {world} ranks"
        )
    forward = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = _optimizer(model, settings)
    steps_per_epoch = max(1, math.ceil(len(train_set) / settings.batch_size) // world)
    total = steps_per_epoch * settings.epochs
    warmup = max(1, int(total * settings.warmup_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    amp_dtype = autocast_dtype(model.settings, device)
    # fp16's narrow exponent range underflows small gradients: scale the loss (bf16 needs no scaling)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    task = LevelClassificationTask()
    lengths = train_set.lengths
    best_kappa, best_epoch, best_state, best_report, best_probs, stale = -math.inf, -1, None, None, None, 0
    history = []
    for epoch in range(settings.epochs):
        model.train()
        batches = _share(length_sorted_batches(lengths, settings.batch_size, settings.sort_window, rng), rank, world)
        # a bar on a terminal; unattended runs (logs) get the log line every tenth of an epoch
        show_bar = settings.progress and rank == 0 and sys.stderr.isatty()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{settings.epochs}", disable=not show_bar, leave=False)
        started, running = time.perf_counter(), 0.0
        log_every = max(1, len(batches) // 10)
        for step, idx in enumerate(bar, 1):
            ids, mask = collate(train_set, idx, pad_id, device)
            labels = torch.as_tensor(train_set.labels[idx], device=device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = task.loss(forward(ids, mask), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            running += loss.item()
            rate = step / (time.perf_counter() - started)
            eta = (len(batches) - step) / rate
            bar.set_postfix(loss=f"{running / step:.4f}", steps_s=f"{rate:.2f}", eta_s=f"{eta:.0f}")
            if rank == 0 and step % log_every == 0:  # for logs of unattended runs, where no bar is seen
                log.info(
                    "epoch %d step %d/%d: loss %.4f, %.2f steps/s, ETA %.0f s",
                    epoch + 1,
                    step,
                    len(batches),
                    running / step,
                    rate,
                    eta,
                )
        epoch_s = time.perf_counter() - started
        seen = sum(len(b) for b in batches) * world
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": running / max(1, len(batches)),
                "pairs_seen": seen,
                "examples_per_s": seen / epoch_s,
            }
        )
        if not settings.select_best and epoch + 1 < settings.epochs:
            log.info(
                "epoch %d: loss %.4f (%.1f ex/s)", epoch + 1, history[-1]["train_loss"], history[-1]["examples_per_s"]
            )
            continue
        probs = predict_proba(model, val_set, settings.eval_batch_size, pad_id)
        report = evaluate_relevance(val_set.query_ids, np.asarray(levels)[val_set.labels], probs, levels)
        history[-1].update(val_kappa=report.kappa, val_accuracy=report.accuracy, val_ndcg_at_20=report.ndcg_at_20)
        log.info(
            "epoch %d: loss %.4f val kappa %.4f acc %.4f nDCG@20 %.4f (%.1f ex/s)",
            epoch + 1,
            history[-1]["train_loss"],
            report.kappa,
            report.accuracy,
            report.ndcg_at_20,
            history[-1]["examples_per_s"],
        )
        if not settings.select_best:
            best_epoch, best_report, best_probs = epoch + 1, report, probs
        elif report.kappa > best_kappa:
            best_kappa, best_epoch, best_report, best_probs, stale = report.kappa, epoch + 1, report, probs, 0
            best_state = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
        else:
            stale += 1
            if stale >= settings.patience:
                log.info("early stop after epoch %d (best %d)", epoch + 1, best_epoch)
                break
    if best_state is not None and settings.select_best:
        model.load_state_dict(best_state)
    return TrainResult(best_epoch, best_report, history, best_probs)

"""The two-tower training task: sampled softmax over in-batch negatives (plus optional uniformly
sampled ones) with logQ correction, and the loop with early stopping on validation NDCG@10.

In-batch negatives are the other examples' positives, so popular items are negatives far more
often than under a full softmax; logQ correction subtracts each candidate's log sampling
probability from its logit (Yi et al., RecSys 2019) so the loss estimates the full softmax. A
candidate equal to the example's own positive (an *accidental hit*) is removed, not counted as
a negative.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from models.retrieval_metrics import KS, RankAccumulator, RankingMetrics, metrics_from_ranks, ranks_from_top_lists
from models.torch_modes import evaluating
from models.two_tower import RetrievalModel, Retriever, TwoTower, TwoTowerEnsemble
from models.two_tower_settings import TwoTowerSettings, TwoTowerTrainSettings

log = logging.getLogger(__name__)


def sampled_softmax_loss(
    users: torch.Tensor,
    positives: torch.Tensor,
    model: TwoTower,
    log_q: torch.Tensor | None,
    extra_negatives: int = 0,
    generator: torch.Generator | None = None,
    user_items: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of each example's positive against the batch's candidates.

    ``users`` (N, dim) unit vectors; ``positives`` (N,) item indices; ``log_q`` (n_items + 1,)
    log probability that an item is one example's positive (None: no correction).
    ``user_items`` = (sequences (B, L) of the batch's users, 0-padded; ``row`` (N,) the sequence
    of each example): candidates in the example's own sequence are removed, not negatives."""
    n = len(positives)
    candidates = model.item_tower(positives)
    logits = users @ candidates.T / model.temperature
    if log_q is not None:
        logits = logits - (log_q[positives] + math.log(n)).unsqueeze(0)  # P(item in this batch) ~ n * q
    removed = _removed(positives, positives, user_items)
    removed.fill_diagonal_(False)
    logits = logits.masked_fill(removed, float("-inf"))
    if extra_negatives:
        sampled = torch.randint(1, model.n_items + 1, (extra_negatives,), generator=generator, device=positives.device)
        extra = users @ model.item_tower(sampled).T / model.temperature
        if log_q is not None:
            extra = extra - math.log(extra_negatives / model.n_items)
        extra = extra.masked_fill(_removed(positives, sampled, user_items), float("-inf"))
        logits = torch.cat([logits, extra], dim=1)
    return F.cross_entropy(logits, torch.arange(n, device=logits.device))


def _removed(
    positives: torch.Tensor, candidates: torch.Tensor, user_items: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """(N, C): candidate c is example i's own positive (an accidental hit) or, with
    ``user_items``, an item of example i's sequence."""
    removed = candidates.unsqueeze(0) == positives.unsqueeze(1)
    if user_items is not None:
        sequences, row = user_items
        in_sequence = (sequences.unsqueeze(2) == candidates.view(1, 1, -1)).any(1)  # (B, C)
        removed |= in_sequence[row]
    return removed


def length_buckets(lengths: torch.Tensor, batch_size: int, generator: torch.Generator, chunk: int = 50) -> list:
    """Row indices in batches of similar lengths, in random order: rows are shuffled, sorted by
    length within chunks of ``chunk`` batches, cut into batches, and the batches shuffled. Short
    histories then train in short (trimmed) batches instead of padded to the longest."""
    order = torch.randperm(len(lengths), generator=generator)
    batches = []
    for start in range(0, len(order), chunk * batch_size):
        part = order[start : start + chunk * batch_size]
        part = part[torch.argsort(lengths[part], stable=True)]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def trim_padding(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` without the leading columns that are padding in every row (positions are counted
    from the right, so the towers see the same thing)."""
    width = int((rows > 0).sum(1).max()) if len(rows) else 0
    return rows[:, rows.shape[1] - max(width, 1) :]


def log_frequencies(counts: torch.Tensor) -> torch.Tensor:
    """log q per item index from training counts (index 0 = padding); add-one smoothed."""
    counts = counts.double() + 1.0
    counts[0] = 0.0
    return (counts / counts.sum()).log().float()


@dataclass(frozen=True)
class Sequences:
    """Left-padded item sequences (users, max_len + 1): a training row's positions predict the
    next item; an evaluation row holds the input history in the first max_len columns and the
    held-out item in the last."""

    rows: torch.Tensor

    @property
    def histories(self) -> torch.Tensor:
        return self.rows[:, :-1]

    @property
    def targets(self) -> torch.Tensor:
        return self.rows[:, -1]


@dataclass
class TwoTowerFit:
    model: RetrievalModel
    best_epoch: int  # an ensemble's: its members' latest
    validation: RankingMetrics
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    member_best_epochs: list[int] = field(default_factory=list)


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
    from models.ann import build_index, search

    ranks = []
    with evaluating(model):
        retriever = Retriever(model)
        index = build_index(retriever.items.numpy(), factory, params)
        for i in range(0, len(sequences.rows), batch):
            histories, targets = sequences.histories[i : i + batch], sequences.targets[i : i + batch]
            _, top = search(index, retriever.user_vectors(trim_padding(histories)).numpy(), depth + histories.shape[1])
            ranks.append(ranks_from_top_lists(torch.from_numpy(top), histories, targets, depth))
    hr, ndcg = metrics_from_ranks(torch.cat(ranks))
    return {
        "factory": factory,
        "params": params,
        **{f"hr@{k}": hr[k] for k in KS},
        **{f"ndcg@{k}": ndcg[k] for k in KS},
    }


def fit(
    model: TwoTower,
    train: Sequences,
    validation: Sequences,
    item_counts: torch.Tensor,
    settings: TwoTowerTrainSettings,
) -> TwoTowerFit:
    """Train on every position of ``train``'s rows; keep the weights of the best validation
    NDCG@10, stop after ``patience`` evaluations without a better one."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    log_q = log_frequencies(item_counts) if settings.logq_correction else None
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    rows = train.rows
    best, best_state, best_epoch, since, history = -1.0, None, 0, 0, []
    validation_metrics: RankingMetrics | None = None
    started = time.perf_counter()
    model.train()
    lengths = (rows > 0).sum(1)
    for epoch in range(1, settings.epochs + 1):
        total, steps = 0.0, 0
        for batch_rows in length_buckets(lengths, settings.batch_size, generator):
            batch = trim_padding(rows[batch_rows])
            inputs, nexts = batch[:, :-1], batch[:, 1:]
            keep = (inputs > 0) & (nexts > 0)
            users = model.user_tower(inputs, every_position=True)[keep]
            row = torch.arange(len(batch)).unsqueeze(1).expand_as(keep)[keep]
            own = (batch, row) if settings.exclude_user_items else None
            loss = sampled_softmax_loss(users, nexts[keep], model, log_q, settings.extra_negatives, generator, own)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + loss.detach().item(), steps + 1
        entry = {"epoch": epoch, "loss": total / max(steps, 1)}
        if epoch % settings.eval_every == 0 or epoch == settings.epochs:
            metrics = evaluate(model, validation)
            entry.update({"validation_ndcg@10": metrics.ndcg[10], "validation_hr@10": metrics.hr[10]})
            if metrics.ndcg[10] > best:
                best, best_epoch, since, validation_metrics = metrics.ndcg[10], epoch, 0, metrics
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since += 1
        history.append(entry)
        if settings.progress:
            log.info("two-tower epoch %d: %s", epoch, {k: round(v, 4) for k, v in entry.items() if k != "epoch"})
        if since >= settings.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    assert validation_metrics is not None
    return TwoTowerFit(model, best_epoch, validation_metrics, history, time.perf_counter() - started)


def fit_members(
    n_items: int,
    settings: TwoTowerSettings,
    attributes: torch.Tensor | None,
    train: Sequences,
    validation: Sequences,
    item_counts: torch.Tensor,
    training: TwoTowerTrainSettings,
) -> TwoTowerFit:
    """The model of ``settings``: ``settings.members`` two-towers, member ``k`` initialised and
    trained (:func:`fit`, with its own early stopping) under seed ``training.seed + k``; more than
    one are validated and served as their :class:`TwoTowerEnsemble`."""
    fits = []
    for k in range(settings.members):
        seed = training.seed + k
        torch.manual_seed(seed)
        member = TwoTower(n_items, dataclasses.replace(settings, members=1), attributes)
        if settings.members > 1:
            log.info("two-tower member %d of %d (seed %d)", k + 1, settings.members, seed)
        fits.append(fit(member, train, validation, item_counts, dataclasses.replace(training, seed=seed)))
    if len(fits) == 1:
        return fits[0]
    ensemble = TwoTowerEnsemble([f.model for f in fits]).eval()
    epochs = [f.best_epoch for f in fits]
    return TwoTowerFit(
        ensemble,
        max(epochs),
        evaluate(ensemble, validation),
        [{"member": k, **entry} for k, f in enumerate(fits) for entry in f.history],
        sum(f.seconds for f in fits),
        epochs,
    )

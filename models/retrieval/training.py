"""The two-tower training task, and the loop with early stopping on validation NDCG@10.

The loss is a softmax of each example's next item against the catalogue. :func:`loss_kind`
decides how, by one rule (``two_tower.training.loss: auto``): the **full softmax** over every
item (:func:`full_softmax_loss`) when one step's logits — ``batch_size x max_len`` examples by
the catalogue's items, float32, with their softmax and gradient — fit ``full_softmax_mb``;
otherwise a **sampled softmax** (:func:`sampled_softmax_loss`) over in-batch negatives plus
``extra_negatives`` uniformly sampled ones, with logQ correction. The full softmax is the exact
objective the sampled one estimates; the published anchors of the S3-Rec benchmarks (SASRec
0.0605 -> 0.0921 HR@10 on Beauty from the loss alone) show how much the estimate costs.

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

from models.retrieval.evaluation import evaluate
from models.retrieval.id_pretraining import ItemInit, initialise_item_ids
from models.retrieval.ranking_metrics import RankingMetrics
from models.retrieval.sequences import Sequences, length_buckets, trim_padding
from models.retrieval.towers import user_item_scores
from models.retrieval.two_tower import RetrievalModel, TwoTower, TwoTowerEnsemble, two_tower
from models.retrieval.two_tower_settings import TwoTowerSettings, TwoTowerTrainSettings

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

    ``users`` (N, n_vectors, dim) unit vectors (a candidate's logit: the best of them);
    ``positives`` (N,) item indices; ``log_q`` (n_items + 1,) log probability that an item is one
    example's positive (None: no correction).
    ``user_items`` = (sequences (B, L) of the batch's users, 0-padded; ``row`` (N,) the sequence
    of each example): candidates in the example's own sequence are removed, not negatives."""
    n = len(positives)
    candidates = model.item_tower(positives)
    if model.user_tower.label_aware and users.shape[1] > 1:
        users = nearest_vector(users, candidates)
    logits = user_item_scores(users, candidates) / model.temperature
    if log_q is not None:
        logits = logits - (log_q[positives] + math.log(n)).unsqueeze(0)  # P(item in this batch) ~ n * q
    removed = _removed(positives, positives, user_items)
    removed.fill_diagonal_(False)
    logits = logits.masked_fill(removed, float("-inf"))
    if extra_negatives:
        sampled = torch.randint(1, model.n_items + 1, (extra_negatives,), generator=generator, device=positives.device)
        extra = user_item_scores(users, model.item_tower(sampled)) / model.temperature
        if log_q is not None:
            extra = extra - math.log(extra_negatives / model.n_items)
        extra = extra.masked_fill(_removed(positives, sampled, user_items), float("-inf"))
        logits = torch.cat([logits, extra], dim=1)
    return F.cross_entropy(logits, torch.arange(n, device=logits.device))


def full_softmax_loss(
    users: torch.Tensor,
    positives: torch.Tensor,
    model: TwoTower,
    user_items: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of each example's positive against every item of the catalogue.

    ``users`` (N, n_vectors, dim) unit vectors, ``positives`` (N,) item indices 1..n_items;
    ``user_items`` as in :func:`sampled_softmax_loss`: the other items of the example's own
    sequence are removed, not negatives."""
    items = model.item_tower(torch.arange(1, model.n_items + 1, device=positives.device))
    if model.user_tower.label_aware and users.shape[1] > 1:
        users = nearest_vector(users, items[positives - 1])
    # (N, n_items), column i-1 is item i; the temperature scales the N user rows, not N x n_items
    # logits (the best vector's cosine over T is the best of the cosines over T: T > 0)
    logits = user_item_scores(users / model.temperature, items)
    if user_items is not None:
        sequences, row = user_items
        own = torch.zeros(len(sequences), model.n_items + 1, dtype=torch.bool, device=logits.device)
        own = own.scatter_(1, sequences, True)[row, 1:]
        own[torch.arange(len(positives), device=own.device), positives - 1] = False
        logits = logits.masked_fill(own, float("-inf"))
    return F.cross_entropy(logits, positives - 1)


def loss_kind(n_items: int, model: TwoTowerSettings, training: TwoTowerTrainSettings) -> str:
    """``full`` or ``sampled``: ``training.loss`` unless it is ``auto``, which takes the full
    softmax when the largest step's logits (``batch_size x max_len`` examples by ``n_items``,
    12 bytes each: the logit, its softmax and its gradient in float32) fit ``full_softmax_mb``."""
    if training.loss != "auto":
        return training.loss
    megabytes = training.batch_size * model.max_len * n_items * 12 / 2**20
    return "full" if megabytes <= training.full_softmax_mb else "sampled"


def nearest_vector(users: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Label-aware selection (MIND, ComiRec): of each example's user vectors (N, n_vectors, dim)
    the one nearest to its positive's vector (N, dim), as (N, 1, dim). The example's negatives
    are then scored against that interest only: the loss trains the interest that explains the
    positive, and the others stay free to point elsewhere; scoring every candidate by its best
    vector instead would push every interest away from every negative, towards one another."""
    nearest = torch.einsum("nvd,nd->nv", users.detach(), positives.detach()).argmax(1)
    return users[torch.arange(len(users), device=users.device), nearest].unsqueeze(1)


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


def log_frequencies(counts: torch.Tensor) -> torch.Tensor:
    """log q per item index from training counts (index 0 = padding); add-one smoothed."""
    counts = counts.double() + 1.0
    counts[0] = 0.0
    return (counts / counts.sum()).log().float()


@dataclass
class TwoTowerFit:
    model: RetrievalModel
    best_epoch: int  # an ensemble's: its members' latest
    validation: RankingMetrics
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    member_best_epochs: list[int] = field(default_factory=list)
    # Early stopping fired: ``patience`` evaluations without a better validation NDCG@10. False:
    # training ran to ``epochs`` still improving (an ensemble: some member did).
    converged: bool = True
    epoch_cap: int = 0
    loss: str = ""  # full | sampled (loss_kind)

    def convergence_warning(self) -> str:
        """'' when converged; else what to do about it."""
        if self.converged:
            return ""
        return (
            f"not converged: validation NDCG@10 was still improving at the epoch cap (best epoch "
            f"{self.best_epoch} of {self.epoch_cap}); raise two_tower.training.epochs"
        )


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
    kind = loss_kind(model.n_items, model.settings, settings)
    log_q = log_frequencies(item_counts) if settings.logq_correction else None
    log.info(
        "two-tower loss: %s softmax over %s items%s",
        kind,
        f"{model.n_items:,}",
        f" ({settings.extra_negatives} uniform negatives + in-batch, logQ {settings.logq_correction})"
        if kind == "sampled"
        else "",
    )
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
            condition = model.item_interests[nexts] if model.item_interests is not None else None
            users = model.user_tower(inputs, every_position=True, interests=condition)[keep]
            row = torch.arange(len(batch)).unsqueeze(1).expand_as(keep)[keep]
            own = (batch, row) if settings.exclude_user_items else None
            if kind == "full":
                loss = full_softmax_loss(users, nexts[keep], model, own)
            else:
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
    if validation_metrics is None:  # settings.epochs >= 1 and the last epoch always evaluates
        raise ValueError("two-tower training ended without a validation evaluation")
    seconds = time.perf_counter() - started
    converged = since >= settings.patience
    return TwoTowerFit(model, best_epoch, validation_metrics, history, seconds, [], converged, settings.epochs, kind)


def fit_members(
    n_items: int,
    settings: TwoTowerSettings,
    attributes: torch.Tensor | None,
    train: Sequences,
    validation: Sequences,
    item_counts: torch.Tensor,
    training: TwoTowerTrainSettings,
    interests: torch.Tensor | None = None,
    item_init: ItemInit | None = None,
) -> TwoTowerFit:
    """The model of ``settings``: ``settings.members`` two-towers, member ``k`` initialised (its
    item ID table from ``item_init`` when given) and trained (:func:`fit`, with its own early
    stopping) under seed ``training.seed + k``; more than one are validated and served as their
    :class:`TwoTowerEnsemble`."""
    fits = []
    for k in range(settings.members):
        seed = training.seed + k
        torch.manual_seed(seed)
        member = two_tower(n_items, dataclasses.replace(settings, members=1), attributes, interests)
        if item_init is not None:
            initialise_item_ids(member.item_tower.features.ids, item_init)
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
        all(f.converged for f in fits),
        training.epochs,
        fits[0].loss,
    )


@dataclass(frozen=True)
class TwoTowerData:
    """What a two-tower trains on, collected from the lake: each user's item indices in event
    order (1-based into ``item_ids``), training frequencies per item index (0 = padding), each
    item's attribute ids (None: IDs only), and each item's interest id (1-based into
    ``interest_names``; 0: none; None: no interests, a conditional model cannot train)."""

    sequences: list[list[int]]
    item_ids: list[str]
    counts: torch.Tensor
    attributes: torch.Tensor | None = None
    interests: torch.Tensor | None = None
    interest_names: list[str] = field(default_factory=list)
    item_init: ItemInit | None = None  # pre-trained item ID embeddings (pinpipe pretrain_ids)


@dataclass
class TrainedTwoTower:
    model: RetrievalModel
    item_ids: list[str]
    metrics: dict
    sizes: dict
    test: Sequences  # the gate's evaluation users
    interest_names: list[str] = field(default_factory=list)


def train_and_evaluate(
    data: TwoTowerData,
    *,
    model: TwoTowerSettings,
    training: TwoTowerTrainSettings,
    index_factory: str,
    index_params: str,
) -> TrainedTwoTower:
    """Split ``data`` leave-one-out, train (:func:`fit_members`, early stopping on the validation
    items), and evaluate once on the test items: exact full ranking, through a FAISS
    ``index_factory`` index, and the popularity baseline's (the gate's floor)."""
    from models.retrieval.evaluation import evaluate_ann, evaluate_popularity
    from models.retrieval.sequences import leave_one_out

    if not data.sequences:
        raise ValueError("no engagement sequences to train the two-tower on")
    n_items = len(data.item_ids)
    split = leave_one_out(data.sequences, model.max_len)
    log.info(
        "two-tower: %s users (%s evaluated), %s items, %s train interactions",
        f"{len(data.sequences):,}",
        f"{len(split.test.rows):,}",
        f"{n_items:,}",
        f"{int(data.counts.sum()):,}",
    )
    result = fit_members(
        n_items,
        model,
        data.attributes,
        split.train,
        split.validation,
        data.counts,
        training,
        data.interests,
        data.item_init,
    )
    metrics = {
        "validation": result.validation.as_dict(),
        "test": evaluate(result.model, split.test).as_dict(),
        "test_ann": evaluate_ann(result.model, split.test, index_factory, index_params),
        "popularity_test": evaluate_popularity(data.counts, split.test).as_dict(),  # the gate's floor
        "best_epoch": result.best_epoch,
        "loss": result.loss,
        **({"member_best_epochs": result.member_best_epochs} if result.member_best_epochs else {}),
        "converged": result.converged,
        "convergence_warning": result.convergence_warning(),
        "history": result.history,
        "train_seconds": round(result.seconds, 1),
    }
    sizes = {
        "users": len(data.sequences),
        "evaluated_users": len(split.test.rows),
        "items": n_items,
        "attributes": int(data.attributes.max()) if data.attributes is not None else 0,
    }
    if model.conditional:
        sizes["interests"] = len(data.interest_names)
    return TrainedTwoTower(result.model, data.item_ids, metrics, sizes, split.test, data.interest_names)

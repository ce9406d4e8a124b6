"""Pre-trained ID embeddings: user and item IDs learned contrastively from engagement alone.

Two InfoNCE tasks share one item table (unit vectors, cosine over a temperature, in-batch
negatives with accidental hits removed):

* **co-engagement** — an item and an item the same user engaged with at most ``window``
  positions away (skip-gram over the user's sequence, as item2vec does);
* **user-item** — a user and an item of theirs (the user table).

Only each user's events inside the pre-training *window* are read: all but the user's last
``holdout_events`` (the two-tower's validation and test events, leave-one-out). The window's
end per user is recorded with the artifact, and a two-tower whose evaluation events fall inside
it is refused (``jobs.train_two_tower``). A two-tower initialises its item ID table from these
vectors (:func:`initialise_item_ids`), frozen or fine-tuned.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from models.retrieval.two_tower_settings import PretrainSettings

log = logging.getLogger(__name__)

# A published pretrain_ids version's files.
VECTORS_FILE = "ids.safetensors"  # {"items": (n_items + 1, dim), "users": (n_users, dim)}
ITEMS_FILE = "items.json"  # pin id of item row i at position i - 1
USERS_FILE = "users.json"  # user id of user row u at position u
WINDOW_FILE = "window.parquet"  # (user_id, t, i): the place of the last event of each user's window


def co_engagement_pairs(sequences: list[list[int]], window: int) -> torch.Tensor:
    """(P, 2) item pairs (a, b), both directions, of items at most ``window`` positions apart in a
    sequence (the same item twice is no pair)."""
    pairs = []
    for items in sequences:
        s = torch.tensor(items, dtype=torch.long)
        for d in range(1, min(window, len(items) - 1) + 1):
            a, b = s[:-d], s[d:]
            keep = a != b
            pairs += [torch.stack([a[keep], b[keep]], 1), torch.stack([b[keep], a[keep]], 1)]
    return torch.cat(pairs) if pairs else torch.empty(0, 2, dtype=torch.long)


def user_item_pairs(sequences: list[list[int]]) -> torch.Tensor:
    """(P, 2) (user index, item) for every event of every sequence (users are 0-based rows)."""
    pairs = [(u, item) for u, items in enumerate(sequences) for item in items]
    return torch.tensor(pairs, dtype=torch.long) if pairs else torch.empty(0, 2, dtype=torch.long)


class IdEmbeddings(nn.Module):
    """The user table (n_users, dim) and item table (n_items + 1, dim; row 0 pads)."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, dim)
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
        for table in (self.users, self.items):
            nn.init.normal_(table.weight, std=dim**-0.5)
        self.log_temperature = nn.Parameter(torch.tensor(0.1).log())

    def unit_items(self, items: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.items(items), dim=-1)

    def unit_users(self, users: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.users(users), dim=-1)


def info_nce(
    queries: torch.Tensor, keys: torch.Tensor, key_ids: torch.Tensor, temperature: torch.Tensor
) -> torch.Tensor:
    """Each query's own key against every key of the batch; a key equal to the query's own
    (the same item again: an accidental hit) is no negative."""
    logits = queries @ keys.T / temperature
    hits = key_ids.unsqueeze(0) == key_ids.unsqueeze(1)
    hits.fill_diagonal_(False)
    logits = logits.masked_fill(hits, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(keys), device=keys.device))


@dataclass
class PretrainedIds:
    items: torch.Tensor  # (n_items + 1, dim) unit vectors; row 0 zero
    users: torch.Tensor  # (n_users, dim) unit vectors
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def pretrain(sequences: list[list[int]], n_items: int, settings: PretrainSettings) -> PretrainedIds:
    """Learn user and item vectors from ``sequences`` (each user's windowed items, 1-based
    indices) by the two contrastive tasks, ``settings.epochs`` passes over the pairs."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    items = co_engagement_pairs(sequences, settings.window)
    users = user_item_pairs(sequences)
    if not len(items) and not len(users):
        raise ValueError("no engagement in the pre-training window: nothing to learn ID embeddings from")
    model = IdEmbeddings(len(sequences), n_items, settings.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    history, started = [], time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        item_order = torch.randperm(len(items), generator=generator)
        user_order = torch.randperm(len(users), generator=generator)
        steps = max(1, -(-max(len(items), len(users)) // settings.batch_size))
        item_batch, user_batch = -(-len(items) // steps), -(-len(users) // steps)
        total = 0.0
        for step in range(steps):
            loss = torch.zeros(())
            t = model.log_temperature.exp().clamp(0.01, 1.0)
            part = items[item_order[step * item_batch : (step + 1) * item_batch]]
            if len(part) > 1:
                loss = loss + info_nce(model.unit_items(part[:, 0]), model.unit_items(part[:, 1]), part[:, 1], t)
            part = users[user_order[step * user_batch : (step + 1) * user_batch]]
            if len(part) > 1:
                loss = loss + info_nce(model.unit_users(part[:, 0]), model.unit_items(part[:, 1]), part[:, 1], t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        history.append({"epoch": epoch, "loss": total / steps})
        if settings.progress:
            log.info("pretrain_ids epoch %d: loss %.4f", epoch, total / steps)
    with torch.no_grad():
        item_vectors = F.normalize(model.items.weight, dim=-1)
        item_vectors[0] = 0.0
        user_vectors = F.normalize(model.users.weight, dim=-1)
    return PretrainedIds(item_vectors.clone(), user_vectors.clone(), history, time.perf_counter() - started)


def aligned_vectors(
    vectors: torch.Tensor, pretrained_ids: list[str], item_ids: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-trained item vectors (row i for ``pretrained_ids[i - 1]``) re-indexed to another item
    list: (len(item_ids) + 1, dim) rows and which rows were found (index 0, padding: never)."""
    position = {pin: i + 1 for i, pin in enumerate(pretrained_ids)}
    rows = torch.zeros(len(item_ids) + 1, vectors.shape[1])
    found = torch.zeros(len(item_ids) + 1, dtype=torch.bool)
    for i, pin in enumerate(item_ids, start=1):
        if (j := position.get(pin)) is not None:
            rows[i], found[i] = vectors[j], True
    return rows, found


@dataclass(frozen=True)
class ItemInit:
    """How a two-tower's item ID table starts: pre-trained rows (``vectors[i]`` for item index
    i, where ``found[i]``), kept ``frozen`` or fine-tuned."""

    vectors: torch.Tensor
    found: torch.Tensor
    frozen: bool


def initialise_item_ids(table: nn.Embedding, init: ItemInit) -> None:
    """Copy the pre-trained rows into a two-tower's item ID table, scaled to the table's own
    initial norm; frozen: the table is not trained further (rows not found keep their random
    initialisation, frozen too: items never engaged in the pre-training window)."""
    vectors, found = init.vectors, init.found
    if vectors.shape != table.weight.shape:
        raise ValueError(
            f"pre-trained item vectors {tuple(vectors.shape)} do not fit the two-tower's item table "
            f"{tuple(table.weight.shape)}: pre-train with pretrain_ids.settings.dim = two_tower.model.dim"
        )
    with torch.no_grad():
        scale = table.weight[1:].norm(dim=-1).mean()
        table.weight[found] = vectors[found] * scale
    table.weight.requires_grad_(not init.frozen)


def load_item_vectors(folder: str | Path) -> tuple[torch.Tensor, list[str]]:
    """A published version's item vectors (row i: item i) and the pin id of each row i (at i - 1)."""
    folder = Path(folder)
    return load_file(str(folder / VECTORS_FILE))["items"], json.loads((folder / ITEMS_FILE).read_text())

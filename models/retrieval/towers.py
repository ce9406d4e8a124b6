"""The parts two-tower models are composed from.

An item tower is *item features* (an ID embedding, plus the mean of the item's attribute
embeddings when the catalogue has attributes) and a projection to a unit vector. A user tower
is the same item features read over the user's history, a *history encoder* (causal
self-attention or a running mean: position ``t`` has seen items ``..t`` only, so one forward
pass gives a training example per position) and a *user head* that turns each position's state
into ``n_vectors`` unit vectors: the user side is ``(batch, n_vectors, dim)`` everywhere, one
vector for :class:`SingleVector`, several for :class:`MultiVector`.

Items are dense indices ``1..n_items``; 0 pads a history, which is *left*-padded so that its most
recent item is the last position. :func:`history_encoder` and :func:`user_head` choose a part
from the settings, in one place; a new encoder or head is a module with the same ``forward``
and one entry there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from models.retrieval.two_tower_settings import TwoTowerSettings


class ItemFeatures(nn.Module):
    """Item indices (any shape) -> raw item features (..., dim): the ID embedding (with dropout
    when asked) plus the mean of the item's attribute embeddings (``attributes[i]``: item i's
    attribute ids, 0-padded)."""

    def __init__(self, n_items: int, dim: int, id_dropout: float, attributes: torch.Tensor | None = None) -> None:
        super().__init__()
        self.ids = nn.Embedding(n_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.ids.weight, std=dim**-0.5)
        with torch.no_grad():
            self.ids.weight[0].zero_()
        self.id_dropout = nn.Dropout(id_dropout)
        if attributes is not None:
            self.register_buffer("attributes", attributes.long(), persistent=True)
            self.attribute_bag = nn.EmbeddingBag(int(attributes.max()) + 1, dim, mode="mean", padding_idx=0)
        else:
            self.attributes = None
            self.attribute_bag = None

    @property
    def n_items(self) -> int:
        return self.ids.num_embeddings - 1

    def forward(self, items: torch.Tensor, id_dropout: bool = False) -> torch.Tensor:
        x = self.ids(items)
        if id_dropout:
            x = self.id_dropout(x)
        if self.attribute_bag is not None:
            flat = items.reshape(-1)
            x = x + self.attribute_bag(self.attributes[flat]).reshape(*items.shape, -1)
        return x


class ItemTower(nn.Module):
    """Item index -> unit vector: :class:`ItemFeatures` (ID dropout in training) projected."""

    def __init__(self, features: ItemFeatures, dim: int) -> None:
        super().__init__()
        self.features = features
        self.project = nn.Linear(dim, dim)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(self.features(items, id_dropout=True)), dim=-1)


class CausalTransformer(nn.Module):
    """History encoder: learned positions and causal self-attention over the embedded history."""

    def __init__(self, settings: TwoTowerSettings) -> None:
        super().__init__()
        self.positions = nn.Embedding(settings.max_len, settings.dim)
        nn.init.normal_(self.positions.weight, std=settings.dim**-0.5)  # the items' scale, not N(0, 1)
        self.dropout = nn.Dropout(settings.dropout)
        layer = nn.TransformerEncoderLayer(
            settings.dim,
            settings.heads,
            dim_feedforward=settings.dim * 2,
            dropout=settings.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, settings.layers, enable_nested_tensor=False)
        causal = torch.triu(torch.ones(settings.max_len, settings.max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``x`` (batch, length, dim) embedded history, zero where ``present`` (batch, length, 1)
        is 0 -> (batch, length, dim) states."""
        length = x.shape[1]
        x = self.dropout(x + self.positions.weight[-length:]) * present  # padded slots stay zero
        return self.encoder(x, mask=self.causal[:length, :length], is_causal=True)


class RunningMean(nn.Module):
    """History encoder: position t's state is the mean of the items up to t."""

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return x.cumsum(1) / present.cumsum(1).clamp_min(1.0)


class SingleVector(nn.Module):
    """User head: one unit vector per position (layer norm, projection)."""

    n_vectors = 1

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Linear(dim, dim)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(..., dim) states -> (..., 1, dim) unit vectors."""
        return F.normalize(self.project(self.norm(states)), dim=-1).unsqueeze(-2)


class MultiVector(nn.Module):
    """User head: ``n_vectors`` unit vectors per position, one projection each of the normed
    state (a user with several interests can point at several regions of the item space)."""

    def __init__(self, dim: int, n_vectors: int) -> None:
        super().__init__()
        if n_vectors < 1:
            raise ValueError(f"n_vectors must be >= 1, got {n_vectors}")
        self.n_vectors, self.dim = n_vectors, dim
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Linear(dim, dim * n_vectors)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(..., dim) states -> (..., n_vectors, dim) unit vectors."""
        x = self.project(self.norm(states))
        return F.normalize(x.view(*states.shape[:-1], self.n_vectors, self.dim), dim=-1)


class UserTower(nn.Module):
    """A left-padded history -> ``(batch, n_vectors, dim)`` unit vectors: the history's item
    features (dropped out in training), encoded by ``history``, turned into vectors by ``head``."""

    def __init__(
        self, items: ItemFeatures, history: nn.Module, head: nn.Module, dim: int, history_dropout: float
    ) -> None:
        super().__init__()
        self.items, self.history, self.head, self.dim = items, history, head, dim
        self.history_dropout = nn.Dropout(history_dropout)

    @property
    def n_vectors(self) -> int:
        return int(self.head.n_vectors)

    def forward(self, history: torch.Tensor, every_position: bool = False) -> torch.Tensor:
        """``history`` (batch, length), left-padded -> (batch, n_vectors, dim) at the last
        position, or (batch, length, n_vectors, dim) at every position with ``every_position``."""
        present = (history > 0).unsqueeze(-1).float()
        x = self.history_dropout(self.items(history)) * present
        vectors = self.head(self.history(x, present))
        return vectors if every_position else vectors[:, -1]

    @torch.no_grad()
    def encode(self, histories: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        """(n, n_vectors, dim) unit vectors of left-padded histories, each encoded at its own length.

        Padding slots are not masked out of attention (they are zero vectors that still pass
        through the layers' norms and biases), so the vector of a padded history depends on how
        much padding it carries; training batches histories of similar length with little of it.
        Encoding every history without padding makes a user's vectors the same whatever they are
        batched with — in evaluation, through FAISS, and at serving time."""
        lengths = (histories > 0).sum(1).clamp(1, histories.shape[1])
        out = torch.empty(len(histories), self.n_vectors, self.dim, device=histories.device)
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().squeeze(1)
            for i in range(0, len(rows), batch):
                part = rows[i : i + batch]
                out[part] = self(histories[part, -length:])
        return out


HISTORY_ENCODERS: dict[str, Callable[[TwoTowerSettings], nn.Module]] = {
    "transformer": CausalTransformer,
    "mean": lambda settings: RunningMean(),
}


def history_encoder(settings: TwoTowerSettings) -> nn.Module:
    """The history encoder ``settings.encoder`` names."""
    return HISTORY_ENCODERS[settings.encoder](settings)


def user_head(settings: TwoTowerSettings) -> nn.Module:
    """One vector per user, or ``settings.user_vectors`` of them."""
    if settings.user_vectors == 1:
        return SingleVector(settings.dim)
    return MultiVector(settings.dim, settings.user_vectors)


def user_item_scores(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Cosine of each user with each item: ``users`` (..., n_vectors, dim), ``items`` (C, dim)
    -> (..., C), an item's score the best of the user's vectors (the vector nearest to it)."""
    if users.dim() < 3:
        raise ValueError(f"users must be (..., n_vectors, dim), got shape {tuple(users.shape)}")
    scores = users.reshape(-1, users.shape[-1]) @ items.T
    return scores.view(*users.shape[:-1], -1).amax(-2)

"""The parts two-tower models are composed from.

An item tower is *item features* (an ID embedding, plus the mean of the item's attribute
embeddings when the catalogue has attributes) and a projection to a unit vector. A user tower
is the same item features read over the user's history, a *history encoder* (causal
self-attention or a running mean: position ``t`` has seen items ``..t`` only, so one forward
pass gives a training example per position) and a *user head* that turns each position's state
into ``n_vectors`` unit vectors: the user side is ``(batch, n_vectors, dim)`` everywhere, one
vector for :class:`SingleVector`, several for :class:`MultiVector` (projections of the state) and
:class:`CapsuleInterests` (the history clustered into interests). A head also gives each vector's
*mass* (how much of the history it stands for: 1 for projections, the items a capsule was
assigned), its vectors heaviest first, so serving keeps the first ``K``. A *conditional* user
tower (:class:`InterestFusion`) also takes an interest id, fused into the state before the head.

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

from models.retrieval.crossing import FieldCrossing
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

    @property
    def n_fields(self) -> int:
        return 1 if self.attribute_bag is None else 2

    def fields(self, items: torch.Tensor, id_dropout: bool = False) -> torch.Tensor:
        """(..., n_fields, dim): the ID embedding, then (with attributes) their mean embedding."""
        x = self.ids(items)
        if id_dropout:
            x = self.id_dropout(x)
        if self.attribute_bag is None:
            return x.unsqueeze(-2)
        attributes = self.attribute_bag(self.attributes[items.reshape(-1)]).reshape(*items.shape, -1)
        return torch.stack([x, attributes], -2)

    def forward(self, items: torch.Tensor, id_dropout: bool = False) -> torch.Tensor:
        return self.fields(items, id_dropout).sum(-2)


class ItemTower(nn.Module):
    """Item index -> unit vector: :class:`ItemFeatures` (ID dropout in training) — their sum,
    plus a crossing of them when the tower has one — projected."""

    def __init__(self, features: ItemFeatures, dim: int, crossing: FieldCrossing | None = None) -> None:
        super().__init__()
        self.features = features
        self.project = nn.Linear(dim, dim)
        self.crossing = crossing

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        fields = self.features.fields(items, id_dropout=True)
        x = fields.sum(-2)
        if self.crossing is not None:
            x = x + self.crossing(fields)
        return F.normalize(self.project(x), dim=-1)


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


class ItemsAsTheyAre(nn.Module):
    """History encoder: none — each position's state is its item's features (a capsule head
    clusters the history's items themselves, as MIND and ComiRec-DR do)."""

    def forward(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return x


class SingleVector(nn.Module):
    """User head: one unit vector per position (layer norm, projection)."""

    n_vectors = 1
    label_aware = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Linear(dim, dim)

    def forward(self, states: torch.Tensor, present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., dim) states -> (..., 1, dim) unit vectors and their mass (ones)."""
        vectors = F.normalize(self.project(self.norm(states)), dim=-1).unsqueeze(-2)
        return vectors, vectors.new_ones(vectors.shape[:-1])


class MultiVector(nn.Module):
    """User head: ``n_vectors`` unit vectors per position, one projection each of the normed
    state (a user with several interests can point at several regions of the item space)."""

    label_aware = False

    def __init__(self, dim: int, n_vectors: int) -> None:
        super().__init__()
        if n_vectors < 1:
            raise ValueError(f"n_vectors must be >= 1, got {n_vectors}")
        self.n_vectors, self.dim = n_vectors, dim
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Linear(dim, dim * n_vectors)

    def forward(self, states: torch.Tensor, present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., dim) states -> (..., n_vectors, dim) unit vectors and their mass (ones)."""
        x = self.project(self.norm(states))
        vectors = F.normalize(x.view(*states.shape[:-1], self.n_vectors, self.dim), dim=-1)
        return vectors, vectors.new_ones(vectors.shape[:-1])


class CapsuleInterests(nn.Module):
    """User head: the history clustered into up to ``n_vectors`` interests (a capsule network in
    the manner of MIND / ComiRec-DR, modified as Pinterest's homefeed describes it).

    Each visible history state (position ``j <= t`` of a present item, so position ``t`` clusters
    what it has seen) is mapped by one shared bilinear matrix. *Maxmin initialisation*: the first
    centre is the most recent item, each next one the item farthest (cosine) from its nearest
    chosen centre — distinct interests from the first iteration, so few routing iterations do.
    *Single-assignment routing*: each item belongs to exactly one interest (its most similar
    centre), an interest is the mean of its items, repeated ``iterations`` times. The assignment
    is hard in the forward pass and the softmax over interests in the backward pass (a
    straight-through estimate), so the interests are differentiable in the item embeddings.

    The mass of an interest is the number of items assigned to it; vectors come heaviest first.
    An interest that got no item (a history with fewer distinct items than ``n_vectors``) has mass
    0 and repeats the heaviest one, so it changes no score and serving skips it."""

    label_aware = True  # training scores the positive against the interest nearest to it

    def __init__(self, dim: int, n_vectors: int, iterations: int = 3, temperature: float = 0.1) -> None:
        super().__init__()
        if n_vectors < 1 or iterations < 1:
            raise ValueError(f"n_vectors and iterations must be >= 1, got {n_vectors}, {iterations}")
        self.n_vectors, self.iterations, self.temperature = n_vectors, iterations, temperature
        self.norm = nn.LayerNorm(dim)
        self.bilinear = nn.Linear(dim, dim, bias=False)
        self.project = nn.Linear(dim, dim)

    def forward(self, states: torch.Tensor, present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, length, dim) states, ``present`` (batch, length, 1) -> (batch, length,
        n_vectors, dim) unit vectors of each position's interests, heaviest first, and their
        masses (batch, length, n_vectors)."""
        if states.dim() != 3:
            raise ValueError(
                f"capsule interests cluster a sequence: states must be (batch, length, dim), got {tuple(states.shape)}"
            )
        batch, length, _ = states.shape
        if present is None:
            present = states.new_ones(batch, length, 1)
        items = self.bilinear(self.norm(states))
        unit = F.normalize(items, dim=-1)
        causal = torch.ones(length, length, dtype=torch.bool, device=states.device).tril()
        visible = causal.unsqueeze(0) & (present.squeeze(-1) > 0).unsqueeze(1)  # [b, t, j]: t sees item j
        centres = maxmin_centres(unit.detach(), visible, self.n_vectors)  # (batch, length, n_vectors)
        interests = unit.gather(1, centres.reshape(batch, -1, 1).expand(-1, -1, unit.shape[-1]))
        interests = interests.view(batch, length, self.n_vectors, -1)
        for _ in range(self.iterations):
            similarity = torch.einsum("btmd,bjd->btjm", F.normalize(interests, dim=-1), unit)
            soft = (similarity / self.temperature).softmax(-1)
            hard = F.one_hot(similarity.argmax(-1), self.n_vectors).to(soft.dtype)
            assign = (hard + soft - soft.detach()) * visible.unsqueeze(-1)
            mass = (hard * visible.unsqueeze(-1)).sum(2)  # (batch, length, n_vectors)
            means = torch.einsum("btjm,bjd->btmd", assign, items) / mass.clamp_min(1.0).unsqueeze(-1)
            interests = torch.where((mass > 0).unsqueeze(-1), means, interests)  # an empty one keeps its centre
        vectors = F.normalize(self.project(interests), dim=-1)
        order = mass.argsort(dim=-1, descending=True, stable=True)
        mass = mass.gather(-1, order)
        vectors = vectors.gather(2, order.unsqueeze(-1).expand_as(vectors))
        vectors = torch.where((mass > 0).unsqueeze(-1), vectors, vectors[:, :, :1])
        return vectors, mass


def maxmin_centres(unit: torch.Tensor, visible: torch.Tensor, n: int) -> torch.Tensor:
    """Maxmin (farthest-point) initial centres per position: ``unit`` (batch, length, dim) unit
    vectors, ``visible`` (batch, length, length) what position t may use -> (batch, length, n)
    item positions: position t's own item first, then repeatedly the visible item whose cosine
    distance to its nearest chosen centre is largest. With fewer visible items than ``n`` the
    remaining centres repeat chosen ones."""
    batch, length, _ = unit.shape
    cosine = unit @ unit.transpose(1, 2)  # [b, i, j]
    chosen = [torch.arange(length, device=unit.device).expand(batch, length)]
    nearest = (1.0 - cosine).masked_fill(~visible, float("-inf"))  # distance of j to t's nearest centre
    for _ in range(n - 1):
        following = nearest.argmax(-1)  # (batch, length)
        chosen.append(following)
        rows = cosine.gather(1, following.unsqueeze(-1).expand(-1, -1, length))  # cosine[b, following[b, t], j]
        nearest = torch.minimum(nearest, 1.0 - rows)
    return torch.stack(chosen, -1)


class InterestFusion(nn.Module):
    """Conditional retrieval: an interest id (an item category, a topic; 0 = none) fused with
    the user's state before the user head — early fusion, so the one user vector is the user's
    taste *within* that interest, and an ANN search filtered to the interest's items finds it.

    ``item_interests[i]`` is item i's interest (saved with the model: serving filters by it);
    in training a position is conditioned on its positive's interest, dropped to 0 with
    probability ``dropout`` so the model also serves users without a condition."""

    def __init__(self, item_interests: torch.Tensor, dim: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("item_interests", item_interests.long(), persistent=True)
        self.embedding = nn.Embedding(int(item_interests.max()) + 1, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        self.dropout = dropout
        self.norm = nn.LayerNorm(dim)
        self.fuse = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim))

    @property
    def n_interests(self) -> int:
        return self.embedding.num_embeddings - 1

    def forward(self, states: torch.Tensor, interests: torch.Tensor | None) -> torch.Tensor:
        """``states`` (batch, [length,] dim), ``interests`` (batch,) or (batch, length) ids or
        None (no condition) -> states of the same shape."""
        if interests is None:
            interests = torch.zeros(states.shape[:-1], dtype=torch.long, device=states.device)
        elif interests.dim() < states.dim() - 1:
            interests = interests.unsqueeze(-1).expand(states.shape[:-1])
        if self.training and self.dropout > 0:
            interests = interests.masked_fill(torch.rand(interests.shape, device=interests.device) < self.dropout, 0)
        return states + self.fuse(torch.cat([self.norm(states), self.embedding(interests)], -1))


USER_FIELDS = 3  # a user tower's fields at position t: the encoder's state, the item at t, the mean up to t


def user_fields(states: torch.Tensor, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The user tower's fields at every position (batch, length, USER_FIELDS, dim): the history
    encoder's state, the (embedded) item engaged at that position, and the mean of the items up to
    it — each uses positions ``..t`` only."""
    mean = x.cumsum(1) / present.cumsum(1).clamp_min(1.0)
    return torch.stack([states, x, mean], -2)


class UserTower(nn.Module):
    """A left-padded history -> ``(batch, n_vectors, dim)`` unit vectors: the history's item
    features (dropped out in training), encoded by ``history``, crossed with the position's other
    fields by ``crossing`` (when the tower has one), fused with an interest by ``condition`` (a
    conditional tower), turned into vectors by ``head``."""

    def __init__(
        self,
        items: ItemFeatures,
        history: nn.Module,
        head: nn.Module,
        dim: int,
        history_dropout: float,
        condition: InterestFusion | None = None,
        crossing: FieldCrossing | None = None,
    ) -> None:
        super().__init__()
        self.items, self.history, self.head, self.dim = items, history, head, dim
        self.history_dropout = nn.Dropout(history_dropout)
        self.condition = condition
        self.crossing = crossing

    @property
    def n_vectors(self) -> int:
        return int(self.head.n_vectors)

    @property
    def label_aware(self) -> bool:
        """Whether training scores a positive against the user vector nearest to it only."""
        return bool(self.head.label_aware)

    def interests(
        self, history: torch.Tensor, every_position: bool = False, interests: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` and each vector's mass ((batch, [length,] n_vectors))."""
        present = (history > 0).unsqueeze(-1).float()
        x = self.history_dropout(self.items(history)) * present
        states = self.history(x, present)
        if self.crossing is not None:
            states = states + self.crossing(user_fields(states, x, present))
        if self.condition is not None:
            states = self.condition(states, interests)
        elif interests is not None:
            raise ValueError("this user tower is not conditional: it takes no interest")
        vectors, mass = self.head(states, present)
        return (vectors, mass) if every_position else (vectors[:, -1], mass[:, -1])

    def forward(
        self, history: torch.Tensor, every_position: bool = False, interests: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``history`` (batch, length), left-padded -> (batch, n_vectors, dim) at the last
        position, or (batch, length, n_vectors, dim) at every position with ``every_position``;
        ``interests`` (batch,) or (batch, length): the condition of a conditional tower."""
        return self.interests(history, every_position, interests)[0]

    @torch.no_grad()
    def encode_with_mass(
        self, histories: torch.Tensor, batch: int = 1024, interests: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode` and each vector's mass (n, n_vectors)."""
        lengths = (histories > 0).sum(1).clamp(1, histories.shape[1])
        out = torch.empty(len(histories), self.n_vectors, self.dim, device=histories.device)
        mass = torch.empty(len(histories), self.n_vectors, device=histories.device)
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().squeeze(1)
            for i in range(0, len(rows), batch):
                part = rows[i : i + batch]
                condition = interests[part] if interests is not None else None
                out[part], mass[part] = self.interests(histories[part, -length:], interests=condition)
        return out, mass

    @torch.no_grad()
    def encode(self, histories: torch.Tensor, batch: int = 1024, interests: torch.Tensor | None = None) -> torch.Tensor:
        """(n, n_vectors, dim) unit vectors of left-padded histories, each encoded at its own length.

        Padding slots are not masked out of attention (they are zero vectors that still pass
        through the layers' norms and biases), so the vector of a padded history depends on how
        much padding it carries; training batches histories of similar length with little of it.
        Encoding every history without padding makes a user's vectors the same whatever they are
        batched with — in evaluation, through FAISS, and at serving time."""
        return self.encode_with_mass(histories, batch, interests)[0]


HISTORY_ENCODERS: dict[str, Callable[[TwoTowerSettings], nn.Module]] = {
    "transformer": CausalTransformer,
    "mean": lambda settings: RunningMean(),
    "none": lambda settings: ItemsAsTheyAre(),
}


def history_encoder(settings: TwoTowerSettings) -> nn.Module:
    """The history encoder ``settings.encoder`` names."""
    return HISTORY_ENCODERS[settings.encoder](settings)


def crossing(kind: str, n_fields: int, settings: TwoTowerSettings) -> FieldCrossing | None:
    """The crossing ``kind`` names over ``n_fields`` fields (None for ``none``)."""
    if kind == "none":
        return None
    return FieldCrossing(kind, n_fields, settings.dim, settings.crossing_layers, settings.heads, settings.mask_blocks)


def user_head(settings: TwoTowerSettings) -> nn.Module:
    """One vector per user, ``settings.user_vectors`` projections of the state, or that many
    capsule interests (``settings.user_head``)."""
    if settings.user_head == "capsules":
        return CapsuleInterests(settings.dim, settings.user_vectors, settings.routing_iterations)
    if settings.user_vectors == 1:
        return SingleVector(settings.dim)
    return MultiVector(settings.dim, settings.user_vectors)


def user_item_scores(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Cosine of each user with each item: ``users`` (..., n_vectors, dim), ``items`` (C, dim)
    -> (..., C), an item's score the best of the user's vectors (the vector nearest to it)."""
    if users.dim() < 3:
        raise ValueError(f"users must be (..., n_vectors, dim), got shape {tuple(users.shape)}")
    if users.shape[-2] == 1:  # one vector: its scores as they are (no reduction pass over (..., C))
        return users[..., 0, :] @ items.T
    scores = users.reshape(-1, users.shape[-1]) @ items.T
    return scores.view(*users.shape[:-1], -1).amax(-2)

"""Two-tower retrieval: a user tower over the user's recent engaged items and an item tower over
item IDs (plus content features when present), both L2-normalised, scored by cosine over a
temperature.

Items are dense indices ``1..n_items``; 0 pads a history. A history is *left*-padded so its most
recent item is the last position. The user tower reads a history through the item tower's ID
table (``share_item_embeddings``) or its own, adds learned positions, and encodes with causal
self-attention (``transformer``) or a running mean (``mean``); at position ``t`` it has seen items
``..t`` only, so one forward pass gives a training example per position.

``TwoTowerEnsemble`` serves several two-towers trained apart (``two_tower.model.members``) as one:
their vectors side by side, a score their mean cosine.

Model here; the training task (sampled softmax, logQ) is :mod:`models.two_tower_training`; the
serving side (item vectors, top-k with masking) is :class:`Retriever`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from models.two_tower_settings import TwoTowerSettings

WEIGHTS = "two_tower.safetensors"
SETTINGS = "two_tower.json"
# A published two-tower artifact (jobs/train_two_tower.py): the model's folder, and the pin id of
# each item index (a JSON list: item i is at position i - 1).
MODEL_FOLDER = "model"
ITEMS_FILE = "items.json"


class ItemTower(nn.Module):
    """Item index -> unit vector: ID embedding (with dropout) plus the mean of its attribute
    embeddings when the catalog has attributes (``attributes[i]``: item i's attribute ids, 0-padded)."""

    def __init__(self, n_items: int, settings: TwoTowerSettings, attributes: torch.Tensor | None = None) -> None:
        super().__init__()
        self.ids = nn.Embedding(n_items + 1, settings.dim, padding_idx=0)
        nn.init.normal_(self.ids.weight, std=settings.dim**-0.5)
        with torch.no_grad():
            self.ids.weight[0].zero_()
        self.id_dropout = nn.Dropout(settings.id_dropout)
        if attributes is not None:
            self.register_buffer("attributes", attributes.long(), persistent=True)
            self.attribute_bag = nn.EmbeddingBag(int(attributes.max()) + 1, settings.dim, mode="mean", padding_idx=0)
        else:
            self.attributes = None
            self.attribute_bag = None
        self.project = nn.Linear(settings.dim, settings.dim)

    def embed(self, items: torch.Tensor, id_dropout: bool = False) -> torch.Tensor:
        """Raw (unnormalised) item features, any shape of indices -> (..., dim): the ID embedding
        (with ``id_dropout`` in training when asked) plus the item's attribute embeddings."""
        x = self.ids(items)
        if id_dropout:
            x = self.id_dropout(x)
        if self.attribute_bag is not None:
            flat = items.reshape(-1)
            x = x + self.attribute_bag(self.attributes[flat]).reshape(*items.shape, -1)
        return x

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(self.embed(items, id_dropout=True)), dim=-1)


class UserTower(nn.Module):
    def __init__(self, settings: TwoTowerSettings, items: ItemTower) -> None:
        super().__init__()
        self.settings = settings
        self.items = items if settings.share_item_embeddings else ItemTower(items.ids.num_embeddings - 1, settings)
        self.positions = nn.Embedding(settings.max_len, settings.dim)
        nn.init.normal_(self.positions.weight, std=settings.dim**-0.5)  # the items' scale, not N(0, 1)
        self.history_dropout = nn.Dropout(settings.history_dropout)
        self.dropout = nn.Dropout(settings.dropout)
        if settings.encoder == "transformer":
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
        self.norm = nn.LayerNorm(settings.dim)
        self.project = nn.Linear(settings.dim, settings.dim)

    def forward(self, history: torch.Tensor, every_position: bool = False) -> torch.Tensor:
        """``history`` (batch, max_len), left-padded -> unit vectors (batch, dim), or
        (batch, max_len, dim) for every position with ``every_position``."""
        length = history.shape[1]
        present = (history > 0).unsqueeze(-1).float()
        x = self.history_dropout(self.items.embed(history)) * present
        if self.settings.encoder == "transformer":
            x = self.dropout(x + self.positions.weight[-length:]) * present  # padded slots stay zero
            x = self.encoder(x, mask=self.causal[:length, :length], is_causal=True)
        else:
            x = x.cumsum(1) / present.cumsum(1).clamp_min(1.0)
        x = self.project(self.norm(x))
        x = F.normalize(x, dim=-1)
        return x if every_position else x[:, -1]

    @torch.no_grad()
    def encode(self, histories: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        """Unit vectors (n, dim) of left-padded histories, each encoded at its own length.

        Padding slots are not masked out of attention (they are zero vectors that still pass
        through the layers' norms and biases), so the vector of a padded history depends on how
        much padding it carries; training batches histories of similar length with little of it.
        Encoding every history without padding makes a user's vector the same whatever it is
        batched with — in evaluation, through FAISS, and at serving time."""
        lengths = (histories > 0).sum(1).clamp(1, histories.shape[1])
        out = torch.empty(len(histories), self.settings.dim, device=histories.device)
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().squeeze(1)
            for i in range(0, len(rows), batch):
                part = rows[i : i + batch]
                out[part] = self(histories[part, -length:])
        return out


class TwoTower(nn.Module):
    def __init__(self, n_items: int, settings: TwoTowerSettings, attributes: torch.Tensor | None = None) -> None:
        super().__init__()
        self.settings, self.n_items = settings, n_items
        self.item_tower = ItemTower(n_items, settings, attributes)
        self.user_tower = UserTower(settings, self.item_tower)
        log_t = torch.tensor(float(settings.temperature)).log()
        if settings.learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(0.01, 1.0)

    @property
    def device(self) -> torch.device:
        return self.log_temperature.device

    def all_items(self, batch: int = 8192) -> torch.Tensor:
        """Unit vectors of items ``1..n_items`` (row i-1 is item i)."""
        ids = torch.arange(1, self.n_items + 1, device=self.device)
        return torch.cat([self.item_tower(ids[i : i + batch]) for i in range(0, len(ids), batch)])

    # ------------------------------------------------------------------ saving and loading

    def _shared_view(self, key: str) -> bool:
        """Whether state ``key`` is the user tower's view of the item tower's shared table: it is
        saved once, under the item tower's name."""
        return self.settings.share_item_embeddings and key.startswith("user_tower.items.")

    def save(self, folder: str | Path) -> Path:
        return _save(self, folder)


class _SideBySide:
    """One side (item or user towers) of a :class:`TwoTowerEnsemble`: the members' unit vectors
    concatenated over sqrt(members) — a unit vector whose dot product with the other side's is
    the members' mean cosine. Called and ``encode``-d as one tower is."""

    def __init__(self, towers: list[nn.Module]) -> None:
        self.towers = towers
        self.scale = len(towers) ** -0.5

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return torch.cat([tower(*args, **kwargs) for tower in self.towers], -1) * self.scale

    @torch.no_grad()
    def encode(self, histories: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        return torch.cat([tower.encode(histories, batch) for tower in self.towers], -1) * self.scale


class TwoTowerEnsemble(nn.Module):
    """Two-towers trained apart (``models.two_tower_training.fit_members``) served as one model
    of width ``members * dim``: ``item_tower``, ``user_tower`` and ``all_items`` give the members'
    vectors side by side (:class:`_SideBySide`), so the retriever, the item embedder and a FAISS
    index take it as they take a single two-tower."""

    def __init__(self, members: list[TwoTower]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.n_items = members[0].n_items
        self.settings = dataclasses.replace(members[0].settings, members=len(members))
        self.item_tower = _SideBySide([m.item_tower for m in members])
        self.user_tower = _SideBySide([m.user_tower for m in members])
        self._all_items = _SideBySide([m.all_items for m in members])

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def all_items(self, batch: int = 8192) -> torch.Tensor:
        return self._all_items(batch)

    def _shared_view(self, key: str) -> bool:
        """A member's shared view, or the catalogue's attributes of a member after the first
        (every member is built on the same attributes tensor: saved once)."""
        _, k, rest = key.split(".", 2)
        return self.members[int(k)]._shared_view(rest) or (k != "0" and rest == "item_tower.attributes")

    def save(self, folder: str | Path) -> Path:
        return _save(self, folder)


RetrievalModel = TwoTower | TwoTowerEnsemble


def new_model(n_items: int, settings: TwoTowerSettings, attributes: torch.Tensor | None = None) -> RetrievalModel:
    """An untrained model of ``settings``: one two-tower, or ``settings.members`` of them."""
    if settings.members == 1:
        return TwoTower(n_items, settings, attributes)
    member = dataclasses.replace(settings, members=1)
    return TwoTowerEnsemble([TwoTower(n_items, member, attributes) for _ in range(settings.members)])


def _save(model: RetrievalModel, folder: str | Path) -> Path:
    """The weights (a shared table once, under the item tower's name; no metadata, so the same
    weights give the same file bytes) and the settings of ``model`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    own = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not model._shared_view(k)}
    save_file(own, str(folder / WEIGHTS))
    meta = {"n_items": model.n_items, "settings": dataclasses.asdict(model.settings)}
    (folder / SETTINGS).write_text(json.dumps(meta, indent=2))
    return folder


def load_model(folder: str | Path, device: torch.device | None = None) -> RetrievalModel:
    """The model saved in ``folder`` (``save``), in eval mode on ``device``."""
    folder = Path(folder)
    meta = json.loads((folder / SETTINGS).read_text())
    state = load_file(folder / WEIGHTS)
    attributes = next(
        (v for k, v in state.items() if k.endswith("items.attributes") or k.endswith("tower.attributes")), None
    )
    model = new_model(meta["n_items"], TwoTowerSettings(**meta["settings"]), attributes)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = sorted(k for k in missing if not model._shared_view(k))
    if unexpected or missing:
        raise ValueError(f"{folder / WEIGHTS}: unexpected tensors {unexpected}, missing {missing}")
    return model.to(device or "cpu").eval()


def load_artifact(folder: str | Path, device: torch.device | None = None) -> tuple[RetrievalModel, list[str]]:
    """The model of a published two-tower artifact and its items' pin ids."""
    folder = Path(folder)
    return load_model(folder / MODEL_FOLDER, device), json.loads((folder / ITEMS_FILE).read_text())


class Retriever:
    """Serving side: the item vectors computed once, users scored against all of them with the
    items they already engaged with masked out."""

    def __init__(self, model: RetrievalModel) -> None:
        self.model = model.eval()
        with torch.no_grad():
            self.items = model.all_items()

    def user_vectors(self, histories: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        return self.model.user_tower.encode(histories, batch)

    @torch.no_grad()
    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """(users, n_items) cosine scores; column j is item j+1; engaged items are -inf."""
        scores = self.user_vectors(histories) @ self.items.T
        return mask_engaged(scores, histories)

    def top_k(self, histories: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(item indices 1..n, scores) of each user's k best items."""
        values, columns = self.scores(histories).topk(k, dim=1)
        return columns + 1, values


def mask_engaged(scores: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
    """``scores`` with each user's history items (index i -> column i-1) set to -inf."""
    rows = torch.arange(len(histories), device=scores.device).unsqueeze(1).expand_as(histories)
    present = histories > 0
    scores = scores.clone()
    scores[rows[present], histories[present] - 1] = float("-inf")
    return scores

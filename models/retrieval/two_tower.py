"""Two-tower retrieval models, composed from the parts of :mod:`models.retrieval.towers`: an
item tower over item IDs (plus content features when present) and a user tower over the user's
recent engaged items, L2-normalised and scored by cosine over a temperature. The user side is
``(batch, n_vectors, dim)``; an item's score is the best of the user's vectors.

:func:`new_model` builds the model a :class:`TwoTowerSettings` describes (one place that turns
settings into parts); :class:`TwoTower` itself takes its towers, so a test or a new model family
composes other parts without touching it. ``TwoTowerEnsemble`` serves several two-towers trained
apart (``two_tower.model.members``) as one: their vectors side by side, a score their mean cosine.

Model here; the training task (sampled softmax, logQ) is :mod:`models.retrieval.training`,
evaluation :mod:`models.retrieval.evaluation`, the serving side (item vectors, top-k with
masking) :mod:`models.retrieval.retriever`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models.retrieval.towers import (
    USER_FIELDS,
    InterestFusion,
    ItemFeatures,
    ItemTower,
    UserTower,
    crossing,
    history_encoder,
    user_head,
)
from models.retrieval.two_tower_settings import TwoTowerSettings

WEIGHTS = "two_tower.safetensors"
SETTINGS = "two_tower.json"
# A published two-tower artifact (jobs/train_two_tower.py): the model's folder, and the pin id of
# each item index (a JSON list: item i is at position i - 1).
MODEL_FOLDER = "model"
ITEMS_FILE = "items.json"
INTERESTS_FILE = "interests.json"  # a conditional model's interest names: interest id i at position i - 1


class TwoTower(nn.Module):
    """An item tower and a user tower (built by :func:`towers`, or any parts with the same
    shapes) and the softmax temperature of their cosine scores."""

    def __init__(self, n_items: int, settings: TwoTowerSettings, item_tower: ItemTower, user_tower: UserTower) -> None:
        super().__init__()
        self.settings, self.n_items = settings, n_items
        self.item_tower = item_tower
        self.user_tower = user_tower
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

    @property
    def n_vectors(self) -> int:
        return self.user_tower.n_vectors

    @property
    def item_interests(self) -> torch.Tensor | None:
        """Item i's interest id at [i] (conditional models), else None."""
        condition = self.user_tower.condition
        return condition.item_interests if condition is not None else None

    def all_items(self, batch: int = 8192) -> torch.Tensor:
        """Unit vectors of items ``1..n_items`` (row i-1 is item i)."""
        ids = torch.arange(1, self.n_items + 1, device=self.device)
        return torch.cat([self.item_tower(ids[i : i + batch]) for i in range(0, len(ids), batch)])

    # ------------------------------------------------------------------ saving and loading

    def _shared_view(self, key: str) -> bool:
        """Whether state ``key`` is the user tower's view of the item tower's shared features: it
        is saved once, under the item tower's name."""
        return self.user_tower.items is self.item_tower.features and key.startswith("user_tower.items.")

    def save(self, folder: str | Path) -> Path:
        return _save(self, folder)


def towers(
    n_items: int,
    settings: TwoTowerSettings,
    attributes: torch.Tensor | None = None,
    interests: torch.Tensor | None = None,
) -> tuple[ItemTower, UserTower]:
    """The towers ``settings`` describe: item features (shared by the user tower's history when
    ``share_item_embeddings``), the history encoder ``settings.encoder``, the user head of
    ``settings.user_vectors`` vectors, and for a ``conditional`` model the fusion of an interest
    (``interests[i]``: item i's interest id, 1..; 0 pads)."""
    features = ItemFeatures(n_items, settings.dim, settings.id_dropout, attributes)
    item_tower = ItemTower(features, settings.dim, crossing(settings.item_crossing, features.n_fields, settings))
    history_items = features if settings.share_item_embeddings else ItemFeatures(n_items, settings.dim, 0.0)
    history = history_encoder(settings)
    condition = None
    if settings.conditional:
        if interests is None or len(interests) != n_items + 1 or not bool((interests[1:] > 0).any()):
            raise ValueError(
                "a conditional two-tower needs each item's interest (the source's item_attributes): "
                "none were given for its items"
            )
        condition = InterestFusion(interests, settings.dim, settings.condition_dropout)
    user_tower = UserTower(
        history_items,
        history,
        user_head(settings),
        settings.dim,
        settings.history_dropout,
        condition,
        crossing(settings.user_crossing, USER_FIELDS, settings),
    )
    return item_tower, user_tower


def two_tower(
    n_items: int,
    settings: TwoTowerSettings,
    attributes: torch.Tensor | None = None,
    interests: torch.Tensor | None = None,
) -> TwoTower:
    """One untrained two-tower of ``settings``."""
    return TwoTower(n_items, settings, *towers(n_items, settings, attributes, interests))


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
    def encode(self, histories: torch.Tensor, batch: int = 1024, interests: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([tower.encode(histories, batch, interests) for tower in self.towers], -1) * self.scale

    @torch.no_grad()
    def encode_with_mass(
        self, histories: torch.Tensor, batch: int = 1024, interests: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Side by side vectors of members with projection heads (every mass 1: members' capsule
        interests would not line up, and settings refuse them)."""
        vectors = self.encode(histories, batch, interests)
        return vectors, vectors.new_ones(vectors.shape[:-1])

    @property
    def label_aware(self) -> bool:
        return False


class TwoTowerEnsemble(nn.Module):
    """Two-towers trained apart (``models.retrieval.training.fit_members``) served as one model
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

    @property
    def n_vectors(self) -> int:
        return self.members[0].n_vectors

    @property
    def item_interests(self) -> torch.Tensor | None:
        return self.members[0].item_interests

    def all_items(self, batch: int = 8192) -> torch.Tensor:
        return self._all_items(batch)

    def _shared_view(self, key: str) -> bool:
        """A member's shared view, or the catalogue's attributes of a member after the first
        (every member is built on the same attributes tensor: saved once)."""
        _, k, rest = key.split(".", 2)
        shared = ("item_tower.features.attributes", "user_tower.condition.item_interests")
        return self.members[int(k)]._shared_view(rest) or (k != "0" and rest in shared)

    def save(self, folder: str | Path) -> Path:
        return _save(self, folder)


RetrievalModel = TwoTower | TwoTowerEnsemble


def new_model(
    n_items: int,
    settings: TwoTowerSettings,
    attributes: torch.Tensor | None = None,
    interests: torch.Tensor | None = None,
) -> RetrievalModel:
    """An untrained model of ``settings``: one two-tower, or ``settings.members`` of them."""
    if settings.members == 1:
        return two_tower(n_items, settings, attributes, interests)
    member = dataclasses.replace(settings, members=1)
    return TwoTowerEnsemble([two_tower(n_items, member, attributes, interests) for _ in range(settings.members)])


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
    state = upgrade_state(load_file(folder / WEIGHTS))
    attributes = next((v for k, v in state.items() if k.endswith("features.attributes")), None)
    interests = next((v for k, v in state.items() if k.endswith("condition.item_interests")), None)
    model = new_model(meta["n_items"], TwoTowerSettings(**meta["settings"]), attributes, interests)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = sorted(k for k in missing if not model._shared_view(k))
    if unexpected or missing:
        raise ValueError(f"{folder / WEIGHTS}: unexpected tensors {unexpected}, missing {missing}")
    return model.to(device or "cpu").eval()


# Tensor names of artifacts saved before the towers were composed from parts (their values load
# unchanged): the item tower's features, the user tower's history encoder and head.
_LEGACY_NAMES = (
    (re.compile(r"(^|\.)item_tower\.(ids|attribute_bag)\."), r"\1item_tower.features.\2."),
    (re.compile(r"(^|\.)item_tower\.attributes$"), r"\1item_tower.features.attributes"),
    (re.compile(r"(^|\.)user_tower\.(positions|encoder)\."), r"\1user_tower.history.\2."),
    (re.compile(r"(^|\.)user_tower\.(norm|project)\."), r"\1user_tower.head.\2."),
)
_LEGACY_UNUSED = re.compile(r"(^|\.)user_tower\.items\.project\.")  # an unshared history table's unused projection


def upgrade_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with an older artifact's tensor names made current (a current one unchanged)."""
    if not any(re.search(r"(^|\.)item_tower\.ids\.", k) for k in state):
        return state
    upgraded = {}
    for key, value in state.items():
        if _LEGACY_UNUSED.search(key):
            continue
        for pattern, replacement in _LEGACY_NAMES:
            key = pattern.sub(replacement, key)
        upgraded[key] = value
    return upgraded


def load_artifact(folder: str | Path, device: torch.device | None = None) -> tuple[RetrievalModel, list[str]]:
    """The model of a published two-tower artifact and its items' pin ids."""
    folder = Path(folder)
    return load_model(folder / MODEL_FOLDER, device), json.loads((folder / ITEMS_FILE).read_text())


def load_interest_names(folder: str | Path) -> list[str]:
    """A published conditional two-tower's interest names (interest id i at position i - 1);
    empty for an unconditional one."""
    path = Path(folder) / INTERESTS_FILE
    return json.loads(path.read_text()) if path.is_file() else []

"""Light students over precomputed features: an MLP and an MMoE with MLP / DCNv2 experts.

Input per (query, pin): the query and pin embeddings, their element-wise product, and the
dense features of ``schemas.student_features.DENSE`` (counts as ``log1p``), standardised with
statistics fitted on the training rows and kept in the model as buffers — the saved model needs
nothing else to score.

* ``MLPStudent``: the input through ``hidden`` layers to ``num_levels`` relevance logits.
* ``MMoEStudent``: ``experts`` (each ``mlp`` or ``dcn``: a DCNv2 cross network, low-rank when
  ``cross_rank`` > 0, followed by a projection), one gate per task (a single linear layer and a
  softmax over experts by default, or ``gate_hidden`` units first), and a tower per task:
  ``relevance`` (level logits), ``click`` and ``save`` (one logit each).

Both return a dict of task -> logits. ``save``/``load_student`` write and read ``student.json``
and ``student.safetensors``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models.relevance.student_settings import StudentSettings

SETTINGS_FILE = "student.json"
WEIGHTS_FILE = "student.safetensors"
RELEVANCE, CLICK, SAVE = "relevance", "click", "save"


def dense_matrix(dense: np.ndarray, count_columns: list[int]) -> np.ndarray:
    """The dense features as the model reads them: counts through ``log1p``."""
    out = np.asarray(dense, dtype=np.float32).copy()
    out[:, count_columns] = np.log1p(np.maximum(out[:, count_columns], 0.0))
    return out


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class CrossNetwork(nn.Module):
    """DCNv2: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``, ``W_l = U_l V_l`` when ``rank`` > 0."""

    def __init__(self, width: int, layers: int, rank: int) -> None:
        super().__init__()
        self.cross = nn.ModuleList(
            nn.Sequential(nn.Linear(width, rank, bias=False), nn.Linear(rank, width))
            if rank
            else nn.Linear(width, width)
            for _ in range(layers)
        )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        return x


class _Inputs(nn.Module):
    """Concatenates ``[q, p, q*p, standardised dense]``."""

    def __init__(self, embedding_dim: int, dense_features: int) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.register_buffer("dense_mean", torch.zeros(dense_features))
        self.register_buffer("dense_std", torch.ones(dense_features))

    @property
    def width(self) -> int:
        return 3 * self.embedding_dim + self.dense_mean.numel()

    def fit(self, dense: np.ndarray) -> None:
        t = torch.as_tensor(dense, dtype=torch.float32)
        self.dense_mean.copy_(t.mean(0))
        self.dense_std.copy_(t.std(0).clamp(min=1e-6))

    def forward(self, query: torch.Tensor, pin: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        dense = (dense - self.dense_mean) / self.dense_std
        return torch.cat([query, pin, query * pin, dense.to(query.dtype)], dim=-1)


class MLPStudent(nn.Module):
    tasks = (RELEVANCE,)

    def __init__(self, settings: StudentSettings, embedding_dim: int, dense_features: int) -> None:
        super().__init__()
        self.settings = settings
        self.inputs = _Inputs(embedding_dim, dense_features)
        self.body = mlp([self.inputs.width, *settings.hidden], settings.dropout)
        self.head = nn.Linear(settings.hidden[-1], settings.num_levels)

    def forward(self, query: torch.Tensor, pin: torch.Tensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:
        return {RELEVANCE: self.head(self.body(self.inputs(query, pin, dense)))}


class MMoEStudent(nn.Module):
    tasks = (RELEVANCE, CLICK, SAVE)

    def __init__(self, settings: StudentSettings, embedding_dim: int, dense_features: int) -> None:
        super().__init__()
        self.settings = settings
        self.inputs = _Inputs(embedding_dim, dense_features)
        width, out = self.inputs.width, settings.expert_dim
        self.experts = nn.ModuleList(self._expert(kind, width, out, settings) for kind in settings.experts)
        self.gates = nn.ModuleDict({task: self._gate(width, len(settings.experts), settings) for task in self.tasks})
        outputs = {RELEVANCE: settings.num_levels, CLICK: 1, SAVE: 1}
        self.towers = nn.ModuleDict(
            {
                task: nn.Sequential(
                    mlp([out, settings.tower_hidden], settings.dropout), nn.Linear(settings.tower_hidden, n)
                )
                for task, n in outputs.items()
            }
        )

    @staticmethod
    def _expert(kind: str, width: int, out: int, s: StudentSettings) -> nn.Module:
        if kind == "dcn":
            return nn.Sequential(CrossNetwork(width, s.cross_layers, s.cross_rank), nn.Linear(width, out), nn.ReLU())
        return nn.Sequential(mlp([width, *s.hidden], s.dropout), nn.Linear(s.hidden[-1], out), nn.ReLU())

    @staticmethod
    def _gate(width: int, n_experts: int, s: StudentSettings) -> nn.Module:
        if s.gate_hidden:
            return nn.Sequential(nn.Linear(width, s.gate_hidden), nn.ReLU(), nn.Linear(s.gate_hidden, n_experts))
        return nn.Linear(width, n_experts)

    def gate_weights(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {task: torch.softmax(gate(x), dim=-1) for task, gate in self.gates.items()}

    def forward(self, query: torch.Tensor, pin: torch.Tensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.inputs(query, pin, dense)
        expert_out = torch.stack([expert(x) for expert in self.experts], dim=1)  # [n, experts, out]
        result = {}
        for task, weights in self.gate_weights(x).items():
            mixed = (weights.unsqueeze(-1) * expert_out).sum(1)
            logits = self.towers[task](mixed)
            result[task] = logits if task == RELEVANCE else logits.squeeze(-1)
        return result


Student = MLPStudent | MMoEStudent


def build_student(settings: StudentSettings, embedding_dim: int, dense_features: int) -> Student:
    cls = MMoEStudent if settings.kind == "mmoe" else MLPStudent
    return cls(settings, embedding_dim, dense_features)


def save_student(model: Student, folder: Path, extra: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "settings": dataclasses.asdict(model.settings),
        "embedding_dim": model.inputs.embedding_dim,
        "dense_features": int(model.inputs.dense_mean.numel()),
        **(extra or {}),
    }
    (folder / SETTINGS_FILE).write_text(json.dumps(meta, indent=2))
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    return folder


def load_student(folder: Path, device: torch.device | None = None) -> tuple[Student, dict]:
    """The saved student (eval mode) and its ``student.json``."""
    meta = json.loads((folder / SETTINGS_FILE).read_text())
    model = build_student(StudentSettings(**meta["settings"]), meta["embedding_dim"], meta["dense_features"])
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.to(device or torch.device("cpu")).eval(), meta

"""Feature crossing inside a tower: modules over a tower's *field* embeddings.

A tower's fields are whatever its source gives, each a ``dim`` vector: the item tower's are the
item's ID embedding and the mean of its attribute embeddings (categories, brands, topics); the
user tower's at position ``t`` are the history encoder's state, the item engaged at ``t`` and the
mean of the items up to ``t`` (so crossing stays causal). Every module maps fields
``(..., n_fields, dim)`` to an *interaction* of the same shape that is added to them (a residual),
so modules stack and run side by side:

* :class:`MaskNet` — MaskBlocks in parallel (Wang et al., 2021): an instance-guided mask, computed
  from all fields, multiplied element-wise with the layer-normalised field embeddings, then a
  linear layer, layer norm and ReLU; the blocks' outputs concatenated and projected back to fields.
* :class:`CrossNetV2` — DCNv2's cross layers (Wang et al., 2021) over the concatenated fields:
  ``x_{l+1} = x_0 * (W x_l + b) + x_l``, explicit interactions of growing order.
* :class:`FieldAttention` — self-attention across the fields (a transformer over the field
  embeddings, AutoInt-style): field-wise interaction with each field's own position.
* :class:`DHENLayer` — DHEN's layer (Zhang et al., 2022): MaskNet, DCNv2 and self-attention in
  parallel on the same fields, their outputs summed onto the input (residual, layer norm); layers
  stack into a deep hierarchical ensemble.

:class:`FieldCrossing` is what a tower holds: ``layers`` of one kind, then the crossed fields
flattened and projected to one ``dim`` vector that the tower *adds* to the plain sum of its
fields. That projection starts at zero, so a crossing tower starts as the tower without it and
learns the interactions on top; ``crossing: none`` builds no module at all (today's towers).
"""

from __future__ import annotations

import torch
from torch import nn

from models.retrieval.two_tower_settings import CROSSINGS


class MaskBlock(nn.Module):
    """One MaskBlock: fields (N, F, dim) -> hidden (N, dim). The mask is a two-layer projection
    of all fields (so it is instance-guided: each example masks its own embedding), applied to the
    layer-normalised fields, then a linear layer, layer norm and ReLU."""

    def __init__(self, n_fields: int, dim: int, reduction: int = 2) -> None:
        super().__init__()
        width = n_fields * dim
        self.norm_fields = nn.LayerNorm(width)
        self.mask = nn.Sequential(nn.Linear(width, width * reduction), nn.ReLU(), nn.Linear(width * reduction, width))
        self.hidden = nn.Sequential(nn.Linear(width, dim, bias=False), nn.LayerNorm(dim), nn.ReLU())

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        flat = fields.flatten(-2)
        return self.hidden(self.mask(flat) * self.norm_fields(flat))


class MaskNet(nn.Module):
    """Parallel MaskNet: ``blocks`` MaskBlocks on the same fields, their outputs concatenated
    and projected back to (N, F, dim)."""

    def __init__(self, n_fields: int, dim: int, blocks: int = 2) -> None:
        super().__init__()
        self.n_fields, self.dim = n_fields, dim
        self.blocks = nn.ModuleList(MaskBlock(n_fields, dim) for _ in range(blocks))
        self.out = nn.Linear(blocks * dim, n_fields * dim)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        hidden = torch.cat([block(fields) for block in self.blocks], -1)
        return self.out(hidden).view(fields.shape)


class CrossNetV2(nn.Module):
    """DCNv2 cross layers over the concatenated fields (full-rank ``W``); the interaction is what
    they add to the fields: ``x_L - x_0``, back to (N, F, dim)."""

    def __init__(self, n_fields: int, dim: int, layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(n_fields * dim, n_fields * dim) for _ in range(layers))

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        x0 = x = fields.flatten(-2)
        for layer in self.layers:
            x = x0 * layer(x) + x
        return (x - x0).view(fields.shape)


class FieldAttention(nn.Module):
    """One transformer layer across the fields: each field attends to every other; a learned
    embedding per field tells them apart. The interaction is the layer's update of the fields."""

    def __init__(self, n_fields: int, dim: int, heads: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.field_positions = nn.Parameter(torch.randn(n_fields, dim) * dim**-0.5)
        self.layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True
        )

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        x = fields.reshape(-1, *fields.shape[-2:]) + self.field_positions
        return (self.layer(x) - x).view(fields.shape)


class DHENLayer(nn.Module):
    """A DHEN layer: MaskNet, DCNv2 cross and field self-attention side by side on the same
    fields; their outputs summed onto the fields, layer-normalised."""

    def __init__(self, n_fields: int, dim: int, heads: int = 2, blocks: int = 2) -> None:
        super().__init__()
        self.parallel = nn.ModuleList(
            [MaskNet(n_fields, dim, blocks), CrossNetV2(n_fields, dim, 1), FieldAttention(n_fields, dim, heads)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        return self.norm(fields + sum(module(fields) for module in self.parallel))


class FieldCrossing(nn.Module):
    """``layers`` crossing modules of ``kind``, each adding its interaction to the fields (a DHEN
    layer also normalises), the crossed fields flattened and projected to (..., dim); the
    projection starts at zero (module docstring)."""

    def __init__(self, kind: str, n_fields: int, dim: int, layers: int = 1, heads: int = 2, blocks: int = 2) -> None:
        super().__init__()
        if kind not in CROSSINGS or kind == "none":
            raise ValueError(f"a crossing is one of {list(CROSSINGS[1:])}, got {kind!r}")
        if n_fields < 1 or layers < 1:
            raise ValueError(f"n_fields and layers must be >= 1, got {n_fields}, {layers}")
        self.kind, self.n_fields = kind, n_fields
        if kind == "masknet":
            stack = [MaskNet(n_fields, dim, blocks) for _ in range(layers)]
        elif kind == "transformer":
            stack = [FieldAttention(n_fields, dim, heads) for _ in range(layers)]
        else:
            stack = [DHENLayer(n_fields, dim, heads, blocks) for _ in range(layers)]
        self.stack = nn.ModuleList(stack)
        self.out = nn.Linear(n_fields * dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        """(..., n_fields, dim) -> (..., dim)."""
        if fields.shape[-2] != self.n_fields:
            raise ValueError(f"this crossing takes {self.n_fields} fields, got {fields.shape[-2]}")
        x = fields
        for module in self.stack:
            x = module(x) if isinstance(module, DHENLayer) else x + module(x)
        return self.out(x.flatten(-2))

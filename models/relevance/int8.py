"""Dynamic int8 quantization of a teacher for CPU scoring, calibrated once when it is published.

Dynamic int8 (``torch.ao.quantization.quantize_dynamic``) stores each ``nn.Linear`` weight as
int8 (one scale per output channel here) and quantizes the layer's input per batch with one
scale for the whole tensor. That is accurate where inputs are well spread, and poor where a few
input channels carry outliers — typically the FFN down-projection after GELU/SiLU — because the
outliers set the scale and the rest of the channels round to a few levels.

``calibrate_int8`` finds the layers that suffer from it and keeps them in fp32:

1. for every linear layer, the change of the model's output on the calibration pairs when that
   layer alone is int8 (one pass per layer: the end-to-end cost, which a layer-local error does
   not predict — an early layer's small error grows through the blocks above it);
2. starting from "everything int8", the worst layers are kept in fp32 one at a time until the
   Spearman correlation of the model's output with fp32 reaches the target (or a cap on the
   number of fp32 layers is hit).

The result (``Int8Plan``) is saved with the teacher as ``int8.json``; the scorer reads it, so the
choice is made once, on held-out data, and every worker quantizes identically.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.relevance.metrics import spearman

INT8_FILE = "int8.json"


@dataclass(frozen=True)
class Int8Plan:
    keep_fp32: tuple[str, ...]  # linear layers left in fp32
    spearman: float  # of the quantized model's output with fp32, on the calibration pairs
    target: float
    pairs: int
    layer_error: dict[str, float]  # RMS change of the output with this layer alone in int8

    def save(self, folder: str | Path) -> None:
        (Path(folder) / INT8_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> Int8Plan | None:
        path = Path(folder) / INT8_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        return cls(**{**raw, "keep_fp32": tuple(raw["keep_fp32"])})


def linear_layers(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if type(module) is nn.Linear]


def quantize_int8(model: nn.Module, keep_fp32: Collection[str] = ()) -> nn.Module:
    """A copy of ``model`` with every linear layer not in ``keep_fp32`` dynamically quantized to
    int8 (per-channel weight scales)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    unknown = set(keep_fp32) - set(linear_layers(model))
    if unknown:
        raise ValueError(f"keep_fp32 names layers the model does not have: {sorted(unknown)}")
    spec = {name: per_channel_dynamic_qconfig for name in linear_layers(model) if name not in set(keep_fp32)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch points at torchao for new code; this API is still the CPU path
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=False)


def layer_errors(model: nn.Module, run: Callable[[nn.Module], np.ndarray], reference: np.ndarray) -> dict[str, float]:
    """For each linear layer: the RMS change of the model's output (``run`` on the calibration
    pairs) when that layer alone is int8 — the end-to-end cost of quantizing it."""
    errors = {}
    for name in linear_layers(model):
        only = [other for other in linear_layers(model) if other != name]
        with torch.inference_mode():
            out = np.asarray(run(quantize_int8(model, keep_fp32=only)), dtype=np.float64)
        errors[name] = float(np.sqrt(np.mean((out - reference) ** 2)))
    return errors


def calibrate_int8(
    model: nn.Module,
    run: Callable[[nn.Module], np.ndarray],
    pairs: int,
    target: float = 0.995,
    max_fp32_share: float = 0.25,
) -> Int8Plan:
    """The int8 plan for ``model``: ``run(m)`` scores the calibration pairs with ``m`` and returns
    one number per pair (the expected relevance)."""
    if not 0.0 < max_fp32_share <= 1.0:
        raise ValueError(f"max_fp32_share must be in (0, 1], got {max_fp32_share}")
    model = model.eval()
    with torch.inference_mode():
        reference = np.asarray(run(model), dtype=np.float64)
    errors = layer_errors(model, run, reference)
    worst_first = sorted(errors, key=lambda name: (-errors[name], name))
    cap = int(np.floor(max_fp32_share * len(worst_first)))
    keep: list[str] = []
    while True:
        with torch.inference_mode():
            rho = spearman(reference, run(quantize_int8(model, keep)))
        if rho >= target or len(keep) >= cap:
            return Int8Plan(tuple(keep), float(rho), target, pairs, errors)
        keep.append(worst_first[len(keep)])

"""OpenVINO, the CPU engine for the two transformer encoders (the teacher and the bi-encoder).

Why this engine: ``bench/cpu_engines.py`` ran torch's dynamic int8 (today's plan), ONNX Runtime's
dynamic int8 and OpenVINO (bf16 and NNCF's static int8) on the same pairs, cores and batches;
see its record in ``reports/cpu_engines.json`` and the README.

An encoder is exported once, where it is published (never per worker), into a folder of its own:

* ``model.xml``/``.bin``: the fp32 torch module converted by ``openvino.convert_model`` (no ONNX
  file in between), weights stored as fp16; compiled with the ``bf16`` or ``fp32`` precision hint;
* ``int8.xml``/``.bin``: the same model statically quantized to int8 by NNCF on calibration
  batches (activations too, with scales fixed from the calibration statistics);
* ``openvino.json`` (:class:`OpenVinoPlan`): how closely each agrees with fp32 torch on held-out
  data (not the calibration batches), and whether int8 reached the owner's target — the choice every worker makes
  the same way.

:class:`OpenVinoModule` runs a compiled model where a torch module was called, on CPU, with the
threads it was given.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPENVINO_DIR = "openvino"
PLAN_FILE = "openvino.json"
MODEL_FILE = "model.xml"
INT8_FILE = "int8.xml"
HINTS = {"bf16": "bf16", "fp32": "f32"}  # precision -> OpenVINO's inference precision hint
INPUTS = ("input_ids", "attention_mask")


@dataclass(frozen=True)
class OpenVinoPlan:
    """What an export measured: each precision's agreement with fp32 torch on held-out data
    (``metric``: the owner's measure, e.g. Spearman of the expected relevance, or the smallest
    cosine of an embedding), and whether int8 reached ``target``."""

    metric: str
    target: float
    calibration_rows: int  # what the int8 scales were fitted on
    agreement_rows: int  # what the agreements were measured on (none of the calibration rows)
    int8_agreement: float
    bf16_agreement: float

    @property
    def int8(self) -> bool:
        return self.int8_agreement >= self.target

    def save(self, folder: Path) -> None:
        (folder / PLAN_FILE).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: Path) -> OpenVinoPlan:
        return cls(**json.loads((folder / PLAN_FILE).read_text()))


Batch = tuple[np.ndarray, np.ndarray]  # input ids, attention mask: int64 (rows, tokens)


def convert(module: nn.Module, example: Batch, folder: Path) -> Path:
    """``module(input_ids, attention_mask)`` (fp32, CPU) as an OpenVINO model in ``folder``,
    batch and sequence dimensions dynamic."""
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    inputs = [(name, [-1, -1], ov.Type.i64) for name in INPUTS]
    with torch.no_grad():
        model = ov.convert_model(module.eval(), example_input=tuple(torch.from_numpy(x) for x in example), input=inputs)
    ov.save_model(model, folder / MODEL_FILE, compress_to_fp16=True)
    return folder / MODEL_FILE


def quantize(folder: Path, batches: Iterable[Batch]) -> Path:
    """The model in ``folder`` statically quantized to int8 by NNCF on ``batches`` (transformer
    scheme: attention's softmax and layer norms stay in floating point), saved beside it."""
    import nncf
    import openvino as ov

    items = [dict(zip(INPUTS, batch, strict=True)) for batch in batches]
    if not items:
        raise ValueError("int8 quantization needs at least one calibration batch")
    model = ov.Core().read_model(folder / MODEL_FILE)
    quantized = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items))
    ov.save_model(quantized, folder / INT8_FILE, compress_to_fp16=False)
    return folder / INT8_FILE


def compile_model(folder: Path, precision: str, threads: int):
    """The model in ``folder`` compiled for CPU: ``int8`` (the quantized IR), ``bf16`` or
    ``fp32`` (the converted IR under that precision hint), on ``threads`` threads."""
    import openvino as ov

    if precision == "int8":
        path, hint = folder / INT8_FILE, "bf16"  # int8 matmuls; what stays float computes in bf16
    elif precision in HINTS:
        path, hint = folder / MODEL_FILE, HINTS[precision]
    else:
        raise ValueError(f"OpenVINO runs int8, bf16 or fp32, not {precision!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the encoder was not exported for OpenVINO at publish time")
    core = ov.Core()
    if hint == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        hint = "f32"  # a CPU without bf16 units computes the float parts in fp32
    # No CPU pinning: OpenVINO pins its threads to cores by default, and every Spark Python
    # worker of a machine pins its single thread to the same first core — two 1-thread workers
    # on 2 cores ran at half speed each (68 vs 138 pairs/s measured here).
    config = {
        "INFERENCE_NUM_THREADS": max(1, threads),
        "INFERENCE_PRECISION_HINT": hint,
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
    }
    return core.compile_model(core.read_model(path), "CPU", config)


def executed_precisions(compiled) -> Counter:
    """How many operations of the compiled model execute in each element type (``i8``, ``bf16``,
    ``f32``, ...): what the CPU plugin actually chose, not what was asked."""
    found: Counter = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info:
            found[info["runtimePrecision"].astype(str)] += 1
    return found


class OpenVinoModule(nn.Module):
    """A compiled OpenVINO model called like the torch module it was converted from:
    ``forward(input_ids, attention_mask)`` -> its first output, a CPU tensor. It has no torch
    parameters; ``settings`` (when given) is the torch module's, for callers that read it."""

    def __init__(self, compiled, settings=None) -> None:
        super().__init__()
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.settings = settings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feed = {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()}
        out = self.request.infer(feed)
        return torch.from_numpy(np.array(out[self.compiled.output(0)], copy=True))

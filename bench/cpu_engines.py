"""CPU engines for the two transformer encoders, on the same pairs, cores and batches.

    .venv/bin/python bench/cpu_engines.py [--teacher FOLDER] [--pairs 2000] [--folds 1]

Inputs: CrowdFlower (query, product title + description) pairs of ``--folds`` from
``../shared/data/crowdflower/labels.csv`` — the first ``--calibration`` of them calibrate
(torch's int8 plan, the OpenVINO export), the next ``--pairs`` are measured. The teacher is
``--teacher`` (a published folder) or the bundled MiniLM with an untrained head (speed does not
depend on the weights' values; agreement with fp32 is then measured on a head nobody trained).

Teacher, every engine through the scorer's own batching (length-ordered, ``--batch-size`` rows,
8192 padded tokens) with ``--threads`` threads: torch fp32, torch dynamic int8 under its plan
(today's CPU default), ONNX Runtime dynamic int8 (per-channel, the ONNX export of the same fp32
module), OpenVINO fp32 / bf16 / static int8 (the teacher's export). Figures: pairs/s, ratio to
torch int8, Spearman of the expected relevance with torch fp32.

Bi-encoder (the packaged MiniLM, student_features' token budget): torch fp32 (today's UDF),
ONNX Runtime dynamic int8, OpenVINO bf16 / static int8. Figures: texts/s, ratio to torch fp32,
smallest and mean cosine with torch fp32's embeddings.

Writes ``reports/cpu_engines.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

from bench.record import Figure, Record, write_record  # noqa: E402
from models.packaged import minilm_dir  # noqa: E402
from models.relevance import openvino_engine as ov_engine  # noqa: E402
from models.relevance.metrics import spearman  # noqa: E402
from models.relevance.scoring import (  # noqa: E402
    ScoringSettings,
    TeacherScorer,
    calibrate_teacher_int8,
    export_teacher_openvino,
)
from models.relevance.teacher import CrossEncoderTeacher  # noqa: E402
from models.relevance.teacher_inference import encode_pairs, predict_proba  # noqa: E402
from models.relevance.teacher_settings import TeacherSettings  # noqa: E402
from models.relevance.text_encoder import mean_pool  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowdflower" / "labels.csv"


def crowdflower_pairs(path: Path, folds: list[int]) -> tuple[list[str], list[str]]:
    rows = pd.read_csv(path)
    rows = rows[rows["fold"].isin(folds)]
    texts = (rows["product_title"].fillna("") + " " + rows["product_description"].fillna("")).str.strip()
    return rows["query"].fillna("").tolist(), texts.tolist()


class OnnxModule(nn.Module):
    """An ONNX Runtime session called like the torch module it was exported from."""

    def __init__(self, path: Path, threads: int, settings=None) -> None:
        import onnxruntime as ort

        super().__init__()
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.settings = settings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])


def onnx_int8(module: nn.Module, folder: Path, threads: int, settings=None) -> OnnxModule:
    """``module`` exported to ONNX (TorchScript exporter, dynamic batch and length) and
    dynamically quantized to int8 with per-channel weight scales."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    example = (torch.randint(1000, 2000, (2, 16)), torch.ones(2, 16, dtype=torch.long))
    axes = {"input_ids": {0: "rows", 1: "tokens"}, "attention_mask": {0: "rows", 1: "tokens"}}
    torch.onnx.export(
        module.eval(),
        example,
        folder / "fp32.onnx",
        input_names=list(ov_engine.INPUTS),
        output_names=["out"],
        dynamic_axes=axes,
        dynamo=False,
        opset_version=17,
    )
    quantize_dynamic(folder / "fp32.onnx", folder / "int8.onnx", weight_type=QuantType.QInt8, per_channel=True)
    return OnnxModule(folder / "int8.onnx", threads, settings)


def rate(n: int, run: Callable[[], object], warm: Callable[[], object]) -> tuple[float, object]:
    warm()
    started = time.perf_counter()
    out = run()
    return n / (time.perf_counter() - started), out


class Pooled(nn.Module):
    """The bi-encoder as one module: token states mean-pooled and L2-normalised."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)


def embed(module: nn.Module, tokenizer, texts: list[str], batch_size: int, max_length: int) -> np.ndarray:
    """``TextEncoder.encode``'s batching (length-sorted, padded to each batch's longest)."""
    parts, order = [], np.argsort([len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            parts.append(module(batch["input_ids"], batch["attention_mask"]).numpy())
    out = np.empty_like(np.concatenate(parts))
    out[order] = np.concatenate(parts)
    return out


def teacher_figures(args, work: Path, queries, texts) -> tuple[list[Figure], dict]:
    cal, test = slice(0, args.calibration), slice(args.calibration, args.calibration + args.pairs)
    folder = args.teacher
    if folder is None:
        torch.manual_seed(0)
        folder = work / "teacher"
        model = CrossEncoderTeacher.build(TeacherSettings(backbone_path=str(minilm_dir())))
        model.save(folder, AutoTokenizer.from_pretrained(minilm_dir()))
        (folder / "encoding.json").write_text(json.dumps({"max_length": 128, "query_tokens": 16}))
    started = time.perf_counter()
    plan = calibrate_teacher_int8(folder, queries[cal], texts[cal], target=args.target)
    plan.save(folder)
    torch_plan_s = time.perf_counter() - started
    started = time.perf_counter()
    exported = export_teacher_openvino(folder, queries[cal], texts[cal], target=args.target, batch_size=args.batch_size)
    export_s = time.perf_counter() - started
    print(f"teacher ready: int8 plan {torch_plan_s:.0f} s, OpenVINO export {export_s:.0f} s, {exported}", flush=True)

    fp32 = TeacherScorer(folder, ScoringSettings("fp32", args.batch_size, engine="torch"))
    encoded = encode_pairs(fp32.tokenizer, queries[test], texts[test], fp32)
    pad = fp32.tokenizer.pad_token_id
    warm = encode_pairs(fp32.tokenizer, queries[:32], texts[:32], fp32)

    def measure(model: nn.Module) -> tuple[float, np.ndarray]:
        r, probs = rate(
            len(encoded),
            lambda: predict_proba(model, encoded, args.batch_size, pad, fp32.max_batch_tokens),
            lambda: predict_proba(model, warm, args.batch_size, pad, fp32.max_batch_tokens),
        )
        return r, probs @ fp32.levels

    engines = {
        "torch fp32": fp32.model,
        "torch int8 (plan)": TeacherScorer(folder, ScoringSettings("int8", args.batch_size, engine="torch")).model,
        "ONNX Runtime int8": onnx_int8(fp32.model, work / "onnx-teacher", args.threads, fp32.model.settings),
    }
    for precision in ("fp32", "bf16", "int8"):
        engines[f"OpenVINO {precision}"] = TeacherScorer(
            folder, ScoringSettings(precision, args.batch_size, engine="openvino")
        ).model
    rates, expected = {}, {}
    for name, model in engines.items():
        rates[name], expected[name] = measure(model)
        print(f"teacher {name}: {rates[name]:.1f} pairs/s", flush=True)
    figures = []
    for name in engines:
        figures += [
            Figure(f"teacher {name}", rates[name], "pairs/s", headline=name.startswith("OpenVINO int8")),
            Figure(f"teacher {name} vs torch int8", rates[name] / rates["torch int8 (plan)"], "x", "derived"),
            Figure(f"teacher {name} Spearman with fp32", spearman(expected["torch fp32"], expected[name])),
        ]
    inputs = {
        "teacher": str(args.teacher) if args.teacher else "bundled MiniLM-L6, untrained head",
        "measured_pairs": len(encoded),
        "calibration_pairs": args.calibration,
        "torch_int8_fp32_layers": len(plan.keep_fp32),
        "openvino_plan": {"int8": exported.int8, "int8_spearman": exported.int8_agreement},
        "torch_plan_s": torch_plan_s,
        "openvino_export_s": export_s,
    }
    return figures, inputs


def encoder_figures(args, work: Path, texts: list[str]) -> list[Figure]:
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    torch_fp32 = Pooled(AutoModel.from_pretrained(minilm_dir())).eval()
    sample = texts[args.calibration : args.calibration + args.texts]
    cal = texts[: args.calibration]
    folder = work / "encoder-openvino"
    batches = []
    for start in range(0, len(cal), args.encoder_batch_size):
        enc = tokenizer(cal[start : start + args.encoder_batch_size], padding=True, truncation=True, max_length=64)
        batches.append((np.asarray(enc["input_ids"], np.int64), np.asarray(enc["attention_mask"], np.int64)))
    ov_engine.convert(torch_fp32, batches[0], folder)
    ov_engine.quantize(folder, batches)
    engines = {
        "torch fp32": torch_fp32,
        "ONNX Runtime int8": onnx_int8(torch_fp32, work / "onnx-encoder", args.threads),
        "OpenVINO bf16": ov_engine.OpenVinoModule(ov_engine.compile_model(folder, "bf16", args.threads)),
        "OpenVINO int8": ov_engine.OpenVinoModule(ov_engine.compile_model(folder, "int8", args.threads)),
    }
    rates, vectors = {}, {}
    for name, module in engines.items():
        rates[name], vectors[name] = rate(
            len(sample),
            lambda m=module: embed(m, tokenizer, sample, args.encoder_batch_size, 64),
            lambda m=module: embed(m, tokenizer, sample[:64], args.encoder_batch_size, 64),
        )
        print(f"bi-encoder {name}: {rates[name]:.1f} texts/s", flush=True)
    figures = []
    for name in engines:
        cosine = (vectors[name] * vectors["torch fp32"]).sum(1)
        figures += [
            Figure(f"bi-encoder {name}", rates[name], "texts/s", headline=name.startswith("OpenVINO")),
            Figure(f"bi-encoder {name} vs torch fp32", rates[name] / rates["torch fp32"], "x", "derived"),
            Figure(f"bi-encoder {name} smallest cosine with fp32", float(cosine.min())),
            Figure(f"bi-encoder {name} mean cosine with fp32", float(cosine.mean())),
        ]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=None, help="a published teacher folder")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16, help="scorer.batch_size")
    parser.add_argument("--encoder-batch-size", type=int, default=64, help="student_features.encoder_batch_size")
    parser.add_argument("--target", type=float, default=0.993, help="teacher.int8_target_spearman")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    queries, texts = crowdflower_pairs(args.data, args.folds)
    if len(queries) < args.calibration + max(args.pairs, args.texts):
        raise SystemExit(f"folds {args.folds} have {len(queries)} pairs; need {args.calibration + args.pairs}")
    work = Path(tempfile.mkdtemp(prefix="pinpipe-bench-engines-"))
    figures, inputs = teacher_figures(args, work, queries, texts)
    figures += encoder_figures(args, work, texts)
    write_record(
        Record(
            "cpu_engines",
            f"CPU engines for the teacher and the bi-encoder, {args.threads} threads, same pairs and batches",
            "bench/cpu_engines.py " + " ".join(sys.argv[1:]),
            figures,
            inputs={
                **inputs,
                "data": f"CrowdFlower folds {args.folds}",
                "measured_texts": args.texts,
                "batch_size": args.batch_size,
                "encoder_batch_size": args.encoder_batch_size,
                "encoder_max_length": 64,
                "threads": args.threads,
                "target_spearman": args.target,
            },
        )
    )


if __name__ == "__main__":
    main()

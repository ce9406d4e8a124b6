"""The teacher on a CUDA GPU: precision checks and scoring throughput (no Spark needed).

    python bench/gpu_scoring.py --part checks     # fp32 CPU vs GPU, bf16/fp16/nf4 vs fp32, qLoRA step
    python bench/gpu_scoring.py --part minilm     # MiniLM-shaped teacher, bf16: pairs/s per batch size
    python bench/gpu_scoring.py --part llama      # Llama-3-8B-shaped teacher (random weights): nf4 and bf16

Throughput is measured through ``models.relevance.scoring.TeacherScorer`` — the code the Spark UDF runs —
twice: end to end (tokenization on one CPU core included) and model only (pairs tokenized
beforehand), over pairs whose lengths follow the CrowdFlower (query, product) pairs. Models are
random-weight copies of the real shapes: speed does not depend on the values of the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.record import Figure, Record, write_record  # noqa: E402
from models.packaged import minilm_dir  # noqa: E402
from models.random_models import save_random_backbone  # noqa: E402
from models.relevance.scoring import ScoringSettings, TeacherScorer  # noqa: E402
from models.relevance.teacher import CrossEncoderTeacher  # noqa: E402
from models.relevance.teacher_inference import encode_pairs, predict_proba  # noqa: E402
from models.relevance.teacher_settings import TeacherSettings  # noqa: E402

LLAMA_3_8B = dict(
    hidden_size=4096,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=14336,
    vocab_size=128256,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    pad_token_id=0,
)


def pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Queries of 1-5 words, texts of lognormal length (median ~60 words, as CrowdFlower)."""
    from transformers import AutoTokenizer

    vocab = [w for w in AutoTokenizer.from_pretrained(minilm_dir()).get_vocab() if w.isalpha() and len(w) > 2]
    rng = np.random.default_rng(seed)
    queries = [" ".join(rng.choice(vocab, rng.integers(1, 6))) for _ in range(n)]
    lengths = np.clip(rng.lognormal(np.log(60), 0.8, n), 3, 400).astype(int)
    texts = [" ".join(rng.choice(vocab, k)) for k in lengths]
    return queries, texts


def publish(model: CrossEncoderTeacher, folder: Path, max_length: int = 128) -> Path:
    from transformers import AutoTokenizer

    model.save(folder, AutoTokenizer.from_pretrained(minilm_dir()))
    (folder / "encoding.json").write_text(json.dumps({"max_length": max_length, "query_tokens": 16}))
    return folder


FIGURES: list[Figure] = []  # every measured figure of this run, for its record


def throughput(scorer: TeacherScorer, queries, texts, batch_sizes, tokens_budget: int = 0) -> None:
    encoded = encode_pairs(scorer.tokenizer, queries, texts, scorer)
    print(f"  {len(queries):,} pairs, mean {encoded.lengths.mean():.1f} tokens (max_length {scorer.max_length})")
    best = (0.0, 0)
    for bs in batch_sizes:
        torch.cuda.reset_peak_memory_stats()  # each batch size's own peak, not the run's so far
        scorer.batch_size, scorer.max_batch_tokens = bs, tokens_budget
        for _ in range(2):  # the first pass meets each padded shape for the first time (kernel choice): not timed
            torch.cuda.synchronize()
            started = time.perf_counter()
            predict_proba(scorer.model, encoded, bs, scorer.tokenizer.pad_token_id, tokens_budget)
            torch.cuda.synchronize()
        model_rate = len(queries) / (time.perf_counter() - started)
        started = time.perf_counter()
        scorer.score(queries, texts)
        torch.cuda.synchronize()
        e2e_rate = len(queries) / (time.perf_counter() - started)
        best = max(best, (model_rate, bs))
        FIGURES.append(Figure(f"{scorer.precision} batch {bs} model only", model_rate, "pairs/s"))
        FIGURES.append(Figure(f"{scorer.precision} batch {bs} with tokenization", e2e_rate, "pairs/s"))
        FIGURES.append(
            Figure(f"{scorer.precision} batch {bs} peak GPU memory", torch.cuda.max_memory_allocated() / 2**30, "GiB")
        )
        print(
            f"  batch {bs:5d}: model only {model_rate:9.1f} pairs/s | with tokenization {e2e_rate:9.1f} pairs/s | "
            f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB",
            flush=True,
        )
    print(f"  best: batch {best[1]} at {best[0]:.1f} pairs/s (model only)")


def part_checks(work: Path) -> None:
    backbone = save_random_backbone(work / "bert", "bert")
    torch.manual_seed(0)
    folder = publish(
        CrossEncoderTeacher.build(TeacherSettings(backbone_path=str(backbone), head_hidden=16)), work / "t"
    )
    q, t = pairs(256)
    cpu = TeacherScorer(folder, ScoringSettings(precision="fp32", engine="torch"))
    ref, _, _ = cpu.score(q, t)
    for precision in ("fp32", "bf16", "fp16", "nf4"):
        scorer = TeacherScorer(folder, ScoringSettings(precision=precision), torch.device("cuda"))
        probs, _, _ = scorer.score(q, t)
        print(f"GPU {precision:5s} vs CPU fp32: max |delta p| = {np.abs(probs - ref).max():.2e}")
    # qLoRA on a small Llama: 4-bit base, LoRA, gradient checkpointing, bf16 compute; a few steps
    llama = save_random_backbone(work / "llama", "llama", hidden_size=256, intermediate_size=512, num_hidden_layers=4)
    settings = TeacherSettings(backbone_path=str(llama), lora_r=8, quantize_4bit=True, gradient_checkpointing=True)
    qlora_steps(settings, "small Llama", batch=16, steps=5)
    torch.cuda.empty_cache()


def qlora_steps(settings: TeacherSettings, name: str, batch: int, steps: int, length: int = 128) -> CrossEncoderTeacher:
    model = CrossEncoderTeacher.build(settings, torch.device("cuda"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(1000, 20000, (batch, length), device="cuda")
    mask = torch.ones_like(ids)
    labels = torch.randint(0, settings.num_levels, (batch,), device="cuda")
    losses = []
    for step in range(steps + 1):
        if step == 1:
            torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(ids, mask).float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    torch.cuda.synchronize()
    rate = batch * steps / (time.perf_counter() - started)
    print(
        f"qLoRA {name}: trainable {model.trainable_parameters():,} params, losses {losses[0]:.3f} -> {losses[-1]:.3f}, "
        f"{rate:.1f} examples/s at {length} tokens, "
        f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB",
        flush=True,
    )
    return model


def part_minilm(work: Path, n: int) -> None:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(minilm_dir())
    AutoModel.from_config(config).save_pretrained(work / "minilm")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (work / "minilm" / name).write_bytes((minilm_dir() / name).read_bytes())
    torch.manual_seed(0)
    folder = publish(CrossEncoderTeacher.build(TeacherSettings(backbone_path=str(work / "minilm"))), work / "t")
    q, t = pairs(n)
    for precision in ("bf16", "fp16"):
        print(f"MiniLM-L6 shape, {precision}:")
        throughput(
            TeacherScorer(folder, ScoringSettings(precision=precision), torch.device("cuda")),
            q,
            t,
            [128, 256, 512, 1024, 2048, 4096],
        )


def part_llama(work: Path, n: int) -> None:
    from transformers import AutoModel, LlamaConfig

    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.device("cuda"):
        model = AutoModel.from_config(LlamaConfig(**LLAMA_3_8B), dtype=torch.bfloat16)
    print(f"Llama-3-8B shape: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters", flush=True)
    model.save_pretrained(work / "llama8b")
    del model
    torch.cuda.empty_cache()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (work / "llama8b" / name).write_bytes((minilm_dir() / name).read_bytes())
    print(f"  random bf16 weights saved in {time.perf_counter() - started:.0f} s", flush=True)
    settings = TeacherSettings(
        backbone_path=str(work / "llama8b"), lora_r=16, quantize_4bit=True, gradient_checkpointing=True
    )
    trained = qlora_steps(settings, "Llama-3-8B shape", batch=8, steps=3)
    folder = publish(trained, work / "t")  # the adapter and head; the base stays where it is
    del trained
    torch.cuda.empty_cache()
    q, t = pairs(n)
    for precision in ("nf4", "bf16"):
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        scorer = TeacherScorer(folder, ScoringSettings(precision=precision), torch.device("cuda"))
        print(
            f"Llama-3-8B shape + LoRA adapter, {precision} (loaded in {time.perf_counter() - started:.0f} s):",
            flush=True,
        )
        throughput(scorer, q, t, [64, 128, 256, 512])
        del scorer
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["checks", "minilm", "llama"], required=True)
    parser.add_argument("--pairs", type=int, default=20_000)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        {
            "checks": lambda: part_checks(Path(tmp)),
            "minilm": lambda: part_minilm(Path(tmp), args.pairs),
            "llama": lambda: part_llama(Path(tmp), args.pairs),
        }[args.part]()
    if FIGURES:
        write_record(
            Record(
                f"gpu_scoring_{args.part}",
                f"Teacher scoring on GPU, {args.part} (random weights, real shapes)",
                "bench/gpu_scoring.py " + " ".join(sys.argv[1:]),
                FIGURES,
                inputs={"pairs": args.pairs},
            )
        )


if __name__ == "__main__":
    main()

"""The teacher's settings: what model to build (``TeacherSettings``) and how to train it
(``TrainSettings``). Plain dataclasses without torch, so that the job configuration
(``jobs.train_teacher``'s ``teacher`` section) can hold them without importing a deep-learning
stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.packaged import minilm_dir

POOLINGS = ("auto", "cls", "mean", "last")
GPU_DTYPE_NAMES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class TeacherSettings:
    backbone_path: str = field(
        metadata={
            "help": "local folder (config.json + weights + tokenizer); empty = the bundled MiniLM's path",
            "path": True,  # the config loader makes it absolute
            "when_empty": minilm_dir,  # and resolves an empty one to the MiniLM of the installed package
        }
    )
    num_levels: int = field(
        default=4, metadata={"help": "CrowdFlower 1-4; Pinterest uses 5. Labels map linearly onto these."}
    )
    pooling: str = field(
        default="auto", metadata={"help": "auto: mean for encoders, last non-pad token for decoder LLMs"}
    )
    head_hidden: int = field(
        default=256, metadata={"help": "Width of the MLP head's hidden layer over the pooled backbone output."}
    )
    dropout: float = field(default=0.1, metadata={"help": "Dropout in the head."})
    lora_r: int = field(default=0, metadata={"help": "0: full fine-tune"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA adapters' inputs."})
    lora_targets: list[str] = field(default_factory=list, metadata={"help": "empty: per architecture"})
    quantize_4bit: bool = field(default=False, metadata={"help": "needs CUDA + bitsandbytes"})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute the backbone's activations in the backward pass (less memory, more time)."},
    )
    gpu_dtype: str = field(
        default="bfloat16",
        metadata={"help": "Compute dtype on GPU: bfloat16, float16 (with a gradient scaler) or float32."},
    )

    def __post_init__(self) -> None:
        if not self.backbone_path.strip():
            raise ValueError(
                "backbone_path must name a local model folder (the job config resolves an empty "
                "teacher.model.backbone_path to the bundled MiniLM)"
            )
        if self.num_levels < 2:
            raise ValueError(f"num_levels must be >= 2, got {self.num_levels}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.gpu_dtype not in GPU_DTYPE_NAMES:
            raise ValueError(f"gpu_dtype must be one of {GPU_DTYPE_NAMES}, got {self.gpu_dtype!r}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        if self.quantize_4bit and self.lora_r == 0:
            raise ValueError("quantize_4bit trains adapters only: set lora_r > 0 (qLoRA)")


@dataclass(frozen=True)
class TrainSettings:
    max_length: int = field(default=128, metadata={"help": "tokens per (query, pin text) pair"})
    query_tokens: int = field(default=24, metadata={"help": "budget for the query; the pin text gets the rest"})
    batch_size: int = field(default=32, metadata={"help": "Training pairs per step."})
    eval_batch_size: int = field(default=128, metadata={"help": "Rows per forward pass when evaluating."})
    epochs: int = field(
        default=3, metadata={"help": "Most passes over the training rows (early stopping may end sooner)."}
    )
    lr: float = field(default=5e-5, metadata={"help": "Learning rate of the backbone (or its LoRA adapters)."})
    head_lr: float = field(
        default=1e-3,
        metadata={"help": "Learning rate of the head (randomly initialised, so larger than the backbone's)."},
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(
        default=0.06, metadata={"help": "Share of the steps whose learning rate warms up linearly from zero."}
    )
    patience: int = field(default=1, metadata={"help": "epochs without a better validation kappa before stopping"})
    select_best: bool = field(
        default=True,
        metadata={
            "help": (
                "False: train exactly ``epochs`` and keep the last weights, validating once at the end "
                "(for cross-validation, where choosing the epoch on the test fold would flatter the "
                "result)"
            )
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, shuffling and dropout."})
    sort_window: int = field(default=50, metadata={"help": "batches per length-sorted window"})
    progress: bool = field(default=True, metadata={"help": "Log a progress line per epoch."})

    def __post_init__(self) -> None:
        if self.query_tokens >= self.max_length - 3:
            raise ValueError(f"query_tokens ({self.query_tokens}) must leave room in max_length ({self.max_length})")
        for name in ("batch_size", "eval_batch_size", "epochs", "patience", "sort_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


CPU_ENGINES = ("openvino", "torch")  # what runs the encoders on CPU (models/relevance/openvino_engine.py)


@dataclass(frozen=True)
class ScoringSettings:
    """How a published teacher scores pairs (``models.relevance.scoring.TeacherScorer``)."""

    precision: str = field(default="auto", metadata={"help": "auto, fp32, int8 (CPU), bf16/fp16/nf4 (GPU)."})
    batch_size: int = field(default=128, metadata={"help": "Pairs per model call, at most."})
    max_batch_tokens: int = field(default=8192, metadata={"help": "Padded tokens per model call; 0: rows only."})
    max_length: int = field(default=0, metadata={"help": "Tokens per pair; 0: as trained."})
    query_tokens: int = field(default=0, metadata={"help": "Tokens of the query; 0: as trained."})
    engine: str = field(default="openvino", metadata={"help": "CPU engine: openvino (the teacher's export) | torch."})

    def __post_init__(self) -> None:
        if self.engine not in CPU_ENGINES:
            raise ValueError(f"unknown CPU engine {self.engine!r}; known: {', '.join(CPU_ENGINES)}")

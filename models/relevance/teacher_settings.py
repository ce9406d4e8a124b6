"""The teacher's settings: what model to build (``TeacherSettings``) and how to train it
(``TrainSettings``). Plain dataclasses without torch, so that the job configuration
(``runtime.config``, the ``teacher`` section) can hold them without importing a deep-learning
stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

POOLINGS = ("auto", "cls", "mean", "last")
GPU_DTYPE_NAMES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class TeacherSettings:
    backbone_path: str
    num_levels: int = 4
    pooling: str = "auto"
    head_hidden: int = 256
    dropout: float = 0.1
    lora_r: int = 0  # 0: full fine-tune
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=list)  # empty: per architecture
    quantize_4bit: bool = False  # needs CUDA + bitsandbytes
    gradient_checkpointing: bool = False
    gpu_dtype: str = "bfloat16"

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
    max_length: int = 128
    query_tokens: int = 24  # budget for the query; the pin text gets the rest
    batch_size: int = 32
    eval_batch_size: int = 128
    epochs: int = 3
    lr: float = 5e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    patience: int = 1  # epochs without a better validation kappa before stopping
    # False: train exactly ``epochs`` and keep the last weights, validating once at the end (for
    # cross-validation, where choosing the epoch on the test fold would flatter the result)
    select_best: bool = True
    seed: int = 0
    sort_window: int = 50  # batches per length-sorted window
    progress: bool = True

    def __post_init__(self) -> None:
        if self.query_tokens >= self.max_length - 3:
            raise ValueError(f"query_tokens ({self.query_tokens}) must leave room in max_length ({self.max_length})")
        for name in ("batch_size", "eval_batch_size", "epochs", "patience", "sort_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

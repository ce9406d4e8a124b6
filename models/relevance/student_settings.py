"""Settings of the students and of their text encoder: plain values, no torch (config reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("mlp", "mmoe")
EXPERT_KINDS = ("mlp", "dcn")
DISTILLATION = ("none", "pointwise", "pairwise", "both")


@dataclass(frozen=True)
class EncoderSettings:
    model_path: str  # local folder: config.json, safetensors weights, tokenizer
    max_length: int = 64  # tokens per text
    batch_size: int = 64  # texts per forward pass

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ValueError("EncoderSettings.model_path must not be empty")
        if self.max_length < 2 or self.batch_size < 1:
            raise ValueError(f"max_length must be >= 2 and batch_size >= 1, got {self.max_length}, {self.batch_size}")


@dataclass(frozen=True)
class StudentSettings:
    kind: str = "mlp"  # mlp | mmoe
    num_levels: int = 4
    hidden: list[int] = field(default_factory=lambda: [256, 128])  # MLP student, and each MLP expert
    dropout: float = 0.1
    experts: list[str] = field(default_factory=lambda: ["mlp", "mlp", "dcn"])  # MMoE only
    expert_dim: int = 128  # every expert's output width
    cross_layers: int = 2  # DCNv2 experts
    cross_rank: int = 64  # 0 = full-rank cross weights
    gate_hidden: int = 0  # 0 = a single linear layer + softmax per task
    tower_hidden: int = 64

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"student kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.num_levels < 2:
            raise ValueError(f"num_levels must be >= 2, got {self.num_levels}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {self.hidden}")
        if self.kind == "mmoe" and (not self.experts or set(self.experts) - set(EXPERT_KINDS)):
            raise ValueError(f"experts must be a non-empty list of {list(EXPERT_KINDS)}, got {self.experts}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class StudentTrainSettings:
    batch_size: int = 512
    eval_batch_size: int = 4096
    epochs: int = 30
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-4
    patience: int = 3  # epochs without a better validation kappa before stopping
    seed: int = 0
    distillation: str = "pointwise"  # none | pointwise | pairwise | both
    incremental: bool = False  # True: no distillation term, whatever ``distillation`` says
    soft_weight: float = 1.0
    hard_weight: float = 1.0
    pairwise_weight: float = 1.0
    pairwise_margin: float = 0.25
    human_weight: float = 1.0
    engagement_weight: float = 0.1

    def __post_init__(self) -> None:
        if self.distillation not in DISTILLATION:
            raise ValueError(f"distillation must be one of {list(DISTILLATION)}, got {self.distillation!r}")
        if min(self.batch_size, self.eval_batch_size, self.epochs, self.patience) < 1:
            raise ValueError("batch_size, eval_batch_size, epochs and patience must be >= 1")
        weights = (self.soft_weight, self.hard_weight, self.pairwise_weight, self.human_weight, self.engagement_weight)
        if min(weights) < 0:
            raise ValueError(f"loss weights must be >= 0, got {weights}")

    @property
    def pointwise(self) -> bool:
        return not self.incremental and self.distillation in ("pointwise", "both")

    @property
    def pairwise(self) -> bool:
        return not self.incremental and self.distillation in ("pairwise", "both")

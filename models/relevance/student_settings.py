"""Settings of the students and of their text encoder: plain values, no torch (config reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("mlp", "mmoe")
EXPERT_KINDS = ("mlp", "dcn")
DISTILLATION = ("none", "pointwise", "pairwise", "both")


@dataclass(frozen=True)
class EncoderSettings:
    model_path: str = field(metadata={"help": "local folder: config.json, safetensors weights, tokenizer"})
    max_length: int = field(default=64, metadata={"help": "tokens per text"})
    batch_size: int = field(default=64, metadata={"help": "texts per forward pass"})

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ValueError("EncoderSettings.model_path must not be empty")
        if self.max_length < 2 or self.batch_size < 1:
            raise ValueError(f"max_length must be >= 2 and batch_size >= 1, got {self.max_length}, {self.batch_size}")


@dataclass(frozen=True)
class StudentSettings:
    kind: str = field(default="mlp", metadata={"help": "mlp | mmoe"})
    num_levels: int = field(default=4, metadata={"help": "Relevance levels the student predicts (the teacher's)."})
    hidden: list[int] = field(default_factory=lambda: [256, 128], metadata={"help": "MLP student, and each MLP expert"})
    dropout: float = field(default=0.1, metadata={"help": "Dropout between hidden layers."})
    experts: list[str] = field(default_factory=lambda: ["mlp", "mlp", "dcn"], metadata={"help": "MMoE only"})
    expert_dim: int = field(default=128, metadata={"help": "every expert's output width"})
    cross_layers: int = field(default=2, metadata={"help": "DCNv2 experts"})
    cross_rank: int = field(default=64, metadata={"help": "0 = full-rank cross weights"})
    gate_hidden: int = field(default=0, metadata={"help": "0 = a single linear layer + softmax per task"})
    tower_hidden: int = field(default=64, metadata={"help": "Width of each task tower's hidden layer (MMoE)."})

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
    batch_size: int = field(default=512, metadata={"help": "Training rows per step."})
    eval_batch_size: int = field(default=4096, metadata={"help": "Rows per forward pass when evaluating."})
    epochs: int = field(
        default=30, metadata={"help": "Most passes over the training rows (early stopping may end sooner)."}
    )
    lr: float = field(default=1.0e-3, metadata={"help": "Adam learning rate."})
    weight_decay: float = field(default=1.0e-4, metadata={"help": "AdamW weight decay."})
    patience: int = field(default=3, metadata={"help": "epochs without a better validation kappa before stopping"})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, shuffling and dropout."})
    distillation: str = field(default="pointwise", metadata={"help": "none | pointwise | pairwise | both"})
    incremental: bool = field(
        default=False, metadata={"help": "True: no distillation term, whatever ``distillation`` says"}
    )
    soft_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the pointwise distillation loss (cross-entropy with the teacher's probabilities)."
        },
    )
    hard_weight: float = field(
        default=1.0, metadata={"help": "Weight of the cross-entropy with the teacher's most likely level."}
    )
    pairwise_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the pairwise distillation loss (the teacher's order of two pins for a query)."},
    )
    pairwise_margin: float = field(default=0.25, metadata={"help": "Margin of the pairwise loss."})
    human_weight: float = field(
        default=1.0, metadata={"help": "Weight of the human labels' loss, where a row has one."}
    )
    engagement_weight: float = field(default=0.1, metadata={"help": "Weight of the engagement task's loss (MMoE)."})

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

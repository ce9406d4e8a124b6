"""Settings of the two-tower retrieval model and its training: plain values, no torch."""

from __future__ import annotations

from dataclasses import dataclass

ENCODERS = ("transformer", "mean")


@dataclass(frozen=True)
class TwoTowerSettings:
    dim: int = 64  # width of ID embeddings and of both towers' outputs
    max_len: int = 50  # most recent engaged items the user tower reads
    encoder: str = "transformer"  # transformer (causal self-attention) | mean (pooling)
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2  # inside the user tower's encoder
    history_dropout: float = 0.5  # on the embeddings of the items a user tower reads
    id_dropout: float = 0.0  # on candidate items' ID embeddings; the homefeed recipe (0.5) leans on content features
    temperature: float = 0.05  # initial softmax temperature of the cosine scores
    learn_temperature: bool = True
    share_item_embeddings: bool = True  # the user tower reads history through the item tower's ID table
    # Two-towers trained apart (seeds seed, seed+1, ...; each its own early stopping) and served as
    # one whose vectors are theirs side by side: a score is the members' mean cosine.
    members: int = 1
    # Vectors per user (the user head): 1, or several projections of the user's state; an item's
    # score is the best of them.
    user_vectors: int = 1

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {list(ENCODERS)}, got {self.encoder!r}")
        if min(self.dim, self.max_len, self.layers, self.heads) < 1 or self.dim % self.heads:
            raise ValueError(f"dim, max_len, layers, heads must be >= 1 and dim divisible by heads: {self}")
        if not all(0.0 <= p < 1.0 for p in (self.dropout, self.history_dropout, self.id_dropout)):
            raise ValueError(
                f"dropouts must be in [0, 1), got {self.dropout}, {self.history_dropout}, {self.id_dropout}"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.user_vectors < 1:
            raise ValueError(f"user_vectors must be >= 1, got {self.user_vectors}")
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")

    @property
    def width(self) -> int:
        """Width of the served user and item vectors: ``dim`` per member."""
        return self.dim * self.members


@dataclass(frozen=True)
class TwoTowerTrainSettings:
    batch_size: int = 128  # users per step; every position of their sequences is a training example
    epochs: int = 200
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    patience: int = 10  # evaluations without a better validation NDCG@10 before stopping
    eval_every: int = 2  # epochs between validation evaluations
    logq_correction: bool = True
    extra_negatives: int = 0  # uniformly sampled negatives per step, beside the in-batch ones
    # Candidates the example's own user engaged with (anywhere in the sequence) are not negatives:
    # a long history otherwise makes its other items the negatives of each of its positions.
    exclude_user_items: bool = False
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if min(self.batch_size, self.epochs, self.patience, self.eval_every) < 1:
            raise ValueError("batch_size, epochs, patience and eval_every must be >= 1")
        if self.extra_negatives < 0:
            raise ValueError(f"extra_negatives must be >= 0, got {self.extra_negatives}")

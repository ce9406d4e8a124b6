"""Settings of the two-tower retrieval model and its training: plain values, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

ENCODERS = ("transformer", "mean", "none")
CROSSINGS = ("none", "masknet", "dhen", "transformer")  # models.retrieval.crossing
USER_HEADS = ("projections", "capsules")
LOSSES = ("auto", "full", "sampled")
RANKING_KS = (5, 10, 20)  # the cut-offs of HR@k, NDCG@k and coverage@k
# The figures a two-tower's promotion gate may compare.
TWO_TOWER_GATE_METRICS = tuple(f"{m}@{k}" for m in ("ndcg", "hr") for k in RANKING_KS)


@dataclass(frozen=True)
class TwoTowerSettings:
    dim: int = field(default=64, metadata={"help": "width of ID embeddings and of both towers' outputs"})
    max_len: int = field(default=50, metadata={"help": "most recent engaged items the user tower reads"})
    encoder: str = field(
        default="transformer",
        metadata={
            "help": "transformer (causal self-attention) | mean (pooling) | none (the items themselves: for capsules)"
        },
    )
    layers: int = field(default=2, metadata={"help": "Transformer layers of the history encoder."})
    heads: int = field(default=2, metadata={"help": "Attention heads per layer (dim must divide by it)."})
    dropout: float = field(default=0.2, metadata={"help": "inside the user tower's encoder"})
    history_dropout: float = field(default=0.5, metadata={"help": "on the embeddings of the items a user tower reads"})
    id_dropout: float = field(
        default=0.0,
        metadata={"help": "on candidate items' ID embeddings; the homefeed recipe (0.5) leans on content features"},
    )
    temperature: float = field(default=0.05, metadata={"help": "initial softmax temperature of the cosine scores"})
    learn_temperature: bool = field(
        default=True, metadata={"help": "Learn the softmax temperature (from temperature) instead of keeping it fixed."}
    )
    share_item_embeddings: bool = field(
        default=True, metadata={"help": "the user tower reads history through the item tower's ID table"}
    )
    members: int = field(
        default=1,
        metadata={
            "help": (
                "Two-towers trained apart (seeds seed, seed+1, ...; each its own early stopping) and "
                "served as one whose vectors are theirs side by side: a score is the members' mean "
                "cosine."
            )
        },
    )
    user_vectors: int = field(
        default=1,
        metadata={
            "help": (
                "Vectors per user (the user head): 1, or several projections of the user's state; an "
                "item's score is the best of them."
            )
        },
    )

    user_head: str = field(
        default="projections",
        metadata={
            "help": (
                "projections (user_vectors linear maps of the user's state) | capsules (the history "
                "clustered into up to user_vectors interests: maxmin initialisation, single-assignment "
                "routing; training scores a positive against its nearest interest)"
            )
        },
    )
    routing_iterations: int = field(default=3, metadata={"help": "Routing iterations of the capsule head."})
    conditional: bool = field(
        default=False,
        metadata={
            "help": (
                "Conditional retrieval: the user tower also takes an interest id (an item's broadest "
                "attribute: its catalogue's most frequent one), fused with the user's state before the head; "
                "serving filters the index to that interest's items."
            )
        },
    )
    condition_dropout: float = field(
        default=0.25,
        metadata={"help": "Share of training positions conditioned on no interest (so unconditional serving works)."},
    )

    item_crossing: str = field(
        default="none",
        metadata={
            "help": (
                "Feature crossing over the item tower's fields (ID, attributes): none | masknet | dhen "
                "(MaskNet + DCNv2 + self-attention in parallel) | transformer (over the fields)"
            )
        },
    )
    user_crossing: str = field(
        default="none",
        metadata={
            "help": (
                "Feature crossing over the user tower's fields at each position (encoder state, the "
                "item, the history's mean): none | masknet | dhen | transformer"
            )
        },
    )
    crossing_layers: int = field(default=1, metadata={"help": "Stacked crossing layers (both towers)."})
    mask_blocks: int = field(default=2, metadata={"help": "Parallel MaskBlocks of a MaskNet (also inside DHEN)."})

    def __post_init__(self) -> None:
        for name in ("item_crossing", "user_crossing"):
            if getattr(self, name) not in CROSSINGS:
                raise ValueError(f"{name} must be one of {list(CROSSINGS)}, got {getattr(self, name)!r}")
        if min(self.crossing_layers, self.mask_blocks) < 1:
            raise ValueError(f"crossing_layers and mask_blocks must be >= 1: {self}")
        if self.user_head not in USER_HEADS:
            raise ValueError(f"user_head must be one of {list(USER_HEADS)}, got {self.user_head!r}")
        if self.routing_iterations < 1:
            raise ValueError(f"routing_iterations must be >= 1, got {self.routing_iterations}")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
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
        if self.members > 1 and (self.user_head == "capsules" or self.conditional):
            raise ValueError("an ensemble (members > 1) of capsule or conditional towers is not supported")

    @property
    def width(self) -> int:
        """Width of the served user and item vectors: ``dim`` per member."""
        return self.dim * self.members


@dataclass(frozen=True)
class TwoTowerTrainSettings:
    batch_size: int = field(
        default=128, metadata={"help": "users per step; every position of their sequences is a training example"}
    )
    epochs: int = field(
        default=200, metadata={"help": "Most passes over the training rows (early stopping may end sooner)."}
    )
    lr: float = field(default=1.0e-3, metadata={"help": "Adam learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    patience: int = field(
        default=10, metadata={"help": "evaluations without a better validation NDCG@10 before stopping"}
    )
    eval_every: int = field(default=2, metadata={"help": "epochs between validation evaluations"})
    loss: str = field(
        default="auto",
        metadata={
            "help": (
                "full (softmax over the whole catalogue) | sampled (in-batch negatives, extra_negatives "
                "uniform ones, logQ) | auto: full when one step's logits fit full_softmax_mb, else sampled"
            )
        },
    )
    full_softmax_mb: int = field(
        default=1024,
        metadata={
            "help": (
                "auto's budget: full softmax when batch_size x max_len examples x catalogue items x 12 "
                "bytes (float32 logits, their softmax and gradient) fit in it"
            )
        },
    )
    logq_correction: bool = field(
        default=True,
        metadata={"help": "Subtract each candidate's log sampling probability from its logit (in-batch negatives)."},
    )
    extra_negatives: int = field(
        default=1024,
        metadata={"help": "sampled loss: uniformly sampled negatives per step, beside the in-batch ones"},
    )
    exclude_user_items: bool = field(
        default=False,
        metadata={
            "help": (
                "Candidates the example's own user engaged with (anywhere in the sequence) are not "
                "negatives: a long history otherwise makes its other items the negatives of each of its "
                "positions."
            )
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, shuffling and dropout."})
    progress: bool = field(default=True, metadata={"help": "Log a progress line per epoch."})

    def __post_init__(self) -> None:
        if min(self.batch_size, self.epochs, self.patience, self.eval_every) < 1:
            raise ValueError("batch_size, epochs, patience and eval_every must be >= 1")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if self.full_softmax_mb < 0:
            raise ValueError(f"full_softmax_mb must be >= 0, got {self.full_softmax_mb}")
        if self.extra_negatives < 0:
            raise ValueError(f"extra_negatives must be >= 0, got {self.extra_negatives}")


@dataclass(frozen=True)
class PretrainSettings:
    """Contrastive pre-training of user and item ID embeddings (``pinpipe pretrain_ids``)."""

    dim: int = field(default=0, metadata={"help": "width of the ID vectors; 0 = two_tower.model.dim"})
    holdout_events: int = field(
        default=2,
        metadata={
            "help": (
                "each user's last events left out of the window: the two-tower's validation and test "
                "events (leave-one-out: 2)"
            )
        },
    )
    window: int = field(default=3, metadata={"help": "co-engaged items at most this many positions apart pair up"})
    epochs: int = field(default=10, metadata={"help": "passes over the pairs"})
    batch_size: int = field(default=1024, metadata={"help": "pairs per step and task (in-batch negatives)"})
    lr: float = field(default=1.0e-3, metadata={"help": "Adam learning rate"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and shuffling"})
    progress: bool = field(default=True, metadata={"help": "Log a line per epoch."})

    def __post_init__(self) -> None:
        if min(self.window, self.epochs, self.batch_size) < 1 or min(self.dim, self.holdout_events) < 0:
            raise ValueError(f"window, epochs, batch_size must be >= 1, dim and holdout_events >= 0: {self}")


PRETRAINED_MODES = ("finetune", "frozen")


@dataclass(frozen=True)
class PretrainedIdsUse:
    """Whether and how a two-tower starts from pre-trained item ID embeddings."""

    version: str = field(
        default="",
        metadata={
            "help": ("'' = none (random initialisation) | production (the promoted pretrain_ids version) | vNNNN")
        },
    )
    mode: str = field(
        default="finetune",
        metadata={"help": "finetune (trained further, with ID dropout) | frozen (kept as pre-trained)"},
    )
    dropout: float = field(
        default=0.5,
        metadata={"help": "ID dropout on candidate items when fine-tuning (fine-tuned IDs overfit without it)"},
    )

    def __post_init__(self) -> None:
        if self.mode not in PRETRAINED_MODES:
            raise ValueError(f"mode must be one of {list(PRETRAINED_MODES)}, got {self.mode!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.version not in ("", "auto", "production") and not (
            self.version[:1] == "v" and self.version[1:].isdigit()
        ):
            raise ValueError(f"version must be '', auto, production or vNNNN, got {self.version!r}")

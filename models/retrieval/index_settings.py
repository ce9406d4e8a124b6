"""Settings of the sharded FAISS index family (``embed_pins``, ``build_index``, ``retrieve`` and
``pinpipe index`` read them, as the ``index`` section): plain values, no faiss or torch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class IndexSettings:
    name: str = field(metadata={"help": "Index name: versions live under <lake>/artifacts/indexes/<name>/."})
    model_family: str = field(
        metadata={"help": "Registry family of the two-tower model whose item tower is embedded and indexed."}
    )
    model_version: str = field(
        metadata={
            "help": "Model version to embed and index (e.g. v0003); empty = the candidate that passed its gate "
            "(promoted together with its index), else the promoted one."
        }
    )
    embed_batch_size: int = field(metadata={"help": "Items per item-tower forward pass in embed_pins."})
    partitions: int = field(
        metadata={
            "help": "Shards, each an equal range of item ids, and Spark tasks for embedding; 0 = Spark's "
            "default parallelism (then the shards follow the cluster's size)."
        }
    )
    flat_below: int = field(
        metadata={"help": "Below this many vectors the shards are exact (Flat) and factory is not used."}
    )
    factory: str = field(
        metadata={
            "help": "FAISS index factory string at or above flat_below, e.g. IVF{nlist},Flat, IVF{nlist},PQ16 or "
            "HNSW32; {nlist} becomes a power of two near 4*sqrt(vectors)."
        }
    )
    search_params: str = field(
        metadata={"help": "Search parameters of that index in FAISS's syntax (nprobe=32, efSearch=128)."}
    )
    train_sample: int = field(
        metadata={"help": "Vectors (seeded sample) the coarse quantizer trains on, on the driver."}
    )
    recall_queries: int = field(
        metadata={"help": "Seeded sample of indexed vectors used as queries for the recall@10 check."}
    )
    min_recall_at_10: float = field(
        metadata={"help": "A version is published only if the sharded index's recall@10 vs exact search reaches this."}
    )
    seed: int = field(metadata={"help": "Seed of the training and query samples."})
    keep: int = field(metadata={"help": "Index versions kept; the promoted one is never pruned."})
    promote: bool = field(metadata={"help": "Promote the new index, and the model it was built from, once published."})
    interests_per_user: int = field(
        default=0,
        metadata={
            "help": "Interest vectors searched per user of a multi-interest model, heaviest first (0 = all of them)."
        },
    )
    exact_filter_below: int = field(
        default=20_000,
        metadata={
            "help": "An interest filter allowing at most this many pins is searched exactly over them; larger ones "
            "through faiss's selectors (with an exact retry of any query they leave short)."
        },
    )

    def __post_init__(self) -> None:
        for name in ("name", "model_family"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name} must not be empty")
        for name in ("embed_batch_size", "train_sample", "recall_queries", "keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("partitions", "flat_below", "interests_per_user", "exact_filter_below"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_recall_at_10 <= 1.0:
            raise ValueError(f"min_recall_at_10 must be in [0, 1], got {self.min_recall_at_10}")

"""A published two-tower model's item tower as a Spark ``mapInArrow`` function.

Input rows carry an ``item_index`` (1..n of that model); each Python worker loads the model and
its items' pin ids once (on the task's GPU, or on CPU with the task's cores) and returns, per
row, the pin id and the item's unit vector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import torch
from pyspark.sql.types import ArrayType, FloatType, LongType, StringType, StructField, StructType

from models.artifacts.registry import ArtifactRef
from models.retrieval.two_tower import RetrievalModel, load_artifact
from schemas import pin_embeddings as PE
from udfs.arrow_lists import float32_lists
from udfs.task_resources import model_folder, worker_model

EMBEDDED_SCHEMA = StructType(
    [
        StructField(PE.PIN_ID, StringType(), nullable=False),
        StructField(PE.ITEM_INDEX, LongType(), nullable=False),
        StructField(PE.EMBEDDING, ArrayType(FloatType(), containsNull=False), nullable=False),
    ]
)


def embed_partitions(
    artifact: str | ArtifactRef, batch_size: int = 8192
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A ``mapInArrow`` function from rows with ``item_index`` to :data:`EMBEDDED_SCHEMA`, with the
    two-tower ``artifact`` (a published version, fetched by each node, or a local folder)."""

    def embed(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model, pins = worker_model(
            ("two_tower", artifact), lambda device: load_artifact(model_folder(artifact), device)
        )
        for batch in batches:
            items = batch.column(PE.ITEM_INDEX).to_numpy(zero_copy_only=False).astype(np.int64)
            if len(items) and (items.min() < 1 or items.max() > len(pins)):
                raise ValueError(f"item_index outside 1..{len(pins)} for the model at {artifact}")
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array([pins[i - 1] for i in items], pa.string()),
                    pa.array(items, pa.int64()),
                    float32_lists(item_vectors(model, items, batch_size)),
                ],
                names=[PE.PIN_ID, PE.ITEM_INDEX, PE.EMBEDDING],
            )

    return embed


@torch.no_grad()
def item_vectors(model: RetrievalModel, items: np.ndarray, batch_size: int) -> np.ndarray:
    device = model.device
    ids = torch.from_numpy(items)
    parts = [model.item_tower(ids[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(ids), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, model.settings.width), np.float32)

"""The bi-encoder as a Spark ``mapInPandas`` function: ``text_hash, text`` -> ``text_hash, embedding``.

Each Python worker loads the encoder once (on the task's GPU, or on CPU with the task's cores)
and keeps it for as long as it lives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd

from models.relevance.student_settings import EncoderSettings
from models.relevance.text_encoder import TextEncoder
from udfs.task_resources import worker_model


def encoder_for(settings: EncoderSettings) -> TextEncoder:
    return worker_model(("text_encoder", settings), lambda device: TextEncoder(settings, device))


def embed_partitions(
    settings: EncoderSettings, key_col: str, text_col: str, out_col: str
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function from rows ``<key_col>, <text_col>`` to ``<key_col>, <out_col>``."""

    def embed(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        encoder = encoder_for(settings)
        for batch in batches:
            vectors = encoder.encode(batch[text_col].tolist())
            yield pd.DataFrame({key_col: batch[key_col].to_numpy(), out_col: list(vectors)})

    return embed

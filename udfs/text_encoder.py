"""The bi-encoder as a Spark ``mapInPandas`` function: ``text_hash, text`` -> ``text_hash, embedding``.

Each Python worker loads the encoder once (on the task's GPU, or on CPU with the task's cores)
and keeps it for as long as it lives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pandas as pd
import torch

from models.student_settings import EncoderSettings
from models.text_encoder import TextEncoder
from udfs.task_resources import task_device, task_threads

_encoders: dict[tuple[EncoderSettings, str], TextEncoder] = {}
_lock = threading.Lock()


def encoder_for(settings: EncoderSettings) -> TextEncoder:
    device = task_device()
    if device.type == "cpu":
        torch.set_num_threads(task_threads())
    key = (settings, str(device))
    with _lock:
        if key not in _encoders:
            _encoders[key] = TextEncoder(settings, device)
        return _encoders[key]


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

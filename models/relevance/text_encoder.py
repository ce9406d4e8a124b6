"""The bi-encoder that embeds queries and pin texts for the students.

A BERT-family encoder loaded with ``AutoModel.from_pretrained`` from a local folder (the
packaged MiniLM by default), mean pooling over the non-pad tokens, L2-normalised: the cosine of
two embeddings is their dot product. ``encoder_version`` names the exact encoder — a hash of its
config, weights and the token budget — so cached embeddings are reused only when they would be
the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.artifacts.fingerprint import folder_fingerprint
from models.relevance.student_settings import EncoderSettings

WEIGHT_SUFFIXES = (".safetensors",)


def encoder_version(settings: EncoderSettings) -> str:
    """``enc-<12 hex>`` of the encoder's config, weights, tokenizer vocabulary and token budget."""
    folder = Path(settings.model_path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"text encoder {str(folder)!r} has no config.json")
    digest = folder_fingerprint(
        folder,
        f"max_length={settings.max_length};pooling=mean;l2",
        lambda p: p.name in ("config.json", "tokenizer.json", "vocab.txt") or p.suffix in WEIGHT_SUFFIXES,
    )
    return f"enc-{digest[:12]}"


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states where ``mask`` is 1 (every text has at least one token)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states where ``mask`` is 1, L2-normalised."""
    return nn.functional.normalize(masked_mean(hidden, mask).float(), dim=-1)


class TextEncoder:
    """Texts -> L2-normalised float32 embeddings, in length-sorted batches."""

    def __init__(self, settings: EncoderSettings, device: torch.device | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.settings = settings
        self.device = device or torch.device("cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(settings.model_path, local_files_only=True)
        self.model = AutoModel.from_pretrained(settings.model_path, local_files_only=True, trust_remote_code=False)
        self.model.to(self.device).eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad little
        for start in range(0, len(texts), self.settings.batch_size):
            idx = order[start : start + self.settings.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.settings.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            out[idx] = mean_pool(hidden, batch["attention_mask"]).cpu().numpy()
        return out

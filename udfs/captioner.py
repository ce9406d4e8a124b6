"""BLIP image captioning in a pandas UDF.

The model (``BlipForConditionalGeneration`` + its processor) loads from a local folder once
per Python worker and captions images in batches: on the GPU that Spark assigned to the task
(``TaskContext.resources()['gpu']``) in bf16/fp16, else on CPU in fp32 with as many torch
threads as the task has cores. An image that is missing, empty, truncated, undecodable or too
large gives a null caption and a reason; it never fails the task.

``caption_paths`` is the pure core (pandas in, pandas out), used by the UDF and by the plain
loop in ``bench/captions.py`` alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch
from pyspark.sql import Column
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import StringType, StructField, StructType

from models.artifacts.fingerprint import folder_fingerprint
from udfs.captioner_settings import CaptionerSettings
from udfs.images import try_open_image
from udfs.task_resources import task_device, task_threads, worker_model

log = logging.getLogger(__name__)

CAPTION = "caption"
ERROR = "error"
RESULT_TYPE = StructType([StructField(CAPTION, StringType()), StructField(ERROR, StringType())])
WEIGHT_SUFFIXES = (".safetensors",)


def captioner_version(cfg: CaptionerSettings) -> str:
    """``blip-<12 hex>`` from the model's config, weights and the generation settings: the same
    files and settings give the same version, so captions are reused only when they would be
    the same."""
    folder = Path(cfg.model_path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"captioner.model_path {str(folder)!r} has no config.json")
    salt = f"max_new_tokens={cfg.max_new_tokens};num_beams={cfg.num_beams}"
    digest = folder_fingerprint(folder, salt, lambda p: p.name == "config.json" or p.suffix in WEIGHT_SUFFIXES)
    return f"blip-{digest[:12]}"


class Captioner:
    """A loaded BLIP model and processor on one device."""

    def __init__(self, cfg: CaptionerSettings, device: torch.device | None = None) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.cfg = cfg
        self.device = device or task_device()
        self.dtype = getattr(torch, cfg.gpu_dtype) if self.device.type == "cuda" else torch.float32
        self.processor = BlipProcessor.from_pretrained(cfg.model_path, local_files_only=True)
        self.model = (
            BlipForConditionalGeneration.from_pretrained(
                cfg.model_path,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                dtype=self.dtype,
            )
            .to(self.device)
            .eval()
        )

    @torch.inference_mode()
    def caption(self, images: list) -> list[str]:
        inputs = self.processor(images=images, return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        out = self.model.generate(
            pixel_values=pixels,
            max_new_tokens=self.cfg.max_new_tokens,
            num_beams=self.cfg.num_beams,
        )
        return [t.strip() for t in self.processor.batch_decode(out, skip_special_tokens=True)]


def loaded_captioner(cfg: CaptionerSettings) -> Captioner:
    """The captioner for ``cfg`` on this task's device, loaded once per Python worker."""
    torch.set_num_threads(task_threads())  # also on a GPU: image decoding runs on the CPU

    def load(device: torch.device) -> Captioner:
        log.info("loading captioner from %s on %s", cfg.model_path, device)
        return Captioner(cfg, device)

    return worker_model(("captioner", cfg), load)


def caption_paths(captioner: Captioner, paths: pd.Series) -> pd.DataFrame:
    """Caption the images at ``paths``: ``caption``/``error`` columns, same index."""
    captions: list[str | None] = [None] * len(paths)
    errors: list[str | None] = [None] * len(paths)
    pending: list[tuple[int, object]] = []

    def flush() -> None:
        texts = captioner.caption([img for _, img in pending])
        for (i, _), text in zip(pending, texts, strict=False):
            captions[i] = text
        pending.clear()

    for i, path in enumerate(paths):
        image, error = try_open_image(path, mode="RGB")
        if image is None:
            errors[i] = error
            continue
        pending.append((i, image))
        if len(pending) >= captioner.cfg.batch_size:
            flush()
    if pending:
        flush()
    return pd.DataFrame({CAPTION: captions, ERROR: errors}, index=paths.index)


def caption_col(path: Column, cfg: CaptionerSettings) -> Column:
    """A struct column ``{caption, error}`` for the image at ``path``."""

    @pandas_udf(RESULT_TYPE)
    def caption_udf(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        captioner = loaded_captioner(cfg)
        for paths in batches:
            yield caption_paths(captioner, paths)

    return caption_udf(path)

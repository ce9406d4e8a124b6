"""What the BLIP captioner needs to know: which model and how to generate. A plain dataclass
without torch, so the job configuration can hold it (the ``captioner`` section) and so the
worker's model cache is keyed by exactly these values and nothing a job tunes around it."""

from __future__ import annotations

from dataclasses import dataclass

from models.relevance.teacher_settings import GPU_DTYPE_NAMES


@dataclass(frozen=True)
class CaptionerSettings:
    model_path: str = ""  # local folder of a BLIP captioning model; empty: no captions
    max_new_tokens: int = 24
    num_beams: int = 1
    batch_size: int = 16  # images per model call
    gpu_dtype: str = "bfloat16"  # weights dtype on GPU (CPU is float32)

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "num_beams", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gpu_dtype not in GPU_DTYPE_NAMES:
            raise ValueError(f"gpu_dtype must be one of {list(GPU_DTYPE_NAMES)}, got {self.gpu_dtype!r}")

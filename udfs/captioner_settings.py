"""What the BLIP captioner needs to know: which model and how to generate. A plain dataclass
without torch, so the job configuration can hold it (the ``captioner`` section) and so the
worker's model cache is keyed by exactly these values and nothing a job tunes around it."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.relevance.teacher_settings import GPU_DTYPE_NAMES


@dataclass(frozen=True)
class CaptionerSettings:
    model_path: str = field(
        default="", metadata={"help": "local folder of a BLIP captioning model; empty: no captions", "path": True}
    )
    max_new_tokens: int = field(default=24, metadata={"help": "Longest caption, in tokens."})
    num_beams: int = field(default=1, metadata={"help": "Beam search width (1 = greedy)."})
    batch_size: int = field(default=16, metadata={"help": "images per model call"})
    gpu_dtype: str = field(default="bfloat16", metadata={"help": "weights dtype on GPU (CPU is float32)"})

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "num_beams", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gpu_dtype not in GPU_DTYPE_NAMES:
            raise ValueError(f"gpu_dtype must be one of {list(GPU_DTYPE_NAMES)}, got {self.gpu_dtype!r}")

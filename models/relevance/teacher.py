"""The cross-encoder relevance teacher: backbone + pooling + MLP head over label levels.

One module serves a small encoder on CPU (MiniLM, BERT, XLM-RoBERTa) and a decoder LLM on GPU
(Llama-class) alike:

* the backbone is ``AutoModel.from_pretrained(path)`` from a local folder, never remote code;
* pooling is mean over tokens or [CLS] for encoders, the last non-pad token for decoders;
* LoRA adapters via peft on architecture-specific projections (optional);
* a 4-bit NF4 base (bitsandbytes) when CUDA is present and asked for, gradient
  checkpointing, mixed precision on GPU (bf16/fp16 compute; fp32 master weights when the
  whole backbone trains).

An artifact folder holds ``teacher.json`` (the settings), ``head.safetensors``, the tokenizer,
and either the full fine-tuned backbone (``backbone/``) or the LoRA adapter
(``adapter/``) plus the path of its base. ``CrossEncoderTeacher.load`` reads it back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models.relevance.teacher_settings import TeacherSettings
from models.relevance.text_encoder import masked_mean

# Files a published teacher carries besides the model (written by jobs/train_teacher.py).
ENCODING_FILE = "encoding.json"  # max_length and query_tokens it was trained with
DECODING_FILE = "decoding.json"  # share-matched level cuts of the expected relevance
SETTINGS_FILE = "teacher.json"  # the TeacherSettings it was built with

DECODER_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox"}
_BERT_LINEARS = ["query", "key", "value", "intermediate.dense", "output.dense"]  # not the unused pooler
LORA_TARGETS = {
    "bert": _BERT_LINEARS,
    "roberta": _BERT_LINEARS,
    "xlm-roberta": _BERT_LINEARS,
    "deberta-v2": ["query_proj", "key_proj", "value_proj"],
    "t5": ["q", "k", "v", "o"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def compute_dtype(settings: TeacherSettings, device: torch.device) -> torch.dtype:
    """The dtype the teacher computes in: ``gpu_dtype`` on a GPU, fp32 on CPU."""
    return getattr(torch, settings.gpu_dtype) if device.type == "cuda" else torch.float32


def autocast_dtype(settings: TeacherSettings, device: torch.device) -> torch.dtype | None:
    """The half dtype training computes in under autocast, or None where it computes in fp32 (on
    CPU, or on a GPU when ``gpu_dtype`` is float32)."""
    dtype = compute_dtype(settings, device)
    return None if dtype == torch.float32 else dtype


def weights_dtype(settings: TeacherSettings, device: torch.device, training: bool) -> torch.dtype:
    """The dtype the backbone's weights are stored in. A full fine-tune on a GPU keeps fp32 master
    weights and computes in ``gpu_dtype`` under autocast (mixed precision): stored in bf16, whose
    8-bit mantissa cannot represent most AdamW updates at fine-tuning learning rates, the weights
    would barely move. A frozen base (LoRA; peft keeps the adapters fp32) and inference use
    ``gpu_dtype`` directly, at half the memory."""
    if training and settings.lora_r == 0:
        return torch.float32
    return compute_dtype(settings, device)


def _load_backbone(
    path: str, settings: TeacherSettings, device: torch.device, training: bool, quantize_4bit: bool | None = None
) -> nn.Module:
    from transformers import AutoModel

    quantize_4bit = settings.quantize_4bit if quantize_4bit is None else quantize_4bit
    kwargs: dict = dict(local_files_only=True, trust_remote_code=False, dtype=weights_dtype(settings, device, training))
    if quantize_4bit:
        if device.type != "cuda":
            raise ValueError("quantize_4bit needs a CUDA device")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(settings, device),
        )
        kwargs["device_map"] = {"": device.index or 0}
    model = AutoModel.from_pretrained(path, **kwargs)
    if not quantize_4bit:
        model = model.to(device)
    return model


@contextlib.contextmanager
def _quiet_peft():
    """peft reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model;
    the FutureWarning is theirs, not the user's, so keep it out of every job's log."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def lora_targets(model_type: str, settings: TeacherSettings) -> list[str]:
    if settings.lora_targets:
        return list(settings.lora_targets)
    if model_type not in LORA_TARGETS:
        raise ValueError(
            f"no default LoRA target modules for model_type {model_type!r}; "
            f"set lora_targets (known types: {sorted(LORA_TARGETS)})"
        )
    return LORA_TARGETS[model_type]


class CrossEncoderTeacher(nn.Module):
    """``forward(input_ids, attention_mask) -> logits`` of shape (batch, num_levels)."""

    def __init__(self, settings: TeacherSettings, backbone: nn.Module) -> None:
        super().__init__()
        self.settings = settings
        config = backbone.config
        self.model_type = config.model_type
        self.is_decoder = self.model_type in DECODER_TYPES or bool(getattr(config, "is_decoder", False))
        self.pooling = settings.pooling if settings.pooling != "auto" else ("last" if self.is_decoder else "mean")
        self.backbone = backbone
        hidden = config.hidden_size
        self.head = nn.Sequential(
            nn.Dropout(settings.dropout),
            nn.Linear(hidden, settings.head_hidden),
            nn.GELU(),
            nn.Dropout(settings.dropout),
            nn.Linear(settings.head_hidden, settings.num_levels),
        )
        param = next(backbone.parameters())
        self.head.to(param.device, torch.float32)

    # ------------------------------------------------------------------ building and saving

    @classmethod
    def build(cls, settings: TeacherSettings, device: torch.device | None = None) -> CrossEncoderTeacher:
        device = device or torch.device("cpu")
        backbone = _load_backbone(settings.backbone_path, settings, device, training=True)
        for name, param in backbone.named_parameters():
            if name.startswith("pooler."):  # BERT's pooler: unused, we pool last_hidden_state
                param.requires_grad_(False)
        if settings.gradient_checkpointing:
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if settings.lora_r > 0:
            from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

            if settings.quantize_4bit:
                backbone = prepare_model_for_kbit_training(
                    backbone, use_gradient_checkpointing=settings.gradient_checkpointing
                )
            lora = LoraConfig(
                r=settings.lora_r,
                lora_alpha=settings.lora_alpha,
                lora_dropout=settings.lora_dropout,
                target_modules=lora_targets(backbone.config.model_type, settings),
                bias="none",
            )
            with _quiet_peft():
                backbone = get_peft_model(backbone, lora)
        return cls(settings, backbone)

    def save(self, out: str | Path, tokenizer=None) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if self.settings.lora_r > 0:
            self.backbone.save_pretrained(out / "adapter")  # adapter weights + adapter_config.json
            _sort_adapter_lists(out / "adapter" / "adapter_config.json")
        else:
            self.backbone.save_pretrained(out / "backbone")
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, out / "head.safetensors"
        )
        (out / SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(self.settings), indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(out / "tokenizer")
        return out

    @classmethod
    def load(
        cls,
        folder: str | Path,
        device: torch.device | None = None,
        gpu_dtype: str | None = None,
        quantize_4bit: bool = False,
    ) -> CrossEncoderTeacher:
        """The saved teacher, for inference: on a GPU in ``gpu_dtype`` (default: as trained), with
        ``quantize_4bit`` an NF4 base (CUDA only). LoRA adapters are merged into the base unless
        the base is 4-bit (merging into NF4 weights would re-quantize them)."""
        folder = Path(folder)
        device = device or torch.device("cpu")
        settings = saved_settings(folder)
        if gpu_dtype is not None:
            settings = dataclasses.replace(settings, gpu_dtype=gpu_dtype)
        if settings.lora_r > 0:
            from peft import PeftModel

            base = _load_backbone(settings.backbone_path, settings, device, training=False, quantize_4bit=quantize_4bit)
            with _quiet_peft():
                backbone = PeftModel.from_pretrained(base, folder / "adapter", is_trainable=False)
            if not quantize_4bit:
                # Folded into the base weights, the adapters cost nothing at inference and the
                # backbone is plain nn.Linear again (what int8 dynamic quantization expects).
                backbone = backbone.merge_and_unload()
        else:
            backbone = _load_backbone(
                str(folder / "backbone"), settings, device, training=False, quantize_4bit=quantize_4bit
            )
        model = cls(settings, backbone)
        model.head.load_state_dict(load_file(folder / "head.safetensors", device=str(device)))
        return model.eval()

    # ------------------------------------------------------------------ forward

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "mean":
            return masked_mean(hidden, mask)
        # last non-pad token, for right or left padding alike
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        pooled = self.pool(out.last_hidden_state, attention_mask)
        return self.head(pooled.float())

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def saved_settings(folder: str | Path) -> TeacherSettings:
    """The settings of the teacher saved in ``folder``."""
    return TeacherSettings(**json.loads((Path(folder) / SETTINGS_FILE).read_text()))


def _sort_adapter_lists(path: Path) -> None:
    """peft keeps ``target_modules`` as a set and writes it in the process's hash order; sorted,
    the same training writes the same file in every process (artifacts compare by checksum)."""
    config = json.loads(path.read_text())
    for key, value in config.items():
        if key.endswith("modules") and isinstance(value, list) and all(isinstance(v, str) for v in value):
            config[key] = sorted(value)
    path.write_text(json.dumps(config, indent=2, sort_keys=True))

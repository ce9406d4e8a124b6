import dataclasses

import pytest
import torch
from transformers import AutoTokenizer

from models.packaged import minilm_dir
from models.random_models import save_random_backbone
from models.relevance.teacher import CrossEncoderTeacher, TeacherSettings, autocast_dtype, weights_dtype

PAIRS = [("wine rack", "Oak wine rack for 6 bottles"), ("projector", "A small lamp"), ("sofa", "sofa")]


def encode(path, padding_side="right"):
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = padding_side
    return tok([q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, return_tensors="pt")


@pytest.fixture(scope="module", params=["bert", "xlm-roberta", "llama"])
def backbone(request, tmp_path_factory):
    return request.param, save_random_backbone(tmp_path_factory.mktemp(request.param) / "base", request.param)


@pytest.mark.parametrize("lora_r", [0, 4])
def test_builds_forwards_saves_and_loads_identically(backbone, lora_r, tmp_path):
    arch, path = backbone
    torch.manual_seed(0)
    settings = TeacherSettings(backbone_path=str(path), num_levels=4, lora_r=lora_r, head_hidden=16)
    model = CrossEncoderTeacher.build(settings).eval()
    assert model.pooling == ("last" if arch == "llama" else "mean")
    batch = encode(path)
    logits = model(batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.head.parameters())
    if lora_r:
        assert head < model.trainable_parameters() < 0.5 * total  # adapters + head only
    else:
        pooler = sum(p.numel() for n, p in model.backbone.named_parameters() if n.startswith("pooler."))
        assert model.trainable_parameters() == total - pooler
    saved = model.save(tmp_path / "teacher", AutoTokenizer.from_pretrained(path))
    assert (saved / ("adapter" if lora_r else "backbone")).is_dir() and (saved / "head.safetensors").is_file()
    loaded = CrossEncoderTeacher.load(saved)
    torch.testing.assert_close(loaded(batch["input_ids"], batch["attention_mask"]), logits, atol=1e-6, rtol=0)


def test_last_token_pooling_ignores_padding_side(tmp_path):
    path = save_random_backbone(tmp_path / "llama", "llama")
    model = CrossEncoderTeacher.build(TeacherSettings(backbone_path=str(path), head_hidden=8)).eval()
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert torch.equal(model.pool(hidden, right), hidden[[0, 1], [2, 1]])
    assert torch.equal(model.pool(hidden, left), hidden[[0, 1], [3, 3]])


def test_gradient_checkpointing_still_trains(tmp_path):
    path = save_random_backbone(tmp_path / "bert", "bert")
    model = CrossEncoderTeacher.build(
        TeacherSettings(backbone_path=str(path), gradient_checkpointing=True, head_hidden=8)
    )
    assert model.backbone.is_activation_checkpointing
    model.train()
    batch = encode(path)
    loss = torch.nn.functional.cross_entropy(
        model(batch["input_ids"], batch["attention_mask"]), torch.tensor([3, 0, 3])
    )
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_real_minilm_backbone_loads():
    model = CrossEncoderTeacher.build(TeacherSettings(backbone_path=str(minilm_dir()), lora_r=8)).eval()
    assert model.model_type == "bert" and model.backbone.config.hidden_size == 384
    logits = model(**{k: v for k, v in encode(minilm_dir()).items() if k != "token_type_ids"})
    assert logits.shape == (3, 4)


def test_invalid_settings_and_unknown_architecture(tmp_path):
    with pytest.raises(ValueError, match="qLoRA"):
        TeacherSettings(backbone_path="x", quantize_4bit=True)
    with pytest.raises(ValueError, match="pooling"):
        TeacherSettings(backbone_path="x", pooling="max")
    with pytest.raises(ValueError, match="gpu_dtype"):
        TeacherSettings(backbone_path="x", gpu_dtype="bf16")
    path = save_random_backbone(tmp_path / "bert", "bert")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        CrossEncoderTeacher.build(TeacherSettings(backbone_path=str(path), lora_r=4, quantize_4bit=True))


def test_weights_stay_fp32_where_they_train_and_half_where_they_do_not():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device name needs no GPU
    full, lora = TeacherSettings(backbone_path="x"), TeacherSettings(backbone_path="x", lora_r=8)
    assert weights_dtype(full, cuda, training=True) == torch.float32  # master weights; autocast computes bf16
    assert weights_dtype(lora, cuda, training=True) == torch.bfloat16  # frozen base; peft keeps adapters fp32
    assert weights_dtype(full, cuda, training=False) == torch.bfloat16
    assert weights_dtype(dataclasses.replace(full, gpu_dtype="float16"), cuda, training=False) == torch.float16
    assert weights_dtype(lora, cpu, training=True) == weights_dtype(full, cpu, training=False) == torch.float32


def test_training_computes_in_half_precision_only_on_a_gpu():
    settings = TeacherSettings(backbone_path="x")
    assert autocast_dtype(settings, torch.device("cpu")) is None
    assert autocast_dtype(settings, torch.device("cuda")) == torch.bfloat16
    assert autocast_dtype(dataclasses.replace(settings, gpu_dtype="float32"), torch.device("cuda")) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_qlora_4bit_on_cuda(tmp_path):
    pytest.importorskip("bitsandbytes")
    path = save_random_backbone(tmp_path / "llama", "llama", hidden_size=64, intermediate_size=128)
    settings = TeacherSettings(backbone_path=str(path), lora_r=8, quantize_4bit=True, gradient_checkpointing=True)
    model = CrossEncoderTeacher.build(settings, torch.device("cuda:0"))
    batch = {k: v.cuda() for k, v in encode(path).items()}
    model.train()
    loss = model(batch["input_ids"], batch["attention_mask"]).logsumexp(-1).mean()
    loss.backward()
    saved = model.save(tmp_path / "t")
    assert CrossEncoderTeacher.load(saved, torch.device("cuda:0"))(
        batch["input_ids"], batch["attention_mask"]
    ).shape == (3, 4)

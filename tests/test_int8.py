"""CPU int8 plans: which linear layers stay fp32, chosen on calibration pairs."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as qdynamic
from transformers import AutoTokenizer

from models.random_models import save_random_backbone
from models.relevance.int8 import INT8_FILE, Int8Plan, calibrate_int8, linear_layers, quantize_int8
from models.relevance.metrics import spearman
from models.relevance.scoring import ScoringSettings, TeacherScorer
from models.relevance.teacher import CrossEncoderTeacher
from models.relevance.teacher_settings import TeacherSettings

LAYER = 1
OUTLIER_LAYER = f"backbone.encoder.layer.{LAYER}.attention.output.dense"


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return save_random_backbone(tmp_path_factory.mktemp("bert"), "bert")


def teacher(backbone) -> CrossEncoderTeacher:
    torch.manual_seed(0)
    return CrossEncoderTeacher.build(TeacherSettings(backbone_path=str(backbone), head_hidden=16)).eval()


def attention_heavy(model: CrossEncoderTeacher, gain: float = 10.0) -> CrossEncoderTeacher:
    """A random tiny model's output hardly depends on its attention; make the last block's
    attention output carry weight, so that damaging it shows at the output."""
    with torch.no_grad():
        model.backbone.encoder.layer[LAYER].attention.output.dense.weight *= gain
    return model


def plant_outlier(model: CrossEncoderTeacher, channel: int = 3, scale: float = 1000.0) -> None:
    """Scale one value channel of the last block up and the attention output's matching input
    column down: the model computes the same function, but the attention output projection now
    sees an input with one huge channel — what per-tensor activation scales cannot represent."""
    attention = model.backbone.encoder.layer[LAYER].attention
    with torch.no_grad():
        attention.self.value.weight[channel] *= scale
        attention.self.value.bias[channel] *= scale
        attention.output.dense.weight[:, channel] /= scale


def runner(seed: int = 0, n: int = 96, length: int = 20):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (n, length), generator=g)
    mask = torch.ones_like(ids)
    levels = torch.arange(1, 5, dtype=torch.float32)

    def run(model: nn.Module) -> np.ndarray:
        with torch.inference_mode():
            return (torch.softmax(model(ids, mask), -1) @ levels).numpy()

    return run


def test_quantize_int8_keeps_the_named_layers_and_leaves_the_model_alone(backbone):
    model = teacher(backbone)
    names = linear_layers(model)
    assert OUTLIER_LAYER in names and "head.1" in names
    quantized = dict(quantize_int8(model, keep_fp32=[OUTLIER_LAYER]).named_modules())
    assert type(quantized[OUTLIER_LAYER]) is nn.Linear
    assert all(isinstance(quantized[name], qdynamic.Linear) for name in names if name != OUTLIER_LAYER)
    assert all(type(module) is nn.Linear for name, module in model.named_modules() if name in names)  # a copy
    with pytest.raises(ValueError, match="does not have"):
        quantize_int8(model, keep_fp32=["backbone.no.such.layer"])


def test_calibration_keeps_the_outlier_layer_fp32_first(backbone):
    model, run = attention_heavy(teacher(backbone)), runner()
    before = run(model)
    unplanted = calibrate_int8(model, run, pairs=96, target=-1.0).layer_error
    assert max(unplanted, key=unplanted.get) != OUTLIER_LAYER
    plant_outlier(model)
    np.testing.assert_allclose(run(model), before, atol=1e-4)  # same function
    plan = calibrate_int8(model, run, pairs=96, target=0.999)
    assert plan.layer_error[OUTLIER_LAYER] > 3 * unplanted[OUTLIER_LAYER]
    worst = max(plan.layer_error, key=plan.layer_error.get)
    assert worst == OUTLIER_LAYER
    assert plan.keep_fp32[0] == OUTLIER_LAYER
    # the recorded Spearman is what the plan does, recomputed here; the target is reached, and
    # with one layer fewer in fp32 it would not be (the plan is minimal)
    assert spearman(before, run(quantize_int8(model, plan.keep_fp32))) == pytest.approx(plan.spearman)
    assert plan.spearman >= 0.999
    assert spearman(before, run(quantize_int8(model, plan.keep_fp32[:-1]))) < 0.999
    # the plan is what makes int8 faithful here: everything int8 is much worse
    all_int8 = np.corrcoef(before, run(quantize_int8(model)))[0, 1]
    planned = np.corrcoef(before, run(quantize_int8(model, plan.keep_fp32)))[0, 1]
    assert 1 - planned < (1 - all_int8) / 5


def test_calibration_stops_at_the_target_and_at_the_cap(backbone):
    model, run = attention_heavy(teacher(backbone)), runner()
    plant_outlier(model)
    assert calibrate_int8(model, run, pairs=96, target=-1.0).keep_fp32 == ()
    capped = calibrate_int8(model, run, pairs=96, target=1.01, max_fp32_share=0.1)
    assert len(capped.keep_fp32) == int(0.1 * len(linear_layers(model)))
    ranked = sorted(capped.layer_error, key=lambda name: -capped.layer_error[name])
    assert list(capped.keep_fp32) == ranked[: len(capped.keep_fp32)]
    with pytest.raises(ValueError, match="max_fp32_share"):
        calibrate_int8(model, run, pairs=96, max_fp32_share=0.0)


def test_scorer_quantizes_by_the_saved_plan(backbone, tmp_path):
    model = teacher(backbone)
    folder = model.save(tmp_path / "t", AutoTokenizer.from_pretrained(backbone))
    assert Int8Plan.load(folder) is None
    unplanned = dict(TeacherScorer(folder, ScoringSettings(precision="int8")).model.named_modules())
    assert isinstance(unplanned[OUTLIER_LAYER], qdynamic.Linear)

    Int8Plan((OUTLIER_LAYER,), 0.99, 0.99, 10, {OUTLIER_LAYER: 1.0}).save(folder)
    assert (folder / INT8_FILE).is_file()
    scorer = TeacherScorer(folder, ScoringSettings(precision="int8"))
    assert scorer.int8_plan.keep_fp32 == (OUTLIER_LAYER,)
    planned = dict(scorer.model.named_modules())
    assert type(planned[OUTLIER_LAYER]) is nn.Linear
    assert isinstance(planned["head.1"], qdynamic.Linear)
    assert TeacherScorer(folder, ScoringSettings(precision="fp32")).int8_plan is None

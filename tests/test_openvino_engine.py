"""The OpenVINO CPU engine of the teacher: exported once when published, scored behind the same scorer."""

import json
import logging

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from models.random_models import save_random_backbone
from models.relevance import openvino_engine as ov_engine
from models.relevance.scoring import TeacherScorer, export_teacher_openvino
from models.relevance.teacher import CrossEncoderTeacher
from models.relevance.teacher_settings import ScoringSettings, TeacherSettings

WORDS = [
    "red",
    "blue",
    "green",
    "oak",
    "chair",
    "table",
    "lamp",
    "garden",
    "kitchen",
    "wedding",
    "dress",
    "cake",
    "shoes",
    "rustic",
    "modern",
]


def pairs(seed: int, n: int) -> tuple[list[str], list[str]]:
    """Queries and pin texts of very different lengths: batches carry padding."""
    rng = np.random.default_rng(seed)
    queries = [" ".join(rng.choice(WORDS, rng.integers(1, 4))) for _ in range(n)]
    texts = [" ".join(rng.choice(WORDS, rng.integers(1, 40))) for _ in range(n)]
    return queries, texts


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny teacher whose output depends on its attention (random tiny models barely do),
    exported on 96 calibration pairs."""
    root = tmp_path_factory.mktemp("ov")
    backbone = save_random_backbone(root / "bert", "bert")
    torch.manual_seed(0)
    model = CrossEncoderTeacher.build(TeacherSettings(backbone_path=str(backbone), head_hidden=16)).eval()
    with torch.no_grad():
        for layer in model.backbone.encoder.layer:
            layer.attention.output.dense.weight *= 8.0
        model.head[-1].weight *= 20.0
    folder = model.save(root / "teacher", AutoTokenizer.from_pretrained(backbone))
    (folder / "encoding.json").write_text(json.dumps({"max_length": 48, "query_tokens": 8}))
    plan = export_teacher_openvino(folder, *pairs(0, 96), target=0.99, batch_size=16)
    return folder, plan


def scores(folder, precision: str, engine: str = "openvino", **kwargs):
    scorer = TeacherScorer(folder, ScoringSettings(precision, batch_size=16, engine=engine, **kwargs))
    probs, expected, _ = scorer.score(*pairs(1, 120))
    return scorer, probs, expected


def test_the_export_is_written_with_what_it_measured(exported):
    folder, plan = exported
    files = {p.name for p in (folder / ov_engine.OPENVINO_DIR).iterdir()}
    assert {"model.xml", "model.bin", "int8.xml", "int8.bin", "openvino.json"} <= files
    assert ov_engine.OpenVinoPlan.load(folder / ov_engine.OPENVINO_DIR) == plan
    assert plan.calibration_rows == plan.agreement_rows == 48 and plan.target == 0.99
    assert 0.99 <= plan.int8_agreement < 1.0 and plan.int8  # quantized, yet ranking like fp32
    assert plan.bf16_agreement > 0.999


def test_each_openvino_precision_tracks_fp32_torch_on_padded_batches(exported):
    folder, _ = exported
    _, reference, expected32 = scores(folder, "fp32", engine="torch")
    errors = {}
    for precision, tolerance in (("fp32", 1e-3), ("bf16", 0.02), ("int8", 0.1)):
        scorer, probs, expected = scores(folder, precision)
        assert scorer.precision == f"openvino-{precision}"
        assert isinstance(scorer.model, ov_engine.OpenVinoModule)
        errors[precision] = np.abs(probs - reference).max()
        assert errors[precision] < tolerance, (precision, errors[precision])
        assert np.corrcoef(expected, expected32)[0, 1] > 0.99
    assert errors["int8"] > 1e-4  # it really is another (quantized) model


def test_each_precision_executes_in_its_element_type(exported):
    folder = exported[0] / ov_engine.OPENVINO_DIR
    compiled = {p: ov_engine.compile_model(folder, p, 1) for p in ("int8", "bf16", "fp32")}
    ran = {p: ov_engine.executed_precisions(c) for p, c in compiled.items()}
    # one thread each and not pinned: Spark's 1-core workers would all be pinned to the first core
    assert all(c.get_property("INFERENCE_NUM_THREADS") == 1 for c in compiled.values())
    assert not any(c.get_property("ENABLE_CPU_PINNING") for c in compiled.values())
    assert ran["int8"]["i8"] > 0  # the quantized matmuls
    assert ran["bf16"]["i8"] == ran["fp32"]["i8"] == 0
    assert ran["fp32"]["bf16"] == 0
    import openvino as ov

    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert ran["bf16"]["bf16"] > 0


def test_int8_that_missed_its_target_when_published_scores_in_bf16(exported, tmp_path, caplog):
    import shutil

    folder = shutil.copytree(exported[0], tmp_path / "teacher")
    plan_file = folder / ov_engine.OPENVINO_DIR / ov_engine.PLAN_FILE
    plan_file.write_text(json.dumps({**json.loads(plan_file.read_text()), "target": 1.5}))
    with caplog.at_level(logging.WARNING):
        scorer, _, _ = scores(folder, "int8")
    assert scorer.precision == "openvino-bf16"
    assert "scoring in bf16" in caplog.text


def test_a_teacher_without_an_export_is_scored_by_torch_with_a_warning(exported, tmp_path, caplog):
    import shutil

    folder = shutil.copytree(exported[0], tmp_path / "teacher", ignore=shutil.ignore_patterns("openvino"))
    with caplog.at_level(logging.WARNING):
        scorer, _, _ = scores(folder, "int8")
    assert scorer.precision == "int8" and not isinstance(scorer.model, ov_engine.OpenVinoModule)
    assert "no OpenVINO export" in caplog.text
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        scores(folder, "bf16")  # bf16 on CPU is OpenVINO's; torch has none here
    with pytest.raises(ValueError, match="unknown CPU engine"):
        ScoringSettings("int8", engine="onnx")

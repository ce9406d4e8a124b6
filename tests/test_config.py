import datetime as dt
from pathlib import Path

import pytest
import time_machine

from jobs.config import load_config
from models.packaged import minilm_dir
from runtime.config import ENVIRONMENTS, ConfigError, parse_override


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_environment_loads(env):
    cfg = load_config(env)
    assert cfg.env == env
    assert cfg.simulate.n_pins >= cfg.simulate.n_topics


def test_overlay_and_override_order(tmp_path):
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("simulate:\n  days: 5\n  seed: 11\n")
    cfg = load_config("cluster", [overlay], ["simulate.days=9", "spark.extra={a.b: c}"])
    assert cfg.simulate.days == 9  # --set beats the file
    assert cfg.simulate.seed == 11  # the file beats base
    assert cfg.spark.shuffle_partitions == 200  # cluster.yaml beats base
    assert cfg.spark.extra == {"a.b": "c"}


def test_unknown_key_in_overlay_names_it(tmp_path):
    overlay = tmp_path / "typo.yaml"
    overlay.write_text("simulate:\n  sed: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['simulate.sed'\]"):
        load_config("local", [overlay])


def test_unknown_section_names_it():
    with pytest.raises(ConfigError, match=r"\['trainer'\]"):
        load_config("local", overrides=["trainer.lr=0.1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("simulate.days=three", r"simulate.days: must be an integer, got 'three'"),
        ("simulate.days=true", r"simulate.days: must be an integer"),
        ("spark.ui_enabled=1", r"spark.ui_enabled: must be true or false"),
        ("ingest.sources=crowdflower", r"ingest.sources: must be a list"),
        ("simulate.days=0", r"simulate.days: must be >= 1, got 0"),
        ("simulate.click_rate=1.5", r"simulate.click_rate: must be in \[0, 1\]"),
        ("simulate.start_date=2026-13-01", r"simulate.start_date: must be a date YYYY-MM-DD"),
        ("ingest.sources=[crowdflower, imdb]", r"ingest.sources: must be a subset"),
        ("spark.log_level=LOUD", r"spark.log_level: must be one of"),
        ("spark=3", r"spark: must be a mapping"),
        ("features.as_of=soon", r"features.as_of: must be a date YYYY-MM-DD, got 'soon'"),
        ("ingest.s3rec_start_time=dawn", r"ingest.s3rec_start_time: must be an ISO date-time"),
        (["teacher.validation_fraction=0.5", "teacher.test_fraction=0.5"], r"teacher.test_fraction: plus validation"),
        ("teacher.validation_fraction=1.0", r"teacher.validation_fraction: must be in \(0, 1\)"),
        (
            ["teacher.model.lora_r=0", "teacher.model.quantize_4bit=true"],
            r"teacher.model: quantize_4bit trains adapters only",
        ),
        ("teacher.training.query_tokens=200", r"teacher.training: query_tokens \(200\) must leave room"),
        ("teacher.model.lora_rank=8", r"unknown config key\(s\) \['teacher.model.lora_rank'\]"),
        ("scorer.precision=int4", r"scorer.precision: must be one of"),
        ("evaluation.holdout_folds=[-1]", r"evaluation.holdout_folds: folds must be >= 0"),
        ("evaluation.holdout_folds=7", r"evaluation.holdout_folds: must be a list"),
        ("ingest.crowdflower_source=coco", r"ingest.crowdflower_source: must not be another source's name"),
        ("ingest.crowdflower_source=Bad-Name", r"ingest.crowdflower_source: must be lower-case"),
        ("scorer.chunks=0", r"scorer.chunks: must be >= 1"),
        ("scorer.end_date=2026-10-01", r"scorer.end_date: must not be before start_date"),
        ("student.model.kind=gbdt", r"student.model: student kind must be one of"),
        (["student.model.kind=mmoe", "student.model.experts=[mlp, tree]"], r"student.model: experts must be"),
        ("student.training.distillation=soft", r"student.training: distillation must be one of"),
        ("student.training.human_weight=-1", r"student.training: loss weights must be >= 0"),
        ("student.validation_fraction=0", r"student.validation_fraction: must be in \(0, 1\)"),
        ("student_features.bm25_b=2", r"student_features.bm25_b: must be in \[0, 1\]"),
        ("student_features.window_days=0", r"student_features.window_days: must be >= 1"),
        ("corpus.lexical_per_query=-1", r"corpus.lexical_per_query: must be >= 0"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("local", overrides=[override] if isinstance(override, str) else override)


def test_exponent_floats_from_the_command_line():
    cfg = load_config("local", overrides=["teacher.training.lr=5e-5", "teacher.training.head_lr=1E-3"])
    assert (cfg.teacher.training.lr, cfg.teacher.training.head_lr) == (5e-5, 1e-3)
    assert load_config("local", overrides=["scorer.start_date=2026-11-01"]).scorer.end_date == dt.date(2026, 11, 1)


def test_floats_accept_integers_but_strings_do_not():
    assert load_config("local", overrides=["simulate.query_zipf=2"]).simulate.query_zipf == 2.0
    with pytest.raises(ConfigError, match="simulate.query_zipf: must be a number"):
        load_config("local", overrides=["simulate.query_zipf=steep"])


def test_unknown_env_and_missing_file():
    with pytest.raises(ConfigError, match="env: must be one of"):
        load_config("staging")
    with pytest.raises(ConfigError, match="no such file"):
        load_config("local", ["/nonexistent/pinpipe.yaml"])


def test_parse_override():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("simulate.days")


def test_resolved_config_round_trips():
    cfg = load_config("local", overrides=["simulate.seed=3"])
    data = cfg.to_dict()
    assert data["simulate"]["seed"] == 3
    rebuilt = load_config(
        "local",
        overrides=[f"simulate.{k}={v}" for k, v in data["simulate"].items()],
    )
    assert rebuilt.simulate == cfg.simulate

    assert data["scorer"]["start_date"] == cfg.scorer.start_date.isoformat()  # saved as a real date


def test_every_derived_value_is_resolved_once_at_load(tmp_path):
    with time_machine.travel(dt.datetime(2026, 11, 1, 23, 59, 59, tzinfo=dt.UTC), tick=False) as clock:
        cfg = load_config("local", overrides=["lake.root=rel/lake", "scorer.end_date="], cwd=tmp_path)
        clock.move_to(dt.datetime(2026, 11, 2, 0, 0, 1, tzinfo=dt.UTC))
        later = load_config("local")
    day = dt.date(2026, 11, 1)
    assert (cfg.features.as_of, cfg.scorer.start_date, cfg.scorer.end_date) == (day, day, day)
    assert later.features.as_of == dt.date(2026, 11, 2)  # a new load reads the clock again; cfg keeps its day
    assert cfg.lake.root == str(tmp_path.resolve() / "rel" / "lake")
    assert Path(cfg.ingest.data_root).is_absolute()
    assert cfg.teacher.model.backbone_path == str(minilm_dir())
    assert cfg.teacher.feature_version == cfg.scorer.feature_version == cfg.features.version
    saved = cfg.to_dict()
    assert saved["features"]["as_of"] == "2026-11-01" and saved["scorer"]["end_date"] == "2026-11-01"
    assert saved["teacher"]["model"]["backbone_path"] == str(minilm_dir())
    assert (cfg.student_features.as_of, cfg.corpus.date) == (day, day)
    assert cfg.student_features.encoder_path == str(minilm_dir())
    assert cfg.student_features.text_feature_version == cfg.features.version
    assert cfg.student.feature_version == cfg.student_features.version


def test_explicit_values_are_kept_and_uris_left_alone():
    cfg = load_config(
        "local",
        overrides=[
            "lake.root=s3a://bucket/lake",
            "features.as_of=2026-01-05",
            "teacher.feature_version=v7",
            "teacher.model.backbone_path=/models/x",
        ],
    )
    assert cfg.lake.root == "s3a://bucket/lake"
    assert cfg.features.as_of == dt.date(2026, 1, 5)
    assert (cfg.teacher.feature_version, cfg.teacher.model.backbone_path) == ("v7", "/models/x")


def test_a_config_built_by_hand_must_carry_resolved_values():
    from runtime.config import LakeConfig

    with pytest.raises(ConfigError, match="lake.root: must be absolute or a URI"):
        LakeConfig(root="lake")

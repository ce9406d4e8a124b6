import pytest

from jobs.config import ENVIRONMENTS, ConfigError, load_config, parse_override


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
        ("simulate.start_date=2026-13-01", r"simulate.start_date: must be YYYY-MM-DD"),
        ("ingest.sources=[crowdflower, imdb]", r"ingest.sources: must be a subset"),
        ("spark.log_level=LOUD", r"spark.log_level: must be one of"),
        ("spark=3", r"spark: must be a mapping"),
        ("features.as_of=soon", r"features.as_of: must be YYYY-MM-DD or empty"),
        ("teacher.validation_fraction=1.0", r"teacher.validation_fraction: must be in \(0, 1\)"),
        (["teacher.model.lora_r=0", "teacher.model.quantize_4bit=true"], r"teacher.model: quantize_4bit trains adapters only"),
        ("teacher.training.query_tokens=200", r"teacher.training: query_tokens \(200\) must leave room"),
        ("teacher.model.lora_rank=8", r"unknown config key\(s\) \['teacher.model.lora_rank'\]"),
        ("scorer.precision=int4", r"scorer.precision: must be one of"),
        ("scorer.chunks=0", r"scorer.chunks: must be >= 1"),
        ("scorer.end_date=2026-10-01", r"scorer.end_date: must not be before start_date"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("local", overrides=[override] if isinstance(override, str) else override)


def test_exponent_floats_from_the_command_line():
    cfg = load_config("local", overrides=["teacher.training.lr=5e-5", "teacher.training.head_lr=1E-3"])
    assert (cfg.teacher.training.lr, cfg.teacher.training.head_lr) == (5e-5, 1e-3)
    assert load_config("local", overrides=["scorer.start_date=2026-11-01"]).scorer.last_date.isoformat() == "2026-11-01"


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
    rebuilt = load_config("local", overrides=[f"simulate.{k}={v!r}" if isinstance(v, str) else f"simulate.{k}={v}"
                                              for k, v in data["simulate"].items()])
    assert rebuilt.simulate == cfg.simulate

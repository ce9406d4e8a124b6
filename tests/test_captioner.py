import dataclasses

import pandas as pd
import pytest
import torch
from PIL import Image
from pyspark.sql import functions as F

from models.random_models import save_random_blip
from udfs import captioner as captioner_module
from udfs import task_resources
from udfs.captioner import Captioner, caption_col, caption_paths, captioner_version
from udfs.captioner_settings import CaptionerSettings
from udfs.task_resources import task_device


@pytest.fixture(scope="session")
def blip_dir(tmp_path_factory):
    return save_random_blip(tmp_path_factory.mktemp("blip") / "tiny")


@pytest.fixture(scope="session")
def caption_cfg(blip_dir):
    return CaptionerSettings(model_path=str(blip_dir), batch_size=4, max_new_tokens=8)


@pytest.fixture(scope="session")
def captioner(caption_cfg):
    return Captioner(caption_cfg, torch.device("cpu"))


@pytest.fixture(scope="session")
def broken_images(tmp_path_factory):
    """Every kind of bad image, by the reason it must produce."""
    d = tmp_path_factory.mktemp("broken")
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("not an image")
    Image.new("RGB", (200, 200), (10, 200, 30)).save(d / "full.jpg")
    data = (d / "full.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.new("1", (20_000, 20_000)).save(d / "huge.png")
    return {
        str(d / "zero.jpg"): "not a decodable image",
        str(d / "text.jpg"): "not a decodable image",
        str(d / "truncated.jpg"): "unreadable image",
        str(d / "huge.png"): "image too large",
        str(d / "missing.jpg"): "image not found",
    }


@pytest.fixture(scope="session")
def odd_mode_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("modes")
    paths = []
    for mode in ("L", "P", "RGBA", "CMYK", "I;16", "1"):
        path = d / f"{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png'}"
        Image.new(mode, (50, 40)).save(path)
        paths.append(str(path))
    return paths


def test_loads_on_the_device_of_the_task(caption_cfg, monkeypatch):
    """Without an explicit device the captioner asks ``task_device`` (meta: a device it could
    not have picked by itself); on CPU it computes in fp32."""
    monkeypatch.setattr(captioner_module, "task_device", lambda: torch.device("meta"))
    placed = Captioner(caption_cfg)
    assert placed.device.type == "meta" and next(placed.model.parameters()).device.type == "meta"
    assert placed.dtype == torch.float32  # not cuda: gpu_dtype does not apply


class FakeTask:
    def __init__(self, gpus, cpus=3):
        self._gpus, self._cpus = gpus, cpus

    def resources(self):
        return {"gpu": type("R", (), {"addresses": self._gpus})()} if self._gpus else {}

    def cpus(self):
        return self._cpus


def test_task_device_is_the_gpu_spark_assigned(monkeypatch):
    monkeypatch.setattr(task_resources.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(task_resources.TaskContext, "get", staticmethod(lambda: FakeTask(["1"])))
    assert task_device() == torch.device("cuda:1")
    monkeypatch.setattr(task_resources.TaskContext, "get", staticmethod(lambda: FakeTask([])))
    assert task_device() == torch.device("cpu")  # a task without a GPU stays on CPU
    assert task_resources.task_threads() == 3
    monkeypatch.setattr(task_resources.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(task_resources.TaskContext, "get", staticmethod(lambda: FakeTask(["0"])))
    assert task_device() == torch.device("cpu")


@pytest.mark.shared_data
def test_captions_the_real_coco_images(captioner, shared_data):
    paths = sorted(str(p) for p in (shared_data / "coco_mini" / "images").glob("*.jpg"))
    assert len(paths) == 28
    out = caption_paths(captioner, pd.Series(paths))
    assert out["error"].isna().all()
    assert out["caption"].map(lambda c: isinstance(c, str) and len(c) > 0).all()


def test_broken_images_give_null_caption_and_reason(captioner, broken_images):
    paths = pd.Series([*broken_images, None], index=range(10, 10 + len(broken_images) + 1))
    out = caption_paths(captioner, paths)
    assert list(out.index) == list(paths.index)
    assert out["caption"].isna().all()
    reasons = dict(zip(paths, out["error"], strict=False))
    for path, reason in broken_images.items():
        assert reasons[path].startswith(reason), (path, reasons[path])
    assert reasons[None] == "missing image path"


def test_non_rgb_images_are_captioned(captioner, odd_mode_images):
    out = caption_paths(captioner, pd.Series(odd_mode_images))
    assert out["error"].isna().all(), out
    assert out["caption"].notna().all()


def test_batching_does_not_change_captions(captioner, caption_cfg, odd_mode_images, broken_images):
    paths = pd.Series(odd_mode_images[:3] + list(broken_images)[:2] + odd_mode_images[3:])
    one_by_one = caption_paths(Captioner(dataclasses.replace(caption_cfg, batch_size=1), torch.device("cpu")), paths)
    pd.testing.assert_frame_equal(caption_paths(captioner, paths), one_by_one)


def test_version_follows_weights_and_settings(caption_cfg, tmp_path):
    v = captioner_version(caption_cfg)
    assert v.startswith("blip-") and v == captioner_version(caption_cfg)
    assert captioner_version(dataclasses.replace(caption_cfg, num_beams=2)) != v
    assert captioner_version(dataclasses.replace(caption_cfg, batch_size=9)) == v  # speed only
    other = save_random_blip(tmp_path / "other", seed=1)
    assert captioner_version(dataclasses.replace(caption_cfg, model_path=str(other))) != v
    with pytest.raises(FileNotFoundError, match="no config.json"):
        captioner_version(dataclasses.replace(caption_cfg, model_path=str(tmp_path)))


def test_spark_udf_equals_the_plain_model(spark, captioner, caption_cfg, odd_mode_images, broken_images):
    paths = odd_mode_images + list(broken_images)
    df = spark.createDataFrame([(i, p) for i, p in enumerate(paths)], "i int, path string").repartition(2)
    got = df.select("i", caption_col(F.col("path"), caption_cfg).alias("r")).select("i", "r.caption", "r.error")
    got = got.toPandas().sort_values("i").set_index("i")
    expected = caption_paths(captioner, pd.Series(paths))
    assert list(got["caption"]) == list(expected["caption"])
    assert list(got["error"]) == list(expected["error"])


@pytest.mark.shared_data
def test_spark_udf_captions_the_real_coco_images(spark, caption_cfg, shared_data, broken_images):
    real = sorted(str(p) for p in (shared_data / "coco_mini" / "images").glob("*.jpg"))
    df = spark.createDataFrame([(p,) for p in real + list(broken_images)], "path string").repartition(2)
    out = {
        r.path: (r.caption, r.error)
        for r in df.select("path", caption_col(F.col("path"), caption_cfg).alias("r")).select("path", "r.*").collect()
    }
    assert all(out[p][0] and out[p][1] is None for p in real)
    assert all(out[p][0] is None and out[p][1].startswith(reason) for p, reason in broken_images.items())

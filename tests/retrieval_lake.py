"""A lake for the retrieval jobs' tests: users' engagement sequences and a published two-tower."""

from __future__ import annotations

import datetime as dt
import json

from models.artifacts.registry import Registry
from models.retrieval.two_tower import ITEMS_FILE, MODEL_FOLDER, RetrievalModel
from runtime.lake import Lake
from schemas import user_engagements as UE

START = dt.datetime(2020, 1, 1)


def write_sequences(spark, lake: Lake, users: dict[str, list[str]], source: str) -> None:
    """``user_engagements`` of ``source``: each user's pins an hour apart, in list order."""
    rows = [
        (user, pin, UE.EVENT_INTERACTION, START + dt.timedelta(hours=k), START.date(), k, None, None, source)
        for user, pins in users.items()
        for k, pin in enumerate(pins)
    ]
    lake.replace_slice(spark.createDataFrame(rows, UE.USER_ENGAGEMENTS_V1), "user_engagements", f"source = '{source}'")


def publish(lake: Lake, model: RetrievalModel, source: str) -> str:
    """``model`` published as the registry's next two_tower version; items p0000, p0001, ..."""

    def build(folder):
        model.save(folder / MODEL_FOLDER)
        (folder / ITEMS_FILE).write_text(json.dumps([f"p{i:04d}" for i in range(model.n_items)]))

    return Registry(lake.artifacts_path()).publish("two_tower", build, inputs={"source": source})

"""Embed every item of a two-tower model with its item tower: ``pin_embeddings``.

The model is ``index.model_version`` of ``index.model_family`` (empty: the candidate that passed
its gate, else the promoted version),
checked against its manifest first. Its items (``items.json``: item index -> pin id) are spread
over ``index.partitions`` Spark partitions as index ranges; each Python worker loads the model
once (``udfs.item_embedder``, on the task's GPU when it has one) and embeds its range. The
``model_version`` slice (``<family>/<version>``) of ``pin_embeddings`` is replaced, so a re-run
writes the same rows again.

Local:    pinpipe embed_pins [--set index.model_version=v0002]
Cluster:  spark-submit ... jobs/embed_pins.py --env cluster --set lake.root=/shared/lake
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import PinpipeConfig, run_job
from models.artifacts.registry import ArtifactRef, Registry
from models.retrieval.two_tower import ITEMS_FILE
from runtime.lake import Lake, sql_literal
from runtime.session import job_description
from schemas import pin_embeddings as PE
from udfs.item_embedder import EMBEDDED_SCHEMA, embed_partitions

log = logging.getLogger(__name__)

TABLE = "pin_embeddings"


@dataclass(frozen=True)
class EmbedInputs:
    items: DataFrame  # (item_index) 1..n, in ranges per partition
    model: ArtifactRef  # the published two-tower, fetched by each node
    model_version: str  # <family>/<version>


@dataclass(frozen=True)
class EmbedReport:
    model_version: str
    rows: int
    dim: int

    def line(self) -> str:
        return f"embed_pins: {TABLE} model_version={self.model_version} rows={self.rows:,} dim={self.dim}"


def model_slice(model_version: str) -> str:
    return f"{PE.MODEL_VERSION} = {sql_literal(model_version)}"


def read(spark: SparkSession, cfg: PinpipeConfig) -> EmbedInputs:
    lake, c = Lake.of(cfg.lake), cfg.index
    registry = Registry(lake.artifacts())
    version = registry.resolve_next(c.model_family, c.model_version)
    registry.verify(c.model_family, version)
    model = registry.ref(c.model_family, version)
    n_items = len(json.loads(model.storage.read_text(ITEMS_FILE)))
    partitions = c.partitions or spark.sparkContext.defaultParallelism
    items = spark.range(1, n_items + 1, numPartitions=partitions).withColumnRenamed("id", PE.ITEM_INDEX)
    return EmbedInputs(items, model, f"{c.model_family}/{version}")


def transform(inputs: EmbedInputs, *, batch_size: int) -> DataFrame:
    embedded = inputs.items.mapInArrow(embed_partitions(inputs.model, batch_size), EMBEDDED_SCHEMA)
    return embedded.withColumn(PE.MODEL_VERSION, F.lit(inputs.model_version))


def write(embeddings: DataFrame, lake: Lake, model_version: str) -> EmbedReport:
    spark = embeddings.sparkSession
    with job_description(spark, f"embed_pins: item tower of {model_version} -> {TABLE}"):
        rows = lake.replace_slice(embeddings, TABLE, model_slice(model_version))
    first = lake.read(spark, TABLE).filter(model_slice(model_version)).select(F.size(PE.EMBEDDING)).first()
    return EmbedReport(model_version, rows, int(first[0]) if first else 0)


def run(spark: SparkSession, cfg: PinpipeConfig) -> EmbedReport:
    inputs = read(spark, cfg)
    log.info("embed_pins: %s from %s", inputs.model_version, inputs.model)
    embeddings = transform(inputs, batch_size=cfg.index.embed_batch_size)
    return write(embeddings, Lake.of(cfg.lake), inputs.model_version)


def main(argv: Sequence[str] | None = None) -> EmbedReport:
    return run_job("pinpipe embed_pins", __doc__, run, argv)


if __name__ == "__main__":
    main()

"""Train the two-tower retrieval model on one source's engagement sequences and publish it.

Sequences are built in Spark from ``user_engagements`` (``two_tower.source``, e.g.
``s3rec_beauty``): items get dense indices, each user's items are ordered by event time (then
``seq_index``), and split leave-one-out — the last item is the user's test item, the one before
it the validation item, the rest train. Item frequencies for the logQ correction are counted in
Spark over the train parts. The model trains on the driver (every position of every train
sequence is an example), stops early on validation NDCG@10, and is evaluated once on the test
items by the S3-Rec full-ranking protocol (all items ranked, the user's input sequence masked).

The new version is published (idempotently: the same config and inputs give back the version
they made) and, with ``two_tower.promote``, gated (``two_tower.gate``): the published version
and production, both loaded from their folders, rank the new split's test items (production
through its own item list; an item it does not know is a miss). One that passes becomes the
family's candidate; ``build_index`` promotes it together with its index, so a user tower is never
production without its items' index (``pinpipe rollback two_tower`` rolls both back).

Local:    pinpipe train_two_tower [--set two_tower.source=s3rec_lastfm]
Cluster:  spark-submit ... jobs/train_two_tower.py --env cluster --set lake.root=/shared/lake
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.config import PinpipeConfig, run_job
from models.artifacts.publishing import PublishSettings
from models.retrieval.two_tower_settings import (
    TWO_TOWER_GATE_METRICS,
    PretrainedIdsUse,
    TwoTowerSettings,
    TwoTowerTrainSettings,
)
from runtime.config import require, require_at_least, setting
from runtime.lake import Lake
from runtime.session import job_description
from runtime.tracking import TrackedRun
from schemas import item_attributes as IA
from schemas import user_engagements as UE

if TYPE_CHECKING:
    from models.retrieval.training import TwoTowerData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TwoTowerConfig(PublishSettings):
    GATE_METRICS = TWO_TOWER_GATE_METRICS

    model: TwoTowerSettings = setting(
        "The towers: dim, max_len (history read), encoder (transformer | mean), layers, heads, dropouts, "
        "temperature (learned or fixed), shared item ID table, feature crossing per tower (masknet | dhen | "
        "transformer), user head (projections | capsules), conditional."
    )
    training: TwoTowerTrainSettings = setting(
        "Loop and loss: batch of users, epochs, lr, patience and eval_every (validation NDCG@10), loss "
        "(auto: full softmax when one step's logits fit full_softmax_mb, else sampled), logq_correction and "
        "extra_negatives (uniform, beside the in-batch ones) of the sampled loss, exclude_user_items."
    )
    source: str = setting("user_engagements source to train and evaluate on, e.g. s3rec_beauty.")
    pretrained_ids: PretrainedIdsUse = setting(
        "Start the item ID table from a pretrain_ids version (version: auto | '' none | production | vNNNN), "
        "frozen or fine-tuned with ID dropout; refused when its window holds an evaluation event."
    )
    item_attributes: bool = setting(
        "Give the item tower the source's item_attributes (S3-Rec categories, brands, tags) as content "
        "features, when the table has rows for the source."
    )
    max_attributes_per_item: int = setting("At most this many attributes per item (the catalog's most frequent first).")
    eval_index_factory: str = setting(
        "FAISS index factory string the test items are also retrieved through (e.g. Flat, IVF256,Flat, HNSW32), "
        "reported beside the exact full ranking."
    )
    eval_index_params: str = setting(
        "FAISS search parameters of that index, in FAISS's syntax (efSearch=256, nprobe=32); empty = its defaults."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.source.strip()), "two_tower.source", "must not be empty", self.source)
        require_at_least(self, "two_tower", ("max_attributes_per_item",))


ITEM_INDEX = "item_index"
ITEMS = "items"
ATTRIBUTE_INDEX = "attribute_index"


@dataclass
class TwoTowerInputs:
    engagements: DataFrame
    attributes: DataFrame | None  # item_attributes of the source, when the item tower or the interests use them
    versions: dict[str, Any]
    attribute_features: bool = True  # the item tower reads the attributes (else: interests only)
    interests: bool = False  # each item's interest (its broadest attribute) for a conditional model


@dataclass
class TwoTowerPrepared:
    """The training data as lazy DataFrames (``transform``'s output)."""

    items: DataFrame  # (pin_id, item_index 1..n)
    sequences: DataFrame  # (user_id, items): item indices in event order
    counts: DataFrame  # (item_index, count) over the train parts
    attributes: DataFrame | None  # (item_index, attribute_index, rank, attribute)
    versions: dict[str, Any]
    attribute_features: bool = True
    interests: bool = False


@dataclass
class TwoTowerOutputs:
    model: Any  # models.retrieval.two_tower.RetrievalModel (torch stays out of the driver's imports until needed)
    item_ids: list[str]
    metrics: dict[str, Any]
    inputs: dict[str, Any]
    test: Any  # models.retrieval.sequences.Sequences: the gate's evaluation users
    interest_names: list[str] = field(default_factory=list)  # a conditional model's


@dataclass(frozen=True)
class TwoTowerRunReport:
    version: str
    source: str
    users: int
    items: int
    best_epoch: int
    test: dict[str, float]
    ann: dict[str, Any]
    gate: str = ""
    candidate: bool = False
    train_seconds: float = 0.0  # wall clock: in this report, not in the artifact (whose bytes it would change)
    warning: str = ""  # training did not converge (TwoTowerFit.convergence_warning)
    family: str = "two_tower"

    def tracked(self) -> TrackedRun:
        ann = {f"ann_{k}": v for k, v in self.ann.items() if isinstance(v, (int, float))}
        sizes = {"users": self.users, "items": self.items, "best_epoch": self.best_epoch}
        test = {f"test_{k}": v for k, v in self.test.items()}
        return TrackedRun(f"{self.family}/{self.version}", {**test, **ann, **sizes}, self.gate, self.candidate)

    def line(self) -> str:
        t = self.test
        gate = f"; {self.gate}{' (the candidate: build_index promotes it)' if self.candidate else ''}"
        warning = f"; WARNING {self.warning}" if self.warning else ""
        return (
            f"train_two_tower: two_tower/{self.version} source={self.source} users={self.users:,} "
            f"items={self.items:,} best_epoch={self.best_epoch} test HR@10={t['hr@10']:.4f} "
            f"NDCG@10={t['ndcg@10']:.4f} HR@20={t['hr@20']:.4f} NDCG@20={t['ndcg@20']:.4f}; through "
            f"{self.ann['factory']} ({self.ann['params'] or 'defaults'}): HR@10={self.ann['hr@10']:.4f} "
            f"NDCG@10={self.ann['ndcg@10']:.4f}" + (gate if self.gate else "") + warning
        )


def item_index(engagements: DataFrame) -> DataFrame:
    """(pin_id, item_index 1..n) in pin_id order."""
    items = engagements.select(UE.PIN_ID).distinct()
    return items.withColumn(ITEM_INDEX, F.row_number().over(Window.orderBy(UE.PIN_ID)))


def user_sequences(engagements: DataFrame, index: DataFrame) -> DataFrame:
    """(user_id, items): each user's item indices in event order (ties: seq_index, then pin)."""
    return UE.in_event_order(engagements.join(index, UE.PIN_ID), ITEM_INDEX, ITEMS)


def train_counts(sequences: DataFrame) -> DataFrame:
    """(item_index, count) over the train parts: all but each user's last two items, or all of
    them for a user with fewer than three (as ``models.retrieval.sequences.leave_one_out`` trains on them)."""
    train = F.when(F.size(ITEMS) >= 3, F.slice(ITEMS, 1, F.size(ITEMS) - 2)).otherwise(F.col(ITEMS))
    return sequences.select(F.explode(train).alias(ITEM_INDEX)).groupBy(ITEM_INDEX).count()


def item_attributes(attributes: DataFrame, index: DataFrame, max_per_item: int) -> DataFrame:
    """(item_index, attribute_index, rank, attribute): each known item's attributes as dense
    indices 1..A (the catalog's most frequent attribute is 1), its ``max_per_item`` most frequent
    kept; rank 1 is the item's broadest attribute, its *interest* for a conditional model."""
    known = attributes.join(index, IA.PIN_ID).select(ITEM_INDEX, IA.ATTRIBUTE).distinct()
    frequency = known.groupBy(IA.ATTRIBUTE).count()
    by_frequency = Window.orderBy(F.desc("count"), IA.ATTRIBUTE)
    dense = frequency.select(IA.ATTRIBUTE, F.row_number().over(by_frequency).alias(ATTRIBUTE_INDEX))
    ranked = known.join(dense, IA.ATTRIBUTE).withColumn(
        "rank", F.row_number().over(Window.partitionBy(ITEM_INDEX).orderBy(ATTRIBUTE_INDEX))
    )
    return ranked.filter(F.col("rank") <= max_per_item).select(ITEM_INDEX, ATTRIBUTE_INDEX, "rank", IA.ATTRIBUTE)


def read(spark: SparkSession, cfg: PinpipeConfig) -> TwoTowerInputs:
    lake, source = Lake.of(cfg.lake), cfg.two_tower.source
    engagements = lake.read(spark, "user_engagements").filter(F.col(UE.SOURCE) == source)
    versions = {"source": source, "user_engagements_version": lake.version(spark, "user_engagements")}
    attributes = None
    features, interests = cfg.two_tower.item_attributes, cfg.two_tower.model.conditional
    if features or interests:
        attributes = lake.read_or_empty(spark, "item_attributes").filter(F.col(IA.SOURCE) == source)
        versions["item_attributes_version"] = (
            lake.version(spark, "item_attributes") if lake.exists(spark, "item_attributes") else None
        )
    return TwoTowerInputs(engagements, attributes, versions, features, interests)


def transform(inputs: TwoTowerInputs, *, max_attributes_per_item: int = 16) -> TwoTowerPrepared:
    """The training data, lazily: item indices, each user's sequence, train frequencies, and
    the items' attributes (when the item tower uses them)."""
    index = item_index(inputs.engagements)
    attributes = (
        item_attributes(inputs.attributes, index, max_attributes_per_item) if inputs.attributes is not None else None
    )
    sequences = user_sequences(inputs.engagements, index)
    return TwoTowerPrepared(
        index,
        sequences,
        train_counts(sequences),
        attributes,
        inputs.versions,
        inputs.attribute_features,
        inputs.interests,
    )


def collect(prepared: TwoTowerPrepared) -> TwoTowerData:
    """``prepared`` on the driver, as the retrieval package's training takes it."""
    import torch

    from models.retrieval.training import TwoTowerData

    spark = prepared.items.sparkSession
    index = prepared.items.persist()
    try:
        with job_description(spark, "train_two_tower: sequences"):
            item_ids = [r[UE.PIN_ID] for r in index.orderBy(ITEM_INDEX).collect()]
            rows = prepared.sequences.orderBy(UE.USER_ID).toPandas()
            counts_rows = prepared.counts.collect()
            attribute_rows = prepared.attributes.collect() if prepared.attributes is not None else []
    finally:
        index.unpersist()
    if rows.empty:
        raise ValueError(f"train_two_tower: no engagements for source {prepared.versions['source']!r}")
    n_items = len(item_ids)
    counts = torch.zeros(n_items + 1, dtype=torch.long)
    for r in counts_rows:
        counts[r[ITEM_INDEX]] = r["count"]
    if prepared.interests and not attribute_rows:
        raise ValueError(
            f"train_two_tower: two_tower.model.conditional needs each item's interest, but source "
            f"{prepared.versions['source']!r} has no item_attributes for its items (ingest its "
            "<Name>_item2attributes.json, or turn conditional off)"
        )
    if prepared.attribute_features and prepared.attributes is not None and not attribute_rows:
        log.warning(
            "train_two_tower: two_tower.item_attributes is on but source %r has no item_attributes "
            "for its items (ingest its <Name>_item2attributes.json); the item tower uses IDs only",
            prepared.versions["source"],
        )
    attributes = None
    if attribute_rows:
        attributes = torch.zeros(n_items + 1, max(r["rank"] for r in attribute_rows), dtype=torch.long)
        for r in attribute_rows:
            attributes[r[ITEM_INDEX], r["rank"] - 1] = r[ATTRIBUTE_INDEX]
        log.info(
            "train_two_tower: %s attributes on %s of %s items",
            f"{int(attributes.max()):,}",
            f"{int((attributes[1:] > 0).any(1).sum()):,}",
            f"{n_items:,}",
        )
    interests, interest_names = None, []
    if prepared.interests:
        names = {r[ATTRIBUTE_INDEX]: r[IA.ATTRIBUTE] for r in attribute_rows}
        interest_names = [names.get(i, "") for i in range(1, int(attributes.max()) + 1)]
        interests = attributes[:, 0].clone()  # rank 1: the item's broadest attribute
        log.info(
            "train_two_tower: %s interests over %s items",
            f"{int(interests.unique().numel()) - int((interests == 0).any()):,}",
            f"{int((interests[1:] > 0).sum()):,}",
        )
    sequences = [list(items) for items in rows[ITEMS]]
    features = attributes if prepared.attribute_features else None
    return TwoTowerData(sequences, item_ids, counts, features, interests, interest_names)


class PretrainingLeak(ValueError):
    """The pre-training window of the ID embeddings holds some of the two-tower's evaluation events."""


def pretrained_items(
    spark: SparkSession, cfg: PinpipeConfig, inputs: TwoTowerInputs, item_ids: list[str]
) -> tuple[Any, dict[str, Any]]:
    """The item ID initialisation from the ``two_tower.pretrained_ids`` version (``auto``: the
    one pre-trained on this source's windows with ``pretrain_ids.settings``, made now if none is
    kept), checksums verified, and what the manifest records of it; :class:`PretrainingLeak`
    when an evaluation event of this two-tower (each evaluated user's last two) is inside that
    version's window."""
    from jobs.pretrained_ids import evaluation_events_inside, publish_pretrained, read_window, resolved, windows
    from models.artifacts.registry import Registry
    from models.retrieval.id_pretraining import WINDOW_FILE, ItemInit, aligned_vectors, load_item_vectors

    use, family = cfg.two_tower.pretrained_ids, cfg.pretrain_ids.family
    engagements, lake = inputs.engagements, Lake.of(cfg.lake)
    registry = Registry(lake.artifacts())
    if use.version == "auto":
        settings = resolved(cfg.pretrain_ids.settings, cfg.two_tower.model.dim)
        versions = {key: inputs.versions[key] for key in ("source", "user_engagements_version")}
        made = publish_pretrained(
            windows(engagements, settings.holdout_events),
            versions,
            lake,
            settings,
            family=family,
            keep=cfg.pretrain_ids.registry_keep,
            promote=False,
        )
        version = made.version
    else:
        version = registry.resolve(family, "" if use.version == "production" else use.version)
    registry.verify(family, version)
    folder = registry.path(family, version)
    with job_description(spark, "train_two_tower: pre-training window check"):
        inside = evaluation_events_inside(engagements, read_window(spark, folder / WINDOW_FILE))
        leaked = inside.count()
        example = inside.select(UE.USER_ID).first() if leaked else None
    if leaked:
        raise PretrainingLeak(
            f"train_two_tower: the evaluation events of {leaked:,} users (e.g. {example[UE.USER_ID]!r}) fall inside "
            f"the pre-training window of {family} {version}: its ID embeddings have seen them. Pre-train on a "
            f"window that ends before them (pretrain_ids.settings.holdout_events >= 2, on engagements no newer "
            f"than these), or leave two_tower.pretrained_ids.version empty"
        )
    vectors, known = load_item_vectors(folder)
    rows, found = aligned_vectors(vectors, known, item_ids)
    window = registry.manifest(family, version)["inputs"].get("window", {})
    log.info(
        "train_two_tower: item IDs from %s %s (%s): %s of %s items pre-trained",
        family,
        version,
        use.mode,
        f"{int(found.sum()):,}",
        f"{len(item_ids):,}",
    )
    record = {"version": version, "mode": use.mode, "window": window, "items_found": int(found.sum())}
    return ItemInit(rows, found, frozen=use.mode == "frozen"), record


def trained(spark: SparkSession, cfg: PinpipeConfig) -> TwoTowerOutputs:
    """Read, prepare, collect and train with the config's settings: ``run`` without the write."""
    import dataclasses

    from models.retrieval.training import train_and_evaluate

    t = cfg.two_tower
    inputs = read(spark, cfg)
    prepared = transform(inputs, max_attributes_per_item=t.max_attributes_per_item)
    data, model = collect(prepared), t.model
    if t.pretrained_ids.version:
        init, record = pretrained_items(spark, cfg, inputs, data.item_ids)
        data = dataclasses.replace(data, item_init=init)
        prepared.versions["pretrained_ids"] = record
        if t.pretrained_ids.mode == "finetune":
            model = dataclasses.replace(model, id_dropout=t.pretrained_ids.dropout)
    result = train_and_evaluate(
        data,
        model=model,
        training=t.training,
        index_factory=t.eval_index_factory,
        index_params=t.eval_index_params,
    )
    return TwoTowerOutputs(
        result.model,
        result.item_ids,
        result.metrics,
        {**prepared.versions, **result.sizes},
        result.test,
        result.interest_names,
    )


def measure_on(outputs: TwoTowerOutputs, metric: str):
    """The gate's measure: a published two-tower (its folder) ranks the new split's test items
    (through its own item list: an item it does not know is a miss)."""
    from models.retrieval.evaluation import evaluate_with_items
    from models.retrieval.two_tower import load_artifact

    def measure(folder: Path) -> float:
        model, items = load_artifact(folder)
        return evaluate_with_items(model, items, outputs.test, outputs.item_ids)[metric]

    return measure


def write(
    outputs: TwoTowerOutputs, lake: Lake, section: TwoTowerConfig, *, config: dict[str, Any]
) -> TwoTowerRunReport:
    """Publish ``outputs`` as a version of ``section.family``; with ``section.promote``, gate it
    and make it the candidate when it passes."""
    from models.artifacts.publishing import publish_gated
    from models.artifacts.registry import Registry, without_wall_clock
    from models.retrieval.two_tower import INTERESTS_FILE, ITEMS_FILE, MODEL_FOLDER

    def build(folder: Path) -> None:
        outputs.model.save(folder / MODEL_FOLDER)
        (folder / ITEMS_FILE).write_text(json.dumps(outputs.item_ids))
        if outputs.interest_names:
            (folder / INTERESTS_FILE).write_text(json.dumps(outputs.interest_names))
        (folder / "metrics.json").write_text(json.dumps(without_wall_clock(outputs.metrics), indent=2))

    registry = Registry(lake.artifacts(), keep=section.registry_keep)
    published = publish_gated(
        registry,
        section,
        build,
        metrics={part: outputs.metrics[part] for part in ("validation", "test", "test_ann", "popularity_test")},
        config=config,
        inputs=outputs.inputs,
        measure=measure_on(outputs, section.gate.metric),
        rows=len(outputs.test.rows),
        baselines={"popularity": outputs.metrics["popularity_test"][section.gate.metric]},
        on_pass=registry.approve,
    )
    decision = published.decision
    if outputs.metrics["convergence_warning"]:
        log.warning("train_two_tower: %s", outputs.metrics["convergence_warning"])
    return TwoTowerRunReport(
        published.version,
        outputs.inputs["source"],
        outputs.inputs["users"],
        outputs.inputs["items"],
        outputs.metrics["best_epoch"],
        outputs.metrics["test"],
        outputs.metrics["test_ann"],
        gate=decision.line() if decision else "",
        candidate=published.approved,
        train_seconds=outputs.metrics["train_seconds"],
        warning=outputs.metrics["convergence_warning"],
        family=section.family,
    )


def run(spark: SparkSession, cfg: PinpipeConfig) -> TwoTowerRunReport:
    return write(trained(spark, cfg), Lake.of(cfg.lake), cfg.two_tower, config=cfg.to_dict())


def main(argv: Sequence[str] | None = None) -> TwoTowerRunReport:
    return run_job("pinpipe train_two_tower", __doc__, run, argv)


if __name__ == "__main__":
    main()

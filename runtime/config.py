"""Typed, strict configuration.

A job's configuration is ``conf/base.yaml``, then an environment overlay (``conf/<env>.yaml``:
``local`` — the embedded default —, ``cluster`` or ``cluster-gpu``), then any ``--conf-file``
overlays, then ``--set section.key=value`` overrides, merged in that order. The merged mapping
is then checked against the dataclasses below: an unknown key, a missing section or a value of
the wrong type fails with a :class:`ConfigError` naming the key, and so does a value that is
out of range.

Every derived value is resolved once, in :func:`load_config`, and never again: an empty date
becomes today's date (UTC, read from the clock once), an empty ``end_date`` its start date, an
empty ``feature_version`` the features' version, an empty teacher backbone the MiniLM bundled
with the installed package, and relative local paths absolute (against the working directory).
Jobs read plain values, and the resolved config saved beside an artifact holds real dates and
paths.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import datetime as dt
import json
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from models.artifacts.gate import GateSettings
from models.packaged import minilm_dir
from models.relevance.student_settings import EncoderSettings, StudentSettings, StudentTrainSettings
from models.relevance.teacher_settings import TeacherSettings, TrainSettings
from models.retrieval.two_tower_settings import TwoTowerSettings, TwoTowerTrainSettings
from udfs.captioner_settings import CaptionerSettings

ENVIRONMENTS = ("local", "cluster", "cluster-gpu")


class ConfigError(ValueError):
    """A configuration key is unknown, missing, of the wrong type, or out of range."""


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


def _require(condition: bool, key: str, message: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}, got {value!r}")


def is_uri(path: str) -> bool:
    """A URI (s3a://, hdfs://, file:...) rather than a local path."""
    return "://" in path or path.startswith("file:")


def _require_at_least(section: Any, prefix: str, names: tuple[str, ...], minimum: int = 1) -> None:
    for name in names:
        value = getattr(section, name)
        _require(value >= minimum, f"{prefix}.{name}", f"must be >= {minimum}", value)


def _require_gate_metric(gate: GateSettings, prefix: str, metrics: tuple[str, ...]) -> None:
    _require(gate.metric in metrics, f"{prefix}.gate.metric", f"one of {metrics}", gate.metric)


def local_folder(setting: str, key: str, lake_root: str, default_name: str) -> Path:
    """A folder setting that must be a POSIX path (a lock, a report): ``setting``, or
    ``<lake_root>/<default_name>`` when it is empty and the lake is local; with a URI lake root
    the setting is required (the error names ``key``)."""
    if setting:
        return Path(setting)
    if is_uri(lake_root):
        raise ValueError(f"{key}: lake.root {lake_root!r} is a URI; set {key} to a local (or shared POSIX) folder")
    return Path(lake_root) / default_name


# The master URLs Spark accepts (SparkContext's own patterns), checked before a JVM starts.
MASTER_URL = re.compile(
    r"local|local\[(\d+|\*)\]|local\[(\d+|\*),\s*\d+\]|local-cluster\[\d+,\s*\d+,\s*\d+\]"
    r"|spark://[^\s/,]+(,[^\s/,]+)*|yarn|k8s://\S+|mesos://\S+"
)
MEMORY_SIZE = re.compile(r"\d+[kKmMgGtT]?[bB]?")


@dataclass(frozen=True)
class SparkConfig:
    master: str = _help("Master for local runs; ignored under spark-submit.")
    driver_memory: str = _help("spark.driver.memory for local runs (e.g. '4g').")
    shuffle_partitions: int = _help("spark.sql.shuffle.partitions.")
    ui_enabled: bool = _help("Whether the Spark UI is started (local runs).")
    log_level: str = _help("Spark log level: ERROR, WARN, INFO, ...")
    extra: dict[str, str] = _help("More Spark properties, set as given.", default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.shuffle_partitions >= 1, "spark.shuffle_partitions", "must be >= 1", self.shuffle_partitions)
        levels = {"ALL", "DEBUG", "ERROR", "FATAL", "INFO", "OFF", "TRACE", "WARN"}
        _require(self.log_level in levels, "spark.log_level", f"must be one of {sorted(levels)}", self.log_level)
        _require(
            MASTER_URL.fullmatch(self.master) is not None,
            "spark.master",
            "must be local, local[N], local[*], local[N,retries], spark://host:port[,host:port], yarn or k8s://...",
            self.master,
        )
        _require(
            MEMORY_SIZE.fullmatch(self.driver_memory) is not None,
            "spark.driver_memory",
            "must be a JVM memory size such as 512m, 4g or 1t",
            self.driver_memory,
        )


@dataclass(frozen=True)
class LakeConfig:
    root: str = _help(
        "Lake root: tables under <root>/tables, artifacts under <root>/artifacts. "
        "A local path (relative to the working directory) or a URI (s3a://, hdfs://)."
    )

    def __post_init__(self) -> None:
        _require(bool(self.root.strip()), "lake.root", "must not be empty", self.root)
        _require(
            is_uri(self.root) or Path(self.root).is_absolute(),
            "lake.root",
            "must be absolute or a URI (load_config resolves relative paths)",
            self.root,
        )


@dataclass(frozen=True)
class IngestConfig:
    data_root: str = _help(
        "Folder holding the real evaluation data (crowdflower/, s3rec/, coco_mini/); relative to the working directory."
    )
    crowdflower_csv: str = _help("CrowdFlower labels CSV, relative to data_root.")
    crowdflower_scale_max: int = _help("Top of the CrowdFlower relevance scale (1..max).")
    crowdflower_source: str = _help(
        "Source name of the CrowdFlower file's rows (their slice of human_labels and "
        "pins): another CrowdFlower-format file ingested under another name lives beside "
        "the first instead of replacing it."
    )
    s3rec_dir: str = _help("Folder of S3-Rec '<Name>.txt' sequence files, relative to data_root.")
    s3rec_datasets: list[str] = _help("S3-Rec datasets to ingest, e.g. [Beauty, LastFM].")
    s3rec_start_time: dt.datetime = _help(
        "ISO time of each S3-Rec user's first event; later events "
        "follow at s3rec_step_seconds (the files carry order only)."
    )
    s3rec_step_seconds: int = _help("Seconds between consecutive S3-Rec events of a user.")
    s3rec_attributes: bool = _help(
        "Also ingest '<Name>_item2attributes.json' (item -> attribute ids) into item_attributes when it exists."
    )
    coco_dir: str = _help("COCO folder with captions.json and images/, relative to data_root.")
    sources: list[str] = _help("Which sources to ingest: crowdflower, s3rec, coco.")
    min_slice_ratio: float = _help(
        "Shrink guard: an ingest that would replace a source's slice of a table with fewer than this "
        "fraction of the rows it holds (or with zero rows, whatever the ratio) is refused, naming both counts."
    )
    allow_shrink: bool = _help("Let this run replace slices below min_slice_ratio (set it on the run that means it).")
    encodings: dict[str, str] = _help(
        "Text encoding of each source kind's files (crowdflower, coco, s3rec), utf-8 where not named. "
        "A file that is not valid in it is refused with the byte offset and line, never read with "
        "replacement characters.",
        default_factory=dict,
    )

    def encoding(self, kind: str) -> str:
        """The configured encoding of ``kind``'s files."""
        return self.encodings.get(kind, "utf-8")

    def __post_init__(self) -> None:
        _require(
            self.crowdflower_scale_max >= 2, "ingest.crowdflower_scale_max", "must be >= 2", self.crowdflower_scale_max
        )
        _require(self.s3rec_step_seconds >= 1, "ingest.s3rec_step_seconds", "must be >= 1", self.s3rec_step_seconds)
        _require(
            re.fullmatch(r"[a-z][a-z0-9_]*", self.crowdflower_source) is not None,
            "ingest.crowdflower_source",
            "must be lower-case letters, digits and _",
            self.crowdflower_source,
        )
        _require(
            self.crowdflower_source not in ("coco", "simulated") and not self.crowdflower_source.startswith("s3rec"),
            "ingest.crowdflower_source",
            "must not be another source's name",
            self.crowdflower_source,
        )
        known = {"crowdflower", "s3rec", "coco"}
        _require(set(self.sources) <= known, "ingest.sources", f"must be a subset of {sorted(known)}", self.sources)
        _require(
            set(self.encodings) <= known, "ingest.encodings", f"keys must be among {sorted(known)}", self.encodings
        )
        for kind, name in self.encodings.items():
            try:
                codecs.lookup(name)
            except LookupError:
                raise ConfigError(f"ingest.encodings.{kind}: unknown encoding {name!r}") from None
        # S3-Rec lines are read by Spark's text reader (UTF-8); their ids are ASCII digits, the
        # same bytes in every ASCII-compatible encoding, and any other byte quarantines the line.
        ascii_digits = "0123456789 \t\r\n"
        _require(
            ascii_digits.encode(self.encoding("s3rec"), errors="replace") == ascii_digits.encode("ascii"),
            "ingest.encodings.s3rec",
            "must be ASCII-compatible (S3-Rec files are digits and whitespace)",
            self.encoding("s3rec"),
        )
        _require(
            0.0 <= self.min_slice_ratio <= 1.0, "ingest.min_slice_ratio", "must be in [0, 1]", self.min_slice_ratio
        )

    def path(self, relative: str) -> str:
        return str(Path(self.data_root) / relative)


@dataclass(frozen=True)
class SimulateConfig:
    seed: int = _help("Seed: the same seed and sizes give the same data, on any partitioning.")
    start_date: dt.date = _help("First simulated day (YYYY-MM-DD).")
    days: int = _help("Number of days of impressions and engagements.")
    impressions_per_day: int = _help("Impressions per day (rounded down to whole result pages).")
    page_size: int = _help("Pins per search result page.")
    n_pins: int = _help("Catalog size.")
    n_queries: int = _help("Distinct query ids (Zipf-distributed traffic).")
    n_users: int = _help("Users (Zipf-distributed activity).")
    n_boards: int = _help("Boards.")
    n_topics: int = _help("Topics that tie queries, pins and boards together.")
    n_labels: int = _help("Simulated human-labelled (query, pin) pairs.")
    query_zipf: float = _help("Zipf exponent of query popularity.")
    pin_zipf: float = _help("Zipf exponent of pin popularity within a topic.")
    user_zipf: float = _help("Zipf exponent of user activity.")
    off_topic_rate: float = _help("Share of impressions showing a pin from another topic.")
    near_duplicate_rate: float = _help("Share of pins that re-post an earlier pin's image.")
    click_rate: float = _help("Click probability of a fully relevant pin at position 0.")
    save_rate: float = _help("Probability that a click is also a save.")
    position_decay: float = _help("Position bias: click odds scale by 1/(1+position)^decay.")
    partitions: int = _help("Spark partitions for generation.")

    def __post_init__(self) -> None:
        _require_at_least(
            self,
            "simulate",
            (
                "days",
                "impressions_per_day",
                "page_size",
                "n_pins",
                "n_queries",
                "n_users",
                "n_boards",
                "n_topics",
                "partitions",
            ),
        )
        _require_at_least(self, "simulate", ("n_labels",), minimum=0)
        _require(
            self.impressions_per_day >= self.page_size,
            "simulate.impressions_per_day",
            "must be >= page_size",
            self.impressions_per_day,
        )
        _require(self.n_pins >= self.n_topics, "simulate.n_pins", "must be >= n_topics", self.n_pins)
        _require(self.n_boards >= self.n_topics, "simulate.n_boards", "must be >= n_topics", self.n_boards)
        for name in ("query_zipf", "pin_zipf", "user_zipf"):
            _require(getattr(self, name) > 0, f"simulate.{name}", "must be > 0", getattr(self, name))
        for name in ("off_topic_rate", "near_duplicate_rate", "click_rate", "save_rate"):
            v = getattr(self, name)
            _require(0.0 <= v <= 1.0, f"simulate.{name}", "must be in [0, 1]", v)
        _require(self.position_decay >= 0, "simulate.position_decay", "must be >= 0", self.position_decay)


FEATURE_FIELDS = ("title", "description", "caption", "boards", "queries", "link")


@dataclass(frozen=True)
class FeaturesConfig:
    version: str = _help("feature_version written with pin_text_features; a new version is a new slice.")
    as_of: dt.date = _help("Date the features describe (YYYY-MM-DD); empty = today (UTC), resolved at load.")
    top_k_boards: int = _help("Board titles kept per pin, by number of saves.")
    top_k_queries: int = _help("Engaged queries kept per pin, by clicks + saves.")
    query_window_days: int = _help("Trailing window of impressions for engaged queries.")
    caption_arrow_batch_rows: int = _help("Rows per Arrow batch sent to a captioning Python worker.")
    budgets: dict[str, int] = _help("Character budget of each field in pin_text.", default_factory=dict)

    def __post_init__(self) -> None:
        _require(bool(self.version.strip()), "features.version", "must not be empty", self.version)
        _require_at_least(
            self, "features", ("top_k_boards", "top_k_queries", "query_window_days", "caption_arrow_batch_rows")
        )
        _require(
            set(self.budgets) == set(FEATURE_FIELDS),
            "features.budgets",
            f"must give a budget for each of {list(FEATURE_FIELDS)}",
            self.budgets,
        )
        for k, v in self.budgets.items():
            _require(v >= 1, f"features.budgets.{k}", "must be >= 1", v)


@dataclass(frozen=True)
class EvaluationConfig:
    holdout_folds: list[int] = _help(
        "Human labels whose fold is listed here train nothing (no training, "
        "validation, level cuts or int8 plan) and are the rows the published metrics "
        "are computed on. Empty: a query-grouped test slice (teacher.test_fraction)."
    )

    def __post_init__(self) -> None:
        for fold in self.holdout_folds:
            _require(fold >= 0, "evaluation.holdout_folds", "folds must be >= 0", self.holdout_folds)


@dataclass(frozen=True)
class TeacherConfig:
    model: TeacherSettings = _help(
        "The cross-encoder: backbone_path (empty = the bundled MiniLM), "
        "num_levels, pooling, head, LoRA, 4-bit, checkpointing, GPU dtype."
    )
    training: TrainSettings = _help(
        "Training loop: token budgets, batch sizes, epochs, learning rates, early-stopping patience, seed."
    )
    label_sources: list[str] = _help("human_labels sources to train on (e.g. [crowdflower]); empty = all.")
    feature_version: str = _help(
        "pin_text_features slice joined to the labels; empty = features.version (resolved at load)."
    )
    validation_fraction: float = _help(
        "Share of queries (whole queries) held out for validation: early "
        "stopping, level cuts and the int8 plan are chosen on them."
    )
    test_fraction: float = _help(
        "Share of queries (whole queries) held out for test: the published metrics, on rows that chose nothing."
    )
    split_seed: int = _help("Seed of the query-grouped train/validation split.")
    max_labels: int = _help("Use at most this many labels (a seeded sample); 0 = all.")
    family: str = _help("Registry family the artifact is published under (<lake>/artifacts/<family>).")
    registry_keep: int = _help("Versions kept per family; the promoted one is never pruned.")
    promote: bool = _help("Promote the new version to CURRENT once it is published and passes its gate.")
    gate: GateSettings = _help(
        "Promotion gate: metric (kappa_cuts | kappa | ndcg_at_20 | accuracy) of the new teacher and of "
        "production, both scored (fp32 on CPU) on the new one's test pairs; promoted only if not worse by "
        "more than tolerance."
    )
    distributed_processes: int = _help(
        "0 = train in-process; N = data-parallel over N processes with pyspark's TorchDistributor."
    )
    distributed_local_mode: bool = _help(
        "TorchDistributor local_mode: processes on the driver (true) or in a barrier stage on the executors (false)."
    )
    distributed_use_gpu: bool = _help("TorchDistributor use_gpu: one GPU per process.")
    int8_calibration_pairs: int = _help(
        "Validation pairs on which the published teacher's CPU int8 plan "
        "(which layers stay fp32) is chosen; 0 = no plan (all layers int8)."
    )
    int8_target_spearman: float = _help(
        "The int8 plan keeps layers in fp32 until the int8 model's expected "
        "relevance has this Spearman correlation with fp32's."
    )

    def __post_init__(self) -> None:
        _require(
            0.0 < self.validation_fraction < 1.0,
            "teacher.validation_fraction",
            "must be in (0, 1)",
            self.validation_fraction,
        )
        _require(0.0 < self.test_fraction < 1.0, "teacher.test_fraction", "must be in (0, 1)", self.test_fraction)
        _require(
            self.validation_fraction + self.test_fraction < 1.0,
            "teacher.test_fraction",
            "plus validation_fraction must leave queries for training",
            self.test_fraction,
        )
        _require(
            -1.0 <= self.int8_target_spearman <= 1.0,
            "teacher.int8_target_spearman",
            "must be in [-1, 1]",
            self.int8_target_spearman,
        )
        _require_at_least(self, "teacher", ("registry_keep",))
        _require_at_least(self, "teacher", ("max_labels", "distributed_processes", "int8_calibration_pairs"), minimum=0)
        _require(bool(self.family.strip()), "teacher.family", "must not be empty", self.family)
        _require_gate_metric(self.gate, "teacher", RELEVANCE_GATE_METRICS)


PRECISIONS = ("auto", "fp32", "int8", "bf16", "fp16", "nf4")


@dataclass(frozen=True)
class ScorerConfig:
    teacher_family: str = _help("Registry family of the teacher to score with.")
    teacher_version: str = _help("Version to score with (e.g. v0003); empty = the promoted (CURRENT) one.")
    start_date: dt.date = _help("First impression date (YYYY-MM-DD) to score; empty = today (UTC), resolved at load.")
    end_date: dt.date = _help("Last impression date, inclusive; empty = start_date.")
    feature_version: str = _help(
        "pin_text_features slice to take pin text from; empty = features.version (resolved at load)."
    )
    precision: str = _help("auto (int8 on CPU, bf16 on GPU), fp32, int8 (CPU), bf16/fp16 (GPU), nf4 (4-bit, GPU).")
    batch_size: int = _help("Pairs per model call, at most.")
    max_batch_tokens: int = _help("Padded tokens per model call, at most (rows x longest pair); 0 = rows only.")
    max_length: int = _help("Tokens per pair; 0 = as the teacher was trained.")
    query_tokens: int = _help("Tokens of the query, at most; 0 = as the teacher was trained.")
    arrow_batch_rows: int = _help("Rows per Arrow batch sent to a Python worker (maxRecordsPerBatch).")
    arrow_batch_bytes: int = _help("Bytes per Arrow batch sent to a Python worker (maxBytesPerBatch).")
    max_text_chars: int = _help("Pins whose text is longer than this are quarantined, not scored.")
    chunks: int = _help(
        "Commit units: the pairs are scored and committed in this many hash chunks, so a "
        "killed run loses at most one chunk of work."
    )
    partitions: int = _help("Partitions (parallel scoring tasks) per chunk; 0 = spark.default.parallelism.")

    def __post_init__(self) -> None:
        _require(self.precision in PRECISIONS, "scorer.precision", f"must be one of {list(PRECISIONS)}", self.precision)
        _require_at_least(
            self, "scorer", ("batch_size", "arrow_batch_rows", "arrow_batch_bytes", "max_text_chars", "chunks")
        )
        _require_at_least(self, "scorer", ("max_batch_tokens", "max_length", "query_tokens", "partitions"), minimum=0)
        _require(self.start_date <= self.end_date, "scorer.end_date", "must not be before start_date", self.end_date)


@dataclass(frozen=True)
class StudentFeaturesConfig:
    version: str = _help("feature_version written with student_features; a new version is a new slice.")
    text_feature_version: str = _help("pin_text_features slice the pin text comes from; empty = features.version.")
    as_of: dt.date = _help("Last day of the engagement window (YYYY-MM-DD); empty = today (UTC), resolved at load.")
    window_days: int = _help("Trailing days of search_impressions for pairs and engagement (as_of included).")
    impression_sources: list[str] = _help("search_impressions sources to read; empty = all.")
    encoder_path: str = _help("Local bi-encoder folder; empty = the bundled MiniLM's path.")
    encoder_max_length: int = _help("Tokens per text the bi-encoder reads.")
    encoder_batch_size: int = _help("Texts per bi-encoder forward pass.")
    prior_impressions: float = _help("Weight of the smoothing prior, in impressions (Bayesian CTR smoothing).")
    bm25_k1: float = _help("BM25 term-frequency saturation.")
    bm25_b: float = _help("BM25 length normalisation.")

    def __post_init__(self) -> None:
        _require(bool(self.version.strip()), "student_features.version", "must not be empty", self.version)
        _require_at_least(self, "student_features", ("window_days", "encoder_max_length", "encoder_batch_size"))
        _require(
            self.prior_impressions >= 0, "student_features.prior_impressions", "must be >= 0", self.prior_impressions
        )
        _require(0.0 <= self.bm25_b <= 1.0, "student_features.bm25_b", "must be in [0, 1]", self.bm25_b)
        _require(self.bm25_k1 >= 0, "student_features.bm25_k1", "must be >= 0", self.bm25_k1)

    def encoder(self) -> EncoderSettings:
        return EncoderSettings(self.encoder_path, self.encoder_max_length, self.encoder_batch_size)


@dataclass(frozen=True)
class CorpusConfig:
    label_sources: list[str] = _help(
        "human_labels sources whose queries x products make the distillation corpus; empty = all."
    )
    date: dt.date = _help("Date the corpus impressions are written on (YYYY-MM-DD); empty = today (UTC).")
    lexical_per_query: int = _help("Products per query by BM25 (a lexical retriever's candidates).")
    random_per_query: int = _help("More products per query drawn at random (seeded): easy negatives.")
    seed: int = _help("Seed of the random draw.")

    def __post_init__(self) -> None:
        _require_at_least(self, "corpus", ("lexical_per_query", "random_per_query"), minimum=0)


@dataclass(frozen=True)
class TwoTowerConfig:
    model: TwoTowerSettings = _help(
        "The towers: dim, max_len (history read), encoder (transformer | mean), layers, heads, dropouts, "
        "temperature (learned or fixed), shared item ID table."
    )
    training: TwoTowerTrainSettings = _help(
        "Loop and loss: batch of users, epochs, lr, patience and eval_every (validation NDCG@10), "
        "logq_correction, extra_negatives (uniform, beside the in-batch ones), exclude_user_items."
    )
    source: str = _help("user_engagements source to train and evaluate on, e.g. s3rec_beauty.")
    item_attributes: bool = _help(
        "Give the item tower the source's item_attributes (S3-Rec categories, brands, tags) as content "
        "features, when the table has rows for the source."
    )
    max_attributes_per_item: int = _help("At most this many attributes per item (the catalog's most frequent first).")
    eval_index_factory: str = _help(
        "FAISS index factory string the test items are also retrieved through (e.g. Flat, IVF256,Flat, HNSW32), "
        "reported beside the exact full ranking."
    )
    eval_index_params: str = _help(
        "FAISS search parameters of that index, in FAISS's syntax (efSearch=256, nprobe=32); empty = its defaults."
    )
    family: str = _help("Registry family the model is published under.")
    registry_keep: int = _help("Versions kept; the promoted one is never pruned.")
    promote: bool = _help(
        "Make a new version that passes its gate the family's candidate; build_index then promotes it "
        "together with its index (a user model is never production without its items' index)."
    )
    gate: GateSettings = _help(
        "Promotion gate: metric (ndcg@10 | hr@10 | ndcg@20 | ...) of the candidate and of production, both "
        "measured on the candidate's test users; promoted only if not worse by more than tolerance."
    )

    def __post_init__(self) -> None:
        _require_gate_metric(self.gate, "two_tower", TWO_TOWER_GATE_METRICS)
        _require(bool(self.source.strip()), "two_tower.source", "must not be empty", self.source)
        _require(bool(self.family.strip()), "two_tower.family", "must not be empty", self.family)
        _require_at_least(self, "two_tower", ("registry_keep", "max_attributes_per_item"))


@dataclass(frozen=True)
class IndexConfig:
    name: str = _help("Index name: versions live under <lake>/artifacts/indexes/<name>/.")
    model_family: str = _help("Registry family of the two-tower model whose item tower is embedded and indexed.")
    model_version: str = _help(
        "Model version to embed and index (e.g. v0003); empty = the candidate that passed its gate "
        "(promoted together with its index), else the promoted one."
    )
    embed_batch_size: int = _help("Items per item-tower forward pass in embed_pins.")
    partitions: int = _help("Spark partitions for embedding and shards (one shard per partition); 0 = default.")
    flat_below: int = _help("Below this many vectors the shards are exact (Flat) and factory is not used.")
    factory: str = _help(
        "FAISS index factory string at or above flat_below, e.g. IVF{nlist},Flat, IVF{nlist},PQ16 or HNSW32; "
        "{nlist} becomes a power of two near 4*sqrt(vectors)."
    )
    search_params: str = _help("Search parameters of that index in FAISS's syntax (nprobe=32, efSearch=128).")
    train_sample: int = _help("Vectors (seeded sample) the coarse quantizer trains on, on the driver.")
    recall_queries: int = _help("Seeded sample of indexed vectors used as queries for the recall@10 check.")
    min_recall_at_10: float = _help(
        "A version is published only if the sharded index's recall@10 vs exact search reaches this."
    )
    seed: int = _help("Seed of the training and query samples.")
    keep: int = _help("Index versions kept; the promoted one is never pruned.")
    promote: bool = _help("Promote the new index, and the model it was built from, once published.")

    def __post_init__(self) -> None:
        _require(bool(self.name.strip()), "index.name", "must not be empty", self.name)
        _require(bool(self.model_family.strip()), "index.model_family", "must not be empty", self.model_family)
        _require_at_least(self, "index", ("embed_batch_size", "train_sample", "recall_queries", "keep"))
        _require_at_least(self, "index", ("partitions", "flat_below"), minimum=0)
        _require(
            0.0 <= self.min_recall_at_10 <= 1.0, "index.min_recall_at_10", "must be in [0, 1]", self.min_recall_at_10
        )


@dataclass(frozen=True)
class ServingCorpusConfig:
    date: dt.date = _help("The corpus date (YYYY-MM-DD): events on days <= date count; empty = today (UTC).")
    sources: list[str] = _help("user_engagements sources whose events count; empty = every source.")
    half_life_days: dict[str, float] = _help(
        "Half-life in days of each event type's engagement (types not named here do not count)."
    )
    weights: dict[str, float] = _help("Weight of each event type's decayed engagement in a pin's score.")
    min_score: float = _help("Pins whose score is below this are not in the corpus.")
    full_recompute: bool = _help(
        "Sum every event again instead of carrying the latest earlier engagement_decay state forward."
    )

    def __post_init__(self) -> None:
        for kind, days in self.half_life_days.items():
            _require(days > 0, f"serving_corpus.half_life_days.{kind}", "must be > 0", days)
        for kind, weight in self.weights.items():
            _require(weight >= 0, f"serving_corpus.weights.{kind}", "must be >= 0", weight)
        _require(
            set(self.weights) <= set(self.half_life_days),
            "serving_corpus.weights",
            f"names event types without a half-life (half_life_days has {sorted(self.half_life_days)})",
            sorted(self.weights),
        )
        _require(self.min_score >= 0, "serving_corpus.min_score", "must be >= 0", self.min_score)


# The nightly's stages, in the order they run (jobs/nightly.py maps each to its job).
NIGHTLY_STAGES = (
    "simulate",  # the embedded default's stand-in for the day's logs landing; not on a cluster
    "ingest",
    "pin_features",
    "train_teacher",
    "score_impressions",
    "student_features",
    "train_student",
    "train_two_tower",
    "serving_corpus",
    "embed_pins",
    "build_index",
)
# The metrics a family's promotion gate may compare (keys of its evaluation report).
RELEVANCE_GATE_METRICS = ("kappa_cuts", "kappa", "ndcg_at_20", "accuracy")
TWO_TOWER_GATE_METRICS = tuple(f"{m}@{k}" for m in ("ndcg", "hr") for k in (5, 10, 20))
# The stages that train a model: the ones nightly.train_every_days may schedule.
NIGHTLY_TRAINING_STAGES = ("train_teacher", "train_student", "train_two_tower")


def trained_families(cfg: PinpipeConfig) -> dict[str, str]:
    """Each training stage's registry family (the nightly's schedules, the run report's gates)."""
    return {
        "train_teacher": cfg.teacher.family,
        "train_student": cfg.student.family,
        "train_two_tower": cfg.two_tower.family,
    }


@dataclass(frozen=True)
class NightlyConfig:
    date: dt.date = _help(
        "The date the nightly runs for (YYYY-MM-DD); empty = today (UTC). Every dated setting of its "
        "stages (features.as_of, scorer dates, student_features.as_of, serving_corpus.date) is set to it."
    )
    stages: list[str] = _help(f"Stages to run, a subset of {list(NIGHTLY_STAGES)}; they run in that order.")
    train_every_days: dict[str, int] = _help(
        "Training stages' schedule: the stage runs on days whose number since 1970-01-01 is a multiple "
        "of this, and on any day its model family has no promoted version; other days it is skipped."
    )
    lock_dir: str = _help(
        "Folder of the nightly's lock files: a POSIX path every machine that may start the nightly "
        "shares; empty = <lake.root>/_locks (a local lake.root only)."
    )
    report_dir: str = _help(
        "Folder of the nightly's HTML reports (nightly-<date>.html); empty = <lake.root>/_reports (a local "
        "lake.root only)."
    )
    lock_ttl_seconds: float = _help(
        "Lease of the nightly's lock: a nightly for the same date refuses to start while the lock is "
        "renewed; a killed run's lock is stale at once on its host, after this many seconds elsewhere."
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.stages) - set(NIGHTLY_STAGES))
        _require(not unknown, "nightly.stages", f"unknown stages {unknown}; known: {list(NIGHTLY_STAGES)}", self.stages)
        for stage, days in self.train_every_days.items():
            _require(
                stage in NIGHTLY_TRAINING_STAGES,
                f"nightly.train_every_days.{stage}",
                "only training stages have a schedule",
                stage,
            )
            _require(days >= 1, f"nightly.train_every_days.{stage}", "must be >= 1", days)
        _require(self.lock_ttl_seconds > 0, "nightly.lock_ttl_seconds", "must be > 0", self.lock_ttl_seconds)


@dataclass(frozen=True)
class MaintainConfig:
    tables: list[str] = _help("Tables to maintain; empty = every pinpipe table present in the lake.")
    optimize: bool = _help("Compact each table's small files (Delta OPTIMIZE) before vacuuming.")
    vacuum_retention_hours: float = _help(
        "VACUUM deletes files no longer referenced by versions newer than this many hours: time travel "
        "further back, and readers still on older versions, lose their files. Delta's safety floor is 168."
    )
    allow_short_retention: bool = _help(
        "Allow vacuum_retention_hours below 168 (turns off Delta's retention check for this run)."
    )

    def __post_init__(self) -> None:
        _require(
            self.vacuum_retention_hours >= 0,
            "maintain.vacuum_retention_hours",
            "must be >= 0",
            self.vacuum_retention_hours,
        )
        _require(
            self.vacuum_retention_hours >= 168 or self.allow_short_retention,
            "maintain.vacuum_retention_hours",
            "is below Delta's 168-hour safety floor: set maintain.allow_short_retention=true "
            "if no reader needs the older files",
            self.vacuum_retention_hours,
        )


@dataclass(frozen=True)
class StudentConfig:
    model: StudentSettings = _help("The student: kind (mlp | mmoe), widths, experts (mlp | dcn), gates, towers.")
    training: StudentTrainSettings = _help(
        "Loop and losses: batch, epochs, lr, patience, distillation (none | pointwise | pairwise | both), "
        "incremental, loss weights."
    )
    teacher_family: str = _help("Registry family of the teacher whose labels the student learns.")
    teacher_version: str = _help("Teacher version (e.g. v0003); empty = the promoted (CURRENT) one.")
    feature_version: str = _help("student_features slice to read; empty = student_features.version.")
    label_sources: list[str] = _help("human_labels sources to mix in and evaluate on; empty = all.")
    impression_sources: list[str] = _help("labeled_impressions sources to learn from; empty = all.")
    human_only: bool = _help("Train on human labels only (no teacher-labeled pairs): the baseline.")
    max_teacher_pairs: int = _help("Learn from at most this many teacher-labeled pairs (seeded sample); 0 = all.")
    validation_fraction: float = _help(
        "Share of the non-held-out labeled queries whose labels choose the epoch and level cuts (never trained on)."
    )
    split_seed: int = _help("Seed of the validation split and of the teacher-pair sample.")
    family: str = _help("Registry family the student is published under.")
    registry_keep: int = _help("Versions kept; the promoted one is never pruned.")
    promote: bool = _help("Promote the new version to CURRENT once it is published and passes its gate.")
    gate: GateSettings = _help(
        "Promotion gate: metric (kappa_cuts | kappa | ndcg_at_20 | accuracy) of the new student and of "
        "production, both "
        "measured on the new one's test labels; promoted only if not worse by more than tolerance."
    )

    def __post_init__(self) -> None:
        _require_gate_metric(self.gate, "student", RELEVANCE_GATE_METRICS)
        _require(
            0.0 < self.validation_fraction < 1.0,
            "student.validation_fraction",
            "must be in (0, 1)",
            self.validation_fraction,
        )
        _require_at_least(self, "student", ("max_teacher_pairs",), minimum=0)
        _require_at_least(self, "student", ("registry_keep",))
        _require(bool(self.family.strip()), "student.family", "must not be empty", self.family)


@dataclass(frozen=True)
class PinpipeConfig:
    env: str = _help("The environment overlay that was applied.")
    spark: SparkConfig = _help("Spark session settings.")
    lake: LakeConfig = _help("Where the Delta lake lives.")
    ingest: IngestConfig = _help("Real-data ingest adapters.")
    simulate: SimulateConfig = _help("Synthetic data generator.")
    captioner: CaptionerSettings = _help("BLIP image captioning (model_path empty: no captions).")
    features: FeaturesConfig = _help("Pin text features.")
    evaluation: EvaluationConfig = _help("Which human labels only ever evaluate (held-out folds).")
    teacher: TeacherConfig = _help("Cross-encoder relevance teacher training.")
    scorer: ScorerConfig = _help("Scoring search impressions with the teacher.")
    student_features: StudentFeaturesConfig = _help("Student features: embeddings, BM25, engagement.")
    corpus: CorpusConfig = _help("The distillation corpus over a labeled catalog.")
    student: StudentConfig = _help("Student training (MLP / MMoE) by distillation from the teacher.")
    two_tower: TwoTowerConfig = _help("Two-tower retrieval: user and item towers trained on engagement sequences.")
    index: IndexConfig = _help("Item embeddings (embed_pins) and the sharded FAISS index (build_index, retrieve).")
    serving_corpus: ServingCorpusConfig = _help("What gets served: pins ranked by time-decayed engagement.")
    nightly: NightlyConfig = _help("pinpipe nightly: the stages for one date, resumable, under a lock.")
    maintain: MaintainConfig = _help("Lake upkeep: OPTIMIZE and VACUUM (pinpipe maintain).")

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration, as saved next to artifacts (dates as ISO strings)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=_iso))


def _iso(value: Any) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    raise TypeError(f"not serialisable: {value!r}")


# --------------------------------------------------------------------------- building


def _check_type(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping of settings, got {value!r}")
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(key, value, inner)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin is dict:
        k_tp, v_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {value!r}")
        return {_check_type(f"{key}.<key>", k, k_tp): _check_type(f"{key}.{k}", v, v_tp) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        return float(value)
    if tp is dt.date:
        if isinstance(value, dt.datetime) or not isinstance(value, (dt.date, str)):
            raise ConfigError(f"{key}: must be a date YYYY-MM-DD, got {value!r}")
        try:
            return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{key}: must be a date YYYY-MM-DD, got {value!r}") from None
    if tp is dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            return dt.datetime.fromisoformat(value.isoformat() if isinstance(value, dt.date) else str(value))
        except ValueError:
            raise ConfigError(f"{key}: must be an ISO date-time, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dt.date, dt.datetime)):  # YAML reads 2024-01-01 as a date
            return value.isoformat()
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key(s) {[where + k for k in unknown]}; "
            f"known keys{' in ' + prefix if prefix else ''}: {names}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in data:
            kwargs[f.name] = _check_type(key, data[f.name], hints[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing config key {key!r}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:  # a settings class's own check (e.g. models.relevance.teacher_settings)
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from None


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: must hold a mapping of sections, got {type(data).__name__}")
    return data


def _packaged_yaml(name: str) -> dict[str, Any]:
    # conf/ is a package so that its YAML travels inside the --py-files zip under spark-submit.
    resource = resources.files("conf") / f"{name}.yaml"
    if not resource.is_file():
        raise ConfigError(f"no conf/{name}.yaml")
    return _read_yaml(resource.read_text(encoding="utf-8"), f"conf/{name}.yaml")


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'simulate.days=3'`` -> ``(['simulate', 'days'], 3)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError):  # e.g. 2026-13-01 is no date: keep the text
        value = raw
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):  # YAML 1.1 reads 5e-5 as text
        value = float(value)
    return key.strip().split("."), value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _absolute(path: Any, cwd: Path) -> Any:
    if not isinstance(path, str) or _empty(path) or is_uri(path):
        return path
    return str((cwd / path).resolve())


def _resolve(data: dict[str, Any], today: dt.date, cwd: Path) -> dict[str, Any]:
    """Fill in every derived value, once (see the module docstring). Sections of the wrong
    shape are left alone for :func:`_build` to report."""

    def section(*names: str) -> dict[str, Any]:
        node: Any = data
        for name in names:
            node = node.get(name) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}

    features, scorer, teacher = section("features"), section("scorer"), section("teacher")
    student_features, corpus, student = section("student_features"), section("corpus"), section("student")
    dated = ((features, "as_of"), (scorer, "start_date"), (student_features, "as_of"), (corpus, "date"))
    for node, key in (*dated, (section("serving_corpus"), "date"), (section("nightly"), "date")):
        if node and _empty(node.get(key)):
            node[key] = today.isoformat()
    if scorer and _empty(scorer.get("end_date")):
        scorer["end_date"] = scorer.get("start_date")
    for node in (teacher, scorer):
        if node and _empty(node.get("feature_version")):
            node["feature_version"] = features.get("version")
    if student_features and _empty(student_features.get("text_feature_version")):
        student_features["text_feature_version"] = features.get("version")
    if student and _empty(student.get("feature_version")):
        student["feature_version"] = student_features.get("version")
    if student_features and _empty(student_features.get("encoder_path")):
        student_features["encoder_path"] = str(minilm_dir())
    model = section("teacher", "model")
    if model and _empty(model.get("backbone_path")):
        model["backbone_path"] = str(minilm_dir())
    for node, key in (
        (section("lake"), "root"),
        (section("ingest"), "data_root"),
        (section("captioner"), "model_path"),
        (model, "backbone_path"),
        (student_features, "encoder_path"),
    ):
        if key in node:
            node[key] = _absolute(node[key], cwd)
    return data


def load_config(
    env: str = "local",
    conf_files: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
    *,
    now: dt.datetime | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> PinpipeConfig:
    """Merge base + ``env`` overlay + ``conf_files`` + ``overrides``, resolve the derived values
    (``now`` defaults to the clock, read once; ``cwd`` to the working directory) and check."""
    if env not in ENVIRONMENTS:
        raise ConfigError(f"env: must be one of {list(ENVIRONMENTS)}, got {env!r}")
    data = _merge(_packaged_yaml("base"), _packaged_yaml(env))
    for path in conf_files:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--conf-file {str(p)!r}: no such file")
        data = _merge(data, _read_yaml(p.read_text(encoding="utf-8"), str(p)))
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a section")
        node[keys[-1]] = value
    data["env"] = env
    today = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
    return _build(PinpipeConfig, _resolve(data, today, Path(cwd or os.getcwd())))


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every job takes: ``--env``, ``--conf-file`` and ``--set``."""
    parser.add_argument(
        "--env",
        default=os.environ.get("PINPIPE_ENV", "local"),
        choices=ENVIRONMENTS,
        help="environment overlay conf/<env>.yaml (default: $PINPIPE_ENV or local)",
    )
    parser.add_argument(
        "--conf-file",
        action="append",
        default=[],
        metavar="YAML",
        help="extra YAML overlay; repeatable, later files win",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="override one key, e.g. --set simulate.days=3; repeatable",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> PinpipeConfig:
    return load_config(args.env, args.conf_file, args.overrides)

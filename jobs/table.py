"""The job table: every pinpipe command, declared once.

A row names the job's module (as a string: ``pinpipe --help`` imports no job), a one-line
summary, the config section it owns (and the settings class of that section, ``module:Class``)
or reads, the settings the nightly sets to its date, its place in the nightly, and whether it
trains a model family (its family is the section's ``family``). The CLI (``jobs.cli``), the
configuration (``jobs.config``), the nightly (``jobs.nightly``), its report, the Airflow DAG
(``dags/pinpipe_nightly.py``), the README's command table and the job-shape tests all read it.

Adding a job is: its module, its YAML section in ``conf/base.yaml``, one row here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Job:
    name: str  # the command: pinpipe <name>
    module: str  # whose main(argv) runs it
    summary: str  # one line, for pinpipe --help and the README
    section: str = ""  # the config section it owns or reads ("" = none of its own)
    settings: str = ""  # "module:Class" of that section, on the row that owns it
    dated: tuple[str, ...] = ()  # settings of its section the nightly sets to the nightly's date
    nightly_fixed: Mapping[str, Any] = field(default_factory=dict)  # and to these values
    nightly: bool = False  # a stage of the nightly, in table order
    cluster: bool = True  # a nightly stage that also runs on a cluster (the Airflow DAG)
    trains: bool = False  # trains a model family (the section's PublishSettings.family)
    stage: bool = True  # a data stage with the job shape (read, transform, write, run, main)


# Sections that belong to no job: the runtime's own (Spark, the lake) and shared model settings.
SHARED_SECTIONS: dict[str, str] = {
    "spark": "runtime.config:SparkConfig",
    "lake": "runtime.config:LakeConfig",
    "tracking": "runtime.tracking:TrackingConfig",
    "captioner": "udfs.captioner_settings:CaptionerSettings",
    "evaluation": "models.relevance.splits:EvaluationConfig",
}

JOBS: tuple[Job, ...] = (
    Job(
        "demo",
        "jobs.demo",
        "the whole nightly on the embedded default at small sizes (local Spark, ./lake)",
        stage=False,
    ),
    Job(
        "simulate",
        "jobs.simulate",
        "write the synthetic catalog and traffic to Delta",
        "simulate",
        "jobs.simulate:SimulateConfig",
        dated=("start_date",),
        nightly_fixed={"days": 1},
        nightly=True,
        cluster=False,  # the embedded default's stand-in for the day's logs landing
    ),
    Job(
        "ingest",
        "jobs.ingest",
        "ingest ../shared/data (CrowdFlower, S3-Rec, COCO) into Delta",
        "ingest",
        "jobs.ingest:IngestConfig",
        nightly=True,
    ),
    Job(
        "pin_features",
        "jobs.pin_features",
        "caption new pin images (BLIP) and write pin_text_features",
        "features",
        "jobs.pin_features:FeaturesConfig",
        dated=("as_of",),
        nightly=True,
    ),
    Job(
        "train_teacher",
        "jobs.train_teacher",
        "train the cross-encoder teacher on human_labels and publish it",
        "teacher",
        "jobs.train_teacher:TeacherConfig",
        nightly=True,
        trains=True,
    ),
    Job(
        "score_impressions",
        "jobs.score_impressions",
        "label search impressions with the teacher (teacher_scores)",
        "scorer",
        "jobs.score_impressions:ScorerConfig",
        dated=("start_date", "end_date"),
        nightly=True,
    ),
    Job(
        "distill_corpus",
        "jobs.distill_corpus",
        "impressions of a labeled catalog's queries x products, for the teacher to label",
        "corpus",
        "jobs.distill_corpus:CorpusConfig",
    ),
    Job(
        "student_features",
        "jobs.student_features",
        "embeddings (cached), BM25 and smoothed engagement per (query, pin)",
        "student_features",
        "jobs.student_features:StudentFeaturesConfig",
        dated=("as_of",),
        nightly=True,
    ),
    Job(
        "train_student",
        "jobs.train_student",
        "train an MLP / MMoE student from teacher-labeled pairs and publish it",
        "student",
        "jobs.train_student:StudentConfig",
        nightly=True,
        trains=True,
    ),
    Job(
        "pretrain_ids",
        "jobs.pretrain_ids",
        "learn user and item ID embeddings contrastively from engagement (before each user's evaluation events)",
        "pretrain_ids",
        "jobs.pretrain_ids:PretrainIdsConfig",
        nightly=True,
        trains=True,
    ),
    Job(
        "train_two_tower",
        "jobs.train_two_tower",
        "train the two-tower retrieval model on one source's engagement sequences and publish it",
        "two_tower",
        "jobs.train_two_tower:TwoTowerConfig",
        nightly=True,
        trains=True,
    ),
    Job(
        "serving_corpus",
        "jobs.serving_corpus",
        "pins ranked by time-decayed engagement, one per image signature (serving_corpus of a date)",
        "serving_corpus",
        "jobs.serving_corpus:ServingCorpusConfig",
        dated=("date",),
        nightly=True,
    ),
    Job(
        "embed_pins",
        "jobs.embed_pins",
        "embed every item of a two-tower model with its item tower (pin_embeddings)",
        "index",
        nightly=True,
    ),
    Job(
        "build_index",
        "jobs.build_index",
        "build a sharded FAISS index of pin_embeddings in Spark; publish it if its recall@10 passes",
        "index",
        "models.retrieval.index_settings:IndexSettings",
        nightly=True,
    ),
    Job(
        "retrieve_candidates",
        "jobs.retrieve_candidates",
        "every user's top-k pins from the promoted model and index, into user_candidates (model_version, dt)",
        "retrieve_candidates",
        "jobs.retrieve_candidates:CandidatesConfig",
        dated=("date",),
        nightly=True,
    ),
    Job(
        "index",
        "jobs.index_admin",
        "list | promote VERSION | rollback the index versions (with their model)",
        "index",
        stage=False,
    ),
    Job(
        "rollback",
        "jobs.rollback",
        "restore a model family's previous production version (two_tower: with its index)",
        stage=False,
    ),
    Job("retrieve", "jobs.retrieve", "a user's top-k pins from the promoted model and index", "index", stage=False),
    Job(
        "nightly",
        "jobs.nightly",
        "every stage for one date (--date D): resumable (pipeline_runs), one nightly per date at a time",
        "nightly",
        "jobs.nightly:NightlyConfig",
        dated=("date",),
        stage=False,
    ),
    Job(
        "report",
        "jobs.nightly_report",
        "(re)write the nightly's HTML report of a date (--date D) from the lake",
        "nightly",
        stage=False,
    ),
    Job(
        "maintain",
        "jobs.maintain",
        "compact (OPTIMIZE) and VACUUM the lake's Delta tables",
        "maintain",
        "jobs.maintain:MaintainConfig",
        stage=False,
    ),
    Job("package", "runtime.package", "build dist/pinpipe.zip for spark-submit --py-files", stage=False),
)


def job(name: str) -> Job:
    """The row of command ``name``."""
    for row in JOBS:
        if row.name == name:
            return row
    raise KeyError(f"no job {name!r} in the job table; known: {[row.name for row in JOBS]}")


def nightly_stages() -> tuple[str, ...]:
    """The nightly's stages, in the order they run."""
    return tuple(job.name for job in JOBS if job.nightly)


def training_stages() -> tuple[str, ...]:
    """The nightly stages that train a model (the ones ``nightly.train_every_days`` schedules)."""
    return tuple(job.name for job in JOBS if job.nightly and job.trains)


def cluster_stages() -> tuple[str, ...]:
    """The nightly stages a cluster runs (the Airflow DAG's tasks, in order)."""
    return tuple(job.name for job in JOBS if job.nightly and job.cluster)


def trained_families(cfg: Any) -> dict[str, str]:
    """Each training stage's registry family (the nightly's schedules, the run report's gates)."""
    return {job.name: getattr(cfg, job.section).family for job in JOBS if job.trains}


def sections() -> dict[str, str]:
    """Every config section and its settings class (``module:Class``), in the table's order."""
    owned = {job.section: job.settings for job in JOBS if job.settings}
    return {**SHARED_SECTIONS, **owned}

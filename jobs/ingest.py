"""Ingest the real evaluation data (``ingest.data_root``) into Delta tables.

* CrowdFlower labels CSV -> ``human_labels`` + ``pins`` (one pin per distinct product text);
* S3-Rec ``<Name>.txt`` sequences -> ``user_engagements``. The files have no timestamps: a
  user's i-th event gets ``ingest.s3rec_start_time + i * ingest.s3rec_step_seconds`` and
  ``seq_index = i``; only the order within a user is real; ``<Name>_item2attributes.json``,
  when present (``ingest.s3rec_attributes``), -> ``item_attributes`` (one row per item and
  attribute; parsed entry by entry, a repeated item id quarantines all its entries);
* COCO ``captions.json`` + ``images/`` -> ``pins`` (image path + perceptual signature) and
  ``reference_captions`` (the human captions, kept out of pin text).

Rows that fail validation go to ``quarantine`` with a reason and their raw text; a missing
column, a file that is not valid in its configured encoding (``ingest.encodings``) or a document
of the wrong kind fails the job at once with one clear message. Every input record is accounted
for: after writing, the job checks that records read = rows written + rows quarantined, counted
from the tables, and prints it. Each source replaces its own slice of each table
(``source = '<source>'``), so ingesting twice leaves the same rows; a re-ingest that would shrink
a slice below ``ingest.min_slice_ratio`` of its rows (or to zero) is refused before anything is
written, unless ``ingest.allow_shrink``.

Local:    pinpipe ingest [--set ingest.sources='[crowdflower]']
Cluster:  spark-submit --master spark://HOST:7077 --py-files dist/pinpipe.zip \\
              --jars "$(ls .cache/jars/*.jar | paste -sd,)" \\
              jobs/ingest.py --env cluster --set lake.root=/shared/lake
"""

from __future__ import annotations

import codecs
import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from jobs.config import PinpipeConfig, run_job
from jobs.sources.batch import IngestBatch, Ledger, input_file
from jobs.sources.coco import COCO, read_json_document, transform_coco
from jobs.sources.crowdflower import CROWDFLOWER, read_crowdflower, transform_crowdflower
from jobs.sources.s3rec import read_attributes, read_lines, transform_s3rec
from runtime.config import ConfigError, require, setting
from runtime.lake import Lake, check_shrink, sql_literal
from runtime.session import job_description
from schemas import pins as P
from schemas import quarantine as Q

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestConfig:
    data_root: str = setting(
        "Folder holding the real evaluation data (crowdflower/, s3rec/, coco_mini/); relative to the working "
        "directory.",
        path=True,
    )
    crowdflower_csv: str = setting("CrowdFlower labels CSV, relative to data_root.")
    crowdflower_scale_max: int = setting("Top of the CrowdFlower relevance scale (1..max).")
    crowdflower_source: str = setting(
        "Source name of the CrowdFlower file's rows (their slice of human_labels and "
        "pins): another CrowdFlower-format file ingested under another name lives beside "
        "the first instead of replacing it."
    )
    s3rec_dir: str = setting("Folder of S3-Rec '<Name>.txt' sequence files, relative to data_root.")
    s3rec_datasets: list[str] = setting(
        "S3-Rec datasets to ingest: names (<data_root>/<s3rec_dir>/<Name>.txt), e.g. [Beauty, LastFM], or paths "
        "to a <Name>.txt file anywhere (absolute, or relative to data_root; its <Name>_item2attributes.json "
        "beside it). The source is s3rec_<name, lower case>."
    )
    s3rec_start_time: dt.datetime = setting(
        "ISO time of each S3-Rec user's first event; later events "
        "follow at s3rec_step_seconds (the files carry order only)."
    )
    s3rec_step_seconds: int = setting("Seconds between consecutive S3-Rec events of a user.")
    s3rec_attributes: bool = setting(
        "Also ingest '<Name>_item2attributes.json' (item -> attribute ids) into item_attributes when it exists."
    )
    coco_dir: str = setting("COCO folder with captions.json and images/, relative to data_root.")
    sources: list[str] = setting("Which sources to ingest: crowdflower, s3rec, coco.")
    min_slice_ratio: float = setting(
        "Shrink guard: an ingest that would replace a source's slice of a table with fewer than this "
        "fraction of the rows it holds (or with zero rows, whatever the ratio) is refused, naming both counts."
    )
    allow_shrink: bool = setting("Let this run replace slices below min_slice_ratio (set it on the run that means it).")
    csv_field_limit: int = setting(
        "Characters allowed in one CSV field; a record with a longer field is quarantined as 'field too long'."
    )
    encodings: dict[str, str] = setting(
        "Text encoding of each source kind's files (crowdflower, coco, s3rec), utf-8 where not named. "
        "A file that is not valid in it is refused with the byte offset and line, never read with "
        "replacement characters.",
        default_factory=dict,
    )

    def encoding(self, kind: str) -> str:
        """The configured encoding of ``kind``'s files."""
        return self.encodings.get(kind, "utf-8")

    def __post_init__(self) -> None:
        require(
            self.crowdflower_scale_max >= 2, "ingest.crowdflower_scale_max", "must be >= 2", self.crowdflower_scale_max
        )
        require(self.s3rec_step_seconds >= 1, "ingest.s3rec_step_seconds", "must be >= 1", self.s3rec_step_seconds)
        require(self.csv_field_limit >= 1, "ingest.csv_field_limit", "must be >= 1", self.csv_field_limit)
        require(
            re.fullmatch(r"[a-z][a-z0-9_]*", self.crowdflower_source) is not None,
            "ingest.crowdflower_source",
            "must be lower-case letters, digits and _",
            self.crowdflower_source,
        )
        require(
            self.crowdflower_source not in ("coco", "simulated") and not self.crowdflower_source.startswith("s3rec"),
            "ingest.crowdflower_source",
            "must not be another source's name",
            self.crowdflower_source,
        )
        for entry in self.s3rec_datasets:
            require(
                re.fullmatch(r"[A-Za-z0-9_]+", self.s3rec_file(entry)[0]) is not None,
                "ingest.s3rec_datasets",
                "each dataset (a file's stem when a path) must be letters, digits and _",
                entry,
            )
        known = {"crowdflower", "s3rec", "coco"}
        require(set(self.sources) <= known, "ingest.sources", f"must be a subset of {sorted(known)}", self.sources)
        require(set(self.encodings) <= known, "ingest.encodings", f"keys must be among {sorted(known)}", self.encodings)
        for kind, name in self.encodings.items():
            try:
                codecs.lookup(name)
            except LookupError:
                raise ConfigError(f"ingest.encodings.{kind}: unknown encoding {name!r}") from None
        # S3-Rec lines are ids (ASCII digits) and whitespace: the same bytes in every ASCII-compatible
        # encoding; any other character quarantines its line.
        ascii_digits = "0123456789 \t\r\n"
        require(
            ascii_digits.encode(self.encoding("s3rec"), errors="replace") == ascii_digits.encode("ascii"),
            "ingest.encodings.s3rec",
            "must be ASCII-compatible (S3-Rec files are digits and whitespace)",
            self.encoding("s3rec"),
        )
        require(0.0 <= self.min_slice_ratio <= 1.0, "ingest.min_slice_ratio", "must be in [0, 1]", self.min_slice_ratio)

    def path(self, relative: str) -> str:
        return str(Path(self.data_root) / relative)

    def s3rec_file(self, dataset: str) -> tuple[str, str]:
        """(dataset name, sequence file) of an ``s3rec_datasets`` entry: a name, or a path to a
        ``.txt`` file whose stem names the dataset."""
        if dataset.endswith(".txt"):
            return Path(dataset).stem, self.path(dataset)
        return dataset, self.path(f"{self.s3rec_dir}/{dataset}.txt")


@dataclass(frozen=True)
class Reconciled:
    what: str
    read: int
    written: int
    quarantined: int

    def line(self) -> str:
        return f"{self.what} read {self.read:,} = written {self.written:,} + quarantined {self.quarantined:,}"


class ReconciliationError(RuntimeError):
    """Records read do not equal rows written plus rows quarantined."""


@dataclass
class SourceReport:
    source: str
    written: dict[str, int]
    quarantined: dict[str, int]  # by reason
    reconciled: list[Reconciled]

    def line(self) -> str:
        parts = [f"{t}={n:,}" for t, n in self.written.items()]
        parts.append(f"quarantined={sum(self.quarantined.values()):,}")
        return f"ingest {self.source}: " + " ".join(parts) + "".join(f"; {r.line()}" for r in self.reconciled)


# --------------------------------------------------------------------------- read, transform, write


@dataclass(frozen=True)
class RawSource:
    """One source as read: ``kind`` crowdflower (CSV rows), s3rec (text lines) or coco (the
    captions document, with the folder its image file names are relative to)."""

    kind: str
    name: str  # crowdflower source name, S3-Rec dataset name, or coco source name
    frame: DataFrame
    images_dir: str | None = None
    attributes: DataFrame | None = None  # S3-Rec: the dataset's item -> attributes entries, if read


@dataclass(frozen=True)
class IngestReport:
    sources: list[SourceReport]

    def line(self) -> str:
        return "\n".join(report.line() for report in self.sources)


def read(spark: SparkSession, cfg: PinpipeConfig) -> list[RawSource]:
    """Every configured source, from ``ingest.data_root``."""
    ing: IngestConfig = cfg.ingest
    found: list[RawSource] = []
    if CROWDFLOWER in ing.sources:
        path = ing.path(ing.crowdflower_csv)
        with input_file(path, "ingest.data_root, ingest.crowdflower_csv"):
            raw = read_crowdflower(spark, path, ing.encoding(CROWDFLOWER), ing.csv_field_limit)
        found.append(RawSource(CROWDFLOWER, ing.crowdflower_source, raw))
    if "s3rec" in ing.sources:
        for entry in ing.s3rec_datasets:
            dataset, path = ing.s3rec_file(entry)
            with input_file(path, "ingest.data_root, ingest.s3rec_dir, ingest.s3rec_datasets"):
                lines = read_lines(spark, path, ing.encoding("s3rec"))
            attributes_file = f"{path.removesuffix('.txt')}_item2attributes.json"
            attributes = (
                read_attributes(spark, attributes_file, ing.encoding("s3rec"))
                if ing.s3rec_attributes and Path(attributes_file).is_file()
                else None
            )
            found.append(RawSource("s3rec", dataset, lines, attributes=attributes))
    if COCO in ing.sources:
        coco = Path(ing.path(ing.coco_dir))
        captions = str(coco / "captions.json")
        with input_file(captions, "ingest.data_root, ingest.coco_dir"):
            doc = read_json_document(spark, captions, ing.encoding(COCO))
        found.append(RawSource(COCO, COCO, doc, str(coco / "images")))
    return found


def transform(
    raws: Sequence[RawSource], *, crowdflower_scale_max: int, s3rec_start_time: dt.datetime, s3rec_step_seconds: int
) -> list[IngestBatch]:
    """One batch (valid rows per table + quarantine) per source."""
    batches = []
    for raw in raws:
        if raw.kind == CROWDFLOWER:
            batches.append(transform_crowdflower(raw.frame, crowdflower_scale_max, raw.name))
        elif raw.kind == "s3rec":
            batches.append(transform_s3rec(raw.frame, raw.name, s3rec_start_time, s3rec_step_seconds, raw.attributes))
        elif raw.kind == COCO:
            batches.append(transform_coco(raw.frame, raw.images_dir or "", raw.name))
        else:
            raise ValueError(f"unknown source kind {raw.kind!r}")
    return batches


SHRINK_OVERRIDE = "run again with --set ingest.allow_shrink=true"


def write_batch(lake: Lake, batch: IngestBatch, min_slice_ratio: float | None = None) -> SourceReport:
    """Write each output and the quarantine into the source's slice of its table, then check
    that every record read was written or quarantined.

    With ``min_slice_ratio`` (None: no guard), a batch that would shrink a slice it replaces
    below that fraction of its rows, or to zero, is refused before anything is written.
    """
    spark = batch.quarantine.sparkSession
    where = f"{P.SOURCE} = {sql_literal(batch.source)}"
    for frame in batch.staged:
        frame.persist()
    try:
        if min_slice_ratio is not None:
            for table, rows in batch.outputs.items():
                with job_description(spark, f"ingest {batch.source}: shrink guard on {table}"):
                    held = lake.slice_count(spark, table, where)
                    if held:
                        check_shrink(table, where, held, rows.count(), min_slice_ratio, SHRINK_OVERRIDE)
        written = {}
        for table, rows in batch.outputs.items():
            with job_description(spark, f"ingest {batch.source}: write {table}"):
                written[table] = lake.replace_slice(rows, table, where)
        with job_description(spark, f"ingest {batch.source}: write quarantine"):
            lake.replace_slice(batch.quarantine, "quarantine", f"{Q.SOURCE} = {sql_literal(batch.source)}")
        with job_description(spark, f"ingest {batch.source}: reconcile"):
            quarantine = lake.read(spark, "quarantine").filter(where)
            counts = quarantine.groupBy(Q.TARGET_TABLE, Q.REASON).count().collect()
            reconciled = [_reconcile(lake, batch.source, where, ledger, counts) for ledger in batch.ledgers]
    finally:
        for frame in batch.staged:
            frame.unpersist()
    by_reason: dict[str, int] = {}
    for r in counts:
        by_reason[r[Q.REASON]] = by_reason.get(r[Q.REASON], 0) + r["count"]
    return SourceReport(batch.source, written, dict(sorted(by_reason.items())), reconciled)


def _reconcile(lake: Lake, source: str, where: str, ledger: Ledger, quarantine_counts: list) -> Reconciled:
    """Records read vs rows found in the written slice plus rows quarantined against its table."""
    spark = ledger.read.sparkSession
    written_rows = lake.read(spark, ledger.table).filter(where)
    if ledger.key is not None:
        written_rows = written_rows.select(ledger.key).distinct()
    result = Reconciled(
        ledger.what,
        read=ledger.read.count(),
        written=written_rows.count(),
        quarantined=sum(r["count"] for r in quarantine_counts if r[Q.TARGET_TABLE] == ledger.table),
    )
    if result.read != result.written + result.quarantined:
        raise ReconciliationError(
            f"ingest {source}: {ledger.what} do not reconcile: {result.line()} "
            f"({result.read - result.written - result.quarantined:+,} unaccounted)"
        )
    return result


def write(batches: Sequence[IngestBatch], lake: Lake, min_slice_ratio: float | None = None) -> IngestReport:
    reports = []
    for batch in batches:
        report = write_batch(lake, batch, min_slice_ratio)
        log.info(report.line())
        for reason, n in report.quarantined.items():
            log.info("  quarantined %s: %s x%d", report.source, reason, n)
        reports.append(report)
    return IngestReport(reports)


def run(spark: SparkSession, cfg: PinpipeConfig) -> IngestReport:
    ing = cfg.ingest
    batches = transform(
        read(spark, cfg),
        crowdflower_scale_max=ing.crowdflower_scale_max,
        s3rec_start_time=ing.s3rec_start_time,
        s3rec_step_seconds=ing.s3rec_step_seconds,
    )
    guard = None if ing.allow_shrink else ing.min_slice_ratio
    return write(batches, Lake.of(cfg.lake), guard)


def main(argv: Sequence[str] | None = None) -> IngestReport:
    return run_job("pinpipe ingest", __doc__, run, argv)


if __name__ == "__main__":
    main()

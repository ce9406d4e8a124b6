"""Delta table schemas: one module per table, one versioned ``StructType`` per version.

Jobs import the column-name constants from the table's module and the current schema from
:data:`TABLES`, which maps a table name to the schema (and partition columns) its writer uses.
A changed table gets a new ``<TABLE>_V<n>`` constant; ``TABLES`` points at the current one.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.types import StructType

from schemas import (
    boards,
    engagement_decay,
    human_labels,
    item_attributes,
    labeled_impressions,
    pin_captions,
    pin_embeddings,
    pin_text_features,
    pins,
    pipeline_runs,
    quarantine,
    reference_captions,
    search_impressions,
    serving_corpus,
    student_features,
    teacher_scores,
    text_embeddings,
    user_candidates,
    user_engagements,
)


@dataclass(frozen=True)
class TableSpec:
    """A Delta table's name, current schema and partition columns."""

    name: str
    schema: StructType
    partition_by: tuple[str, ...] = ()


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec("pins", pins.PINS_V1),
        TableSpec("boards", boards.BOARDS_V1),
        TableSpec("search_impressions", search_impressions.SEARCH_IMPRESSIONS_V1, ("dt",)),
        TableSpec("human_labels", human_labels.HUMAN_LABELS_V1),
        TableSpec("user_engagements", user_engagements.USER_ENGAGEMENTS_V1),
        TableSpec("item_attributes", item_attributes.ITEM_ATTRIBUTES_V1),
        TableSpec("reference_captions", reference_captions.REFERENCE_CAPTIONS_V1),
        TableSpec("quarantine", quarantine.QUARANTINE_V1),
        TableSpec("pin_captions", pin_captions.PIN_CAPTIONS_V1),
        TableSpec("pin_text_features", pin_text_features.PIN_TEXT_FEATURES_V1, ("feature_version",)),
        TableSpec("teacher_scores", teacher_scores.TEACHER_SCORES_V1, ("teacher_version",)),
        TableSpec("labeled_impressions", labeled_impressions.LABELED_IMPRESSIONS_V1, ("dt",)),
        TableSpec("text_embeddings", text_embeddings.TEXT_EMBEDDINGS_V1, ("encoder_version",)),
        TableSpec("student_features", student_features.STUDENT_FEATURES_V3, ("feature_version",)),
        TableSpec("pin_embeddings", pin_embeddings.PIN_EMBEDDINGS_V1, ("model_version",)),
        TableSpec("engagement_decay", engagement_decay.ENGAGEMENT_DECAY_V1, ("as_of",)),
        TableSpec("serving_corpus", serving_corpus.SERVING_CORPUS_V1, ("dt",)),
        TableSpec("user_candidates", user_candidates.USER_CANDIDATES_V1, ("model_version", "dt")),
        TableSpec("pipeline_runs", pipeline_runs.PIPELINE_RUNS_V2),
    )
}


def table_spec(name: str) -> TableSpec:
    """The spec of table ``name``; a ``KeyError`` names the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known tables: {sorted(TABLES)}") from None

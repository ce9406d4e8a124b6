"""Reading the ``text_embeddings`` table into memory, for the relevance jobs that score or train
on ``student_features`` rows (the features name texts by hash; the vectors live once, in the
cache table)."""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from models.relevance.embedding_lookup import EmbeddingLookup
from runtime.session import job_description
from schemas import student_features as SF
from schemas import text_embeddings as TE


def embedding_lookup(embeddings: DataFrame, features: DataFrame) -> EmbeddingLookup:
    """The embeddings (``text_embeddings`` rows) of every text that ``features``
    (``student_features`` rows of one encoder version) names: collected to the driver once."""
    spark = features.sparkSession
    versions = [r[0] for r in features.select(SF.ENCODER_VERSION).distinct().collect()]
    if len(versions) > 1:
        raise ValueError(f"student_features rows of more than one encoder version: {sorted(versions)}")
    hashes = (
        features.select(F.col(SF.QUERY_TEXT_HASH).alias(TE.TEXT_HASH))
        .unionByName(features.select(F.col(SF.PIN_TEXT_HASH).alias(TE.TEXT_HASH)))
        .distinct()
    )
    with job_description(spark, "student_features: collect the embedding lookup"):
        table = (
            embeddings.filter(F.col(TE.ENCODER_VERSION).isin(versions))
            .join(hashes, TE.TEXT_HASH, "left_semi")
            .select(TE.TEXT_HASH, TE.EMBEDDING)
            .orderBy(TE.TEXT_HASH)
            .toArrow()
        )
    keys = table.column(TE.TEXT_HASH).to_numpy(zero_copy_only=False)
    flat = table.column(TE.EMBEDDING).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return EmbeddingLookup(keys, flat.reshape(len(keys), -1) if len(keys) else np.zeros((0, 0), np.float32))

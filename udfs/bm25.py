"""BM25 as Spark aggregates: corpus statistics over every document, never on the driver.

``bm25_scores`` gives Okapi BM25 (``k1``, ``b``; idf ``ln(1 + (N - df + 0.5) / (df + 0.5))``, as
``models.relevance.bm25.BM25``) of each pair's query against its document, where the document
frequencies and the mean length are aggregates over the whole ``documents`` frame.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

QUERY = "query"
PIN_ID = "pin_id"
TEXT = "text"
BM25 = "bm25"
TERM = "term"


def tokens(col: Column) -> Column:
    """Lower-case alphanumeric runs (as ``models.relevance.bm25.tokenize``); a split, no backtracking."""
    return F.filter(F.split(F.lower(F.coalesce(col, F.lit(""))), "[^a-z0-9]+"), lambda t: F.length(t) > 0)


def bm25_scores(pairs: DataFrame, documents: DataFrame, k1: float, b: float) -> DataFrame:
    """``query, pin_id, bm25`` for every pair (0 without a shared term). ``documents`` (``pin_id,
    text``) is the whole corpus: its document frequencies and mean length are Spark aggregates."""
    doc_tokens = documents.select(PIN_ID, tokens(F.col(TEXT)).alias("_tokens"))
    lengths = doc_tokens.select(PIN_ID, F.size("_tokens").alias("_dl"))
    stats = lengths.agg(F.count(F.lit(1)).alias("_n"), F.avg("_dl").alias("_avgdl"))
    tf = doc_tokens.select(PIN_ID, F.explode("_tokens").alias(TERM)).groupBy(PIN_ID, TERM).count()
    df = tf.groupBy(TERM).agg(F.count(F.lit(1)).alias("_df"))
    terms = pairs.select(QUERY, PIN_ID, F.explode(F.array_distinct(tokens(F.col(QUERY)))).alias(TERM))
    matched = (
        terms.join(tf.withColumnRenamed("count", "_tf"), [PIN_ID, TERM])
        .join(df, TERM)
        .join(lengths, PIN_ID)
        .crossJoin(F.broadcast(stats))
    )
    avgdl = F.when(F.col("_avgdl") > 0, F.col("_avgdl")).otherwise(F.lit(1.0))
    idf = F.log(1.0 + (F.col("_n") - F.col("_df") + 0.5) / (F.col("_df") + 0.5))
    norm = k1 * (1 - b + b * F.col("_dl") / avgdl)
    term_score = idf * F.col("_tf") * (k1 + 1) / (F.col("_tf") + norm)
    scores = matched.groupBy(QUERY, PIN_ID).agg(F.sum(term_score).alias(BM25))
    return pairs.join(scores, [QUERY, PIN_ID], "left").select(
        QUERY, PIN_ID, F.coalesce(F.col(BM25), F.lit(0.0)).alias(BM25)
    )

"""``labeled_impressions``: search impressions with the teacher's label of their (query, pin),
the students' training table. Partitioned by ``dt``; one slice per (dt, teacher_version)."""

from pyspark.sql.types import StructField, StructType

from schemas import search_impressions as SI
from schemas import teacher_scores as TS

QUERY_NORM = "query_norm"  # the normalised query the score was looked up by

LABELED_IMPRESSIONS_V1 = StructType(
    list(SI.SEARCH_IMPRESSIONS_V1.fields)
    + [StructField(QUERY_NORM, SI.SEARCH_IMPRESSIONS_V1[SI.QUERY].dataType, nullable=False)]
    + [TS.TEACHER_SCORES_V1[name] for name in (TS.PROBABILITIES, TS.EXPECTED_RELEVANCE, TS.LEVEL, TS.TEACHER_VERSION)]
)

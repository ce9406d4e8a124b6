"""``human_labels``: graded (query, pin) relevance judged by people.

``relevance`` is on the source's own scale (CrowdFlower: 1-4, 4 = fully relevant);
``scale_max`` says which, so a model can map it onto its own number of levels.
"""

from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

LABEL_ID = "label_id"
QUERY = "query"
PIN_ID = "pin_id"
RELEVANCE = "relevance"
SCALE_MAX = "scale_max"
RELEVANCE_VARIANCE = "relevance_variance"
FOLD = "fold"
SOURCE = "source"

HUMAN_LABELS_V1 = StructType(
    [
        StructField(LABEL_ID, StringType(), nullable=False),
        StructField(QUERY, StringType(), nullable=False),
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(RELEVANCE, IntegerType(), nullable=False),
        StructField(SCALE_MAX, IntegerType(), nullable=False),
        StructField(RELEVANCE_VARIANCE, DoubleType()),  # rater disagreement, when known
        StructField(FOLD, IntegerType()),  # the source's own CV fold, when it has one
        StructField(SOURCE, StringType(), nullable=False),
    ]
)

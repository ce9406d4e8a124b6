"""``serving_corpus``: the pins served on a date, ranked by time-decayed engagement.

``score`` = sum over event types of ``serving_corpus.weights[type]`` x the pin's
``engagement_decay`` score; pins below ``serving_corpus.min_score`` are left out. Pins that
share an image signature are one pin to serve: the best (highest score, then smallest pin id)
has ``served`` true, the others ``served`` false and ``duplicate_of`` = the served pin (kept,
not dropped, so what was removed is on record). Partitioned by ``dt``.
"""

from pyspark.sql.types import BooleanType, DateType, DoubleType, StringType, StructField, StructType

PIN_ID = "pin_id"
SCORE = "score"
IMAGE_SIGNATURE = "image_signature"
SERVED = "served"
DUPLICATE_OF = "duplicate_of"
DT = "dt"

SERVING_CORPUS_V1 = StructType(
    [
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(SCORE, DoubleType(), nullable=False),
        StructField(IMAGE_SIGNATURE, StringType()),  # none: the pin is its own group
        StructField(SERVED, BooleanType(), nullable=False),
        StructField(DUPLICATE_OF, StringType()),
        StructField(DT, DateType(), nullable=False),
    ]
)

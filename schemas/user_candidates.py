"""``user_candidates``: each user's top retrieval candidates from a two-tower model and the index
built from it, per date (``retrieve_candidates``).

One row per (user, rank) of a (``model_version``, ``dt``) slice: ``pin_id`` and its cosine
``score`` with the user vector that found it, ``interest`` (that vector: 0 is the user's
heaviest interest; always 0 for a single-vector model), ``index_version`` the index searched.
A conditional run (``retrieve_candidates.interest``) records its interest in ``condition``
(empty otherwise). Re-running a slice rewrites it with the same rows. Partitioned by
``model_version`` (``<family>/<version>``) and ``dt``.
"""

from pyspark.sql.types import DateType, FloatType, IntegerType, StringType, StructField, StructType

USER_ID = "user_id"
RANK = "rank"
PIN_ID = "pin_id"
SCORE = "score"
INTEREST = "interest"
CONDITION = "condition"
INDEX_VERSION = "index_version"
MODEL_VERSION = "model_version"
DT = "dt"

USER_CANDIDATES_V1 = StructType(
    [
        StructField(USER_ID, StringType(), nullable=False),
        StructField(RANK, IntegerType(), nullable=False),
        StructField(PIN_ID, StringType(), nullable=False),
        StructField(SCORE, FloatType(), nullable=False),
        StructField(INTEREST, IntegerType(), nullable=False),
        StructField(CONDITION, StringType(), nullable=False),
        StructField(INDEX_VERSION, StringType(), nullable=False),
        StructField(MODEL_VERSION, StringType(), nullable=False),
        StructField(DT, DateType(), nullable=False),
    ]
)

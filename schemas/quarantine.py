"""``quarantine``: input rows that failed validation, with the reason and the raw row."""

from pyspark.sql.types import StringType, StructField, StructType, TimestampType

SOURCE = "source"
TARGET_TABLE = "target_table"
REASON = "reason"
RAW = "raw"  # the rejected row as JSON (or the raw text line)
QUARANTINED_AT = "quarantined_at"

QUARANTINE_V1 = StructType(
    [
        StructField(SOURCE, StringType(), nullable=False),
        StructField(TARGET_TABLE, StringType(), nullable=False),
        StructField(REASON, StringType(), nullable=False),
        StructField(RAW, StringType()),
        StructField(QUARANTINED_AT, TimestampType(), nullable=False),
    ]
)

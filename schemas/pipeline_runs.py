"""``pipeline_runs``: one row per stage a nightly finished (or failed) for a date.

``rows_written``: rows each table received from the stage's writes (V2).
``status``: ``succeeded`` (the stage's report line in ``summary``), ``failed`` (``error``: the
exception's one-line explanation) or ``skipped`` (not on its schedule today). A stage with a
``succeeded`` row for the date is not run again when the nightly for that date is re-run, so a
failed or killed nightly resumes at the first stage without one. ``run_id`` tells the
invocations of one date apart.
"""

from pyspark.sql.types import (
    DateType,
    DoubleType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

RUN_ID = "run_id"
RUN_DATE = "run_date"
STAGE = "stage"
STATUS = "status"
STARTED_AT = "started_at"
ENDED_AT = "ended_at"
SECONDS = "seconds"
SUMMARY = "summary"
ERROR = "error"
ROWS_WRITTEN = "rows_written"

SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"

PIPELINE_RUNS_V1 = StructType(
    [
        StructField(RUN_ID, StringType(), nullable=False),
        StructField(RUN_DATE, DateType(), nullable=False),
        StructField(STAGE, StringType(), nullable=False),
        StructField(STATUS, StringType(), nullable=False),
        StructField(STARTED_AT, TimestampType(), nullable=False),
        StructField(ENDED_AT, TimestampType(), nullable=False),
        StructField(SECONDS, DoubleType(), nullable=False),
        StructField(SUMMARY, StringType()),
        StructField(ERROR, StringType()),
    ]
)

PIPELINE_RUNS_V2 = StructType([*PIPELINE_RUNS_V1.fields, StructField(ROWS_WRITTEN, MapType(StringType(), LongType()))])

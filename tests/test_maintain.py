import pytest
from delta.tables import DeltaTable

from jobs import maintain
from runtime.config import ConfigError


@pytest.mark.slow  # four Delta writes, OPTIMIZE and VACUUM: in `make test-slow`
def test_maintain_compacts_vacuums_and_keeps_the_data(spark, lake, cfg_for):
    def write(source, n):
        df = spark.createDataFrame([(f"{source}:{i}", source) for i in range(n)], "pin_id string, source string")
        lake.replace_slice(_as_pins(df), "pins", f"source = '{source}'")

    write("s1", 3)
    write("s2", 3)
    write("s1", 2)  # replaces s1's files: unreferenced now
    write("s3", 0)  # an empty slice
    before = lake.read(spark, "pins").collect()
    first_write = 1  # version 0 is the empty table

    cfg = cfg_for("maintain.vacuum_retention_hours=0", "maintain.allow_short_retention=true")
    (upkeep,) = maintain.run(spark, cfg).tables
    assert upkeep.table == "pins"
    assert upkeep.files_before > upkeep.files_after == 1
    assert upkeep.deleted >= upkeep.files_before  # the replaced slices' files and the compacted ones
    assert sorted(lake.read(spark, "pins").collect()) == sorted(before)
    with pytest.raises(Exception, match="(?i)file|not exist|vacuum"):
        spark.read.format("delta").option("versionAsOf", first_write).load(lake.table_path("pins")).collect()
    history = [h.operation for h in DeltaTable.forPath(spark, lake.table_path("pins")).history().collect()]
    assert {"OPTIMIZE", "VACUUM END"} <= set(history)


def _as_pins(df):
    from pyspark.sql import functions as F

    from schemas import pins as P

    return df.select(
        *[
            (F.col(c) if c in df.columns else F.lit(None)).cast(f.dataType).alias(c)
            for c, f in ((f.name, f) for f in P.PINS_V1.fields)
        ]
    )


def test_short_retention_must_be_asked_for_and_unknown_tables_are_named(spark, lake, cfg_for):
    with pytest.raises(ConfigError, match="below Delta's 168-hour safety floor"):
        cfg_for("maintain.vacuum_retention_hours=1")
    with pytest.raises(ValueError, match=r"unknown tables \['pinz'\]"):
        maintain.run(spark, cfg_for("maintain.tables=[pinz]"))
    assert maintain.run(spark, cfg_for()).line() == "maintain: no tables"

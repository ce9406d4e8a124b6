"""Spark jobs, one module each, all of one shape (infrastructure lives in ``runtime``):

* ``read(spark, cfg) -> inputs``: the only place a job touches the session, the lake or the config;
* ``transform(inputs, *, values) -> outputs``: pure — lazy DataFrames and plain values in, lazy
  DataFrames (and plain values) out; no session, no paths, no config sections;
* ``write(outputs, lake) -> report``: commits, counts, and a report with a one-line ``line()``;
* ``run(spark, cfg)``: ``write(transform(read(...), ...), lake)`` in a few lines;
* ``main(argv)``: ``jobs.config.run_job``, also what ``spark-submit jobs/<name>.py`` runs.

Every command is a row of the job table (``jobs.table``): its module, its config section (the
settings dataclass in its module), its place in the nightly. ``demo`` and ``nightly`` are
pipelines of jobs (their ``run`` in one session); ``sources`` holds the ingest job's adapters.
"""

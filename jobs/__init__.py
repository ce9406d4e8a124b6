"""Spark jobs. Each module exposes ``transform(...)`` (pure DataFrame -> DataFrame),
``run(spark, cfg)`` and ``main(argv)``, and runs under ``spark-submit jobs/<name>.py``."""

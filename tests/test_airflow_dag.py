"""The Airflow DAG loads in Airflow's own DagBag: runs where the optional ``airflow`` extra is
installed (``pip install -e '.[airflow]'``), and is skipped, saying so, where it is not."""

from pathlib import Path

import pytest

pytest.importorskip("airflow.providers.apache.spark", reason="the optional airflow extra is not installed")

DAGS = Path(__file__).resolve().parent.parent / "dags"


def test_the_dagbag_loads_one_spark_submit_task_per_stage_in_nightly_order(monkeypatch):
    from airflow.models import DagBag
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from jobs.table import JOBS

    monkeypatch.setenv("PINPIPE_HOME", "/opt/pinpipe")
    monkeypatch.setenv("PINPIPE_LAKE", "s3a://bucket/lake")
    monkeypatch.setenv("PINPIPE_JARS", "/opt/jars/delta-spark.jar,/opt/jars/delta-storage.jar")
    bag = DagBag(dag_folder=str(DAGS))  # Airflow 3: example DAGs are not loaded from a folder
    assert bag.import_errors == {}
    dag = bag.dags["pinpipe_nightly"]  # as parsed (get_dag would read the metadata database)
    stages = [job.name for job in JOBS if job.nightly and job.name != "simulate"]  # the table's, in order
    assert [t.task_id for t in dag.topological_sort()] == stages
    for upstream, downstream in zip(stages, stages[1:], strict=False):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    for stage in stages:
        task = dag.get_task(stage)
        assert isinstance(task, SparkSubmitOperator)
        assert task.application == "/opt/pinpipe/jobs/nightly.py"
        assert task.py_files == "/opt/pinpipe/dist/pinpipe.zip"
        args = task.application_args
        assert args[args.index("--date") + 1] == "{{ macros.ds_add(ds, -1) }}"  # the day that ended
        assert f"nightly.stages=[{stage}]" in args and "lake.root=s3a://bucket/lake" in args
        assert "application_args" in task.template_fields  # the date is rendered per run

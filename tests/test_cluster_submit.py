"""spark-submit to a real standalone cluster: the project's code travels as --py-files, the
Delta jars as --jars, Python UDFs run in the worker's executors, and the output is Delta."""

import json

import pytest
from delta.tables import DeltaTable
from PIL import Image

from runtime.package import build_pyfiles_zip
from runtime.session import PROJECT_ROOT, delta_jars
from tests.standalone_cluster import standalone_cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_data(tmp_path):
    root = tmp_path / "data"
    (root / "crowdflower").mkdir(parents=True)
    (root / "crowdflower" / "labels.csv").write_text(
        "id,query,product_title,product_description,median_relevance,relevance_variance,fold\n"
        '1,wine rack,Oak Rack,"Holds 6 bottles, ""solid"" oak",4,0.0,1\n'
        "2,projector,Pro8200,,3,0.471,2\n"
        "3,projector,Lamp,,seven,0,3\n"
    )
    images = root / "coco" / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (40, 30), (250, 120, 0)).save(images / "a.jpg")
    (images / "bad.jpg").write_bytes(b"not a jpeg")
    (root / "coco" / "captions.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "bad.jpg"}],
                "annotations": [{"image_id": 1, "caption": "An orange card."}],
            }
        )
    )
    return root


def test_spark_submit_ingest_on_standalone_cluster(spark, tmp_path, tiny_data):
    lake_root = tmp_path / "lake"
    pyfiles = build_pyfiles_zip(tmp_path / "pinpipe.zip")
    with standalone_cluster(tmp_path / "cluster") as cluster:
        result = cluster.submit(
            "--py-files",
            str(pyfiles),
            "--jars",
            ",".join(delta_jars()),
            "--conf",
            "spark.executor.memory=1g",
            "--conf",
            "spark.cores.max=2",
            "--name",
            "pinpipe-ingest-cluster-test",
            str(PROJECT_ROOT / "jobs" / "ingest.py"),
            "--env",
            "cluster",
            "--set",
            f"lake.root={lake_root}",
            "--set",
            f"ingest.data_root={tiny_data}",
            "--set",
            "ingest.sources=[crowdflower, coco]",
            "--set",
            "ingest.coco_dir=coco",
            "--set",
            "spark.shuffle_partitions=2",
        )
        assert result.returncode == 0, result.stderr[-5000:]
        apps = cluster.state()["completedapps"]
    assert [a["name"] for a in apps] == ["pinpipe-ingest-cluster-test"]
    assert "ingest crowdflower: human_labels=2 pins=2 quarantined=1" in result.stdout
    assert "ingest coco: pins=1 reference_captions=1 quarantined=1" in result.stdout

    pins_path = f"{lake_root}/tables/pins"
    assert DeltaTable.isDeltaTable(spark, pins_path)
    pins = {r.pin_id: r for r in spark.read.format("delta").load(pins_path).collect()}
    assert pins["coco:1"].image_signature.startswith("dh:")  # computed by the UDF in an executor
    assert {p.title for p in pins.values() if p.source == "crowdflower"} == {"Oak Rack", "Pro8200"}
    reasons = sorted(
        r.reason.split(":")[0] for r in spark.read.format("delta").load(f"{lake_root}/tables/quarantine").collect()
    )
    assert reasons == ["unparseable median_relevance", "unreadable image path"]

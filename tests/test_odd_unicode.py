"""Odd Unicode through every text stage, as a user's data would bring it: emoji with joiners,
right-to-left text with direction marks, combining marks, fullwidth letters and ligatures,
zero-width characters, Unicode line separators inside a field, noncharacters and plane-16
code points, CJK — and NUL bytes. One nightly (simulate, ingest of a CrowdFlower file holding
them, pin features, teacher training and scoring, student features and training) must finish
every stage; the rows with NULs are quarantined with the reason; the rest land and are used."""

import csv
import io

import pytest
from pyspark.sql import functions as F

from jobs import nightly
from models.random_models import save_random_backbone
from schemas import pipeline_runs as PR
from tests.test_hostile_input import COLUMNS
from tests.test_nightly import DAY
from tests.test_train_teacher import teacher_overrides

pytestmark = pytest.mark.slow

FAMILY = "\U0001f469\u200d\U0001f469\u200d\U0001f467"  # one emoji of three joined by zero-width joiners
ODD = [  # query, product title, product description
    (f"rug {FAMILY} family", f"Family rug {FAMILY} wool", "Soft \u202eevil\u202c rug"),
    ("سجادة صلاة", "سجادة صلاة حمراء Prayer rug", "نص عربي \u200f mixed English"),
    ("Cafe\u0301 table", "Cafe\u0301 table e\u0301le\u0301gant", "stacked marks Z\u0351\u0352\u0353algo"),
    ("ＦＵＬＬＷＩＤＴＨ lamp", "ＬＡＭＰ １２３", "ﬁne ﬂoor lamp"),
    ("zero\u200bwidth sofa", "\u200b\u200b\u200b", "\ufeffBOM, \u2028 line separator, \u0085 next line \u2029"),
    ("非常に 良い テーブル", "日本語のテーブル 木製", "中文描述 桌子"),
    ("nonchar \uffff desk", "Desk \U0010ffff plane 16", "\U0001d54f\U0001d552 math letters"),
]
NUL = ("nul\x00 chair", "Chair\x00with NUL", "control \x01\x1b[31m escape")
PLAIN = [("oak desk", "Solid oak desk", "A desk of oak"), ("grey rug", "Grey wool rug", "A soft grey rug")]


def labels_csv() -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    label_id = 1
    for group in [*ODD, NUL, *PLAIN * 3]:
        for j in range(8):
            query, title, description = group
            writer.writerow([label_id, query, f"{title} {j}", description, 1 + (label_id % 4), "0.5", 1 + j % 7])
            label_id += 1
    return out.getvalue()


def test_a_nightly_carries_odd_unicode_through_every_text_stage(spark, lake, cfg_for, tmp_path):
    data = tmp_path / "data"
    (data / "crowdflower").mkdir(parents=True)
    (data / "crowdflower" / "labels.csv").write_text(labels_csv(), encoding="utf-8", newline="")
    backbone = tmp_path / "bert"
    save_random_backbone(backbone, "bert")
    stages = "[simulate, ingest, pin_features, train_teacher, score_impressions, student_features, train_student]"
    cfg = cfg_for(
        f"nightly.date={DAY}",
        f"nightly.stages={stages}",
        f"ingest.data_root={data}",
        "ingest.sources=[crowdflower]",
        "simulate.impressions_per_day=300",
        "simulate.n_pins=100",
        "simulate.n_queries=20",
        "simulate.n_users=30",
        "simulate.n_boards=8",
        "simulate.n_topics=4",
        "simulate.n_labels=60",
        "simulate.partitions=2",
        *teacher_overrides(backbone, "teacher.int8_calibration_pairs=16"),
        "teacher.gate.enabled=false",  # random tiny models: this test is about text, not quality
        f"student_features.encoder_path={backbone}",
        "student.model.hidden=[16]",
        "student.training.epochs=2",
        "student.gate.enabled=false",
    )
    report = nightly.run(spark, cfg)
    assert [s.status for s in report.stages] == [PR.SUCCEEDED] * 7, report.line()

    quarantined = lake.read(spark, "quarantine").filter(F.col("source") == "crowdflower").collect()
    assert len(quarantined) == 8 and {r.reason for r in quarantined} == {"NUL character in text"}
    labels = lake.read(spark, "human_labels").filter(F.col("source") == "crowdflower")
    assert labels.count() == 8 * (len(ODD) + 2 * 3)
    stored = {r.query for r in labels.select("query").distinct().collect()}
    assert {query for query, _, _ in ODD} <= stored  # the raw query, as the user wrote it

    titles = {r.title for r in lake.read(spark, "pin_text_features").select("title").collect()}
    assert "سجادة صلاة حمراء Prayer rug 0" in titles and "Café table élégant 0" in titles  # NFKC: composed
    assert "LAMP 123 0" in titles  # fullwidth folded
    features = lake.read(spark, "student_features")
    keyed = {r.query for r in features.select("query").distinct().collect()}
    assert {"café table", "fullwidth lamp", "سجادة صلاة", "非常に 良い テーブル"} <= keyed  # NFKC, lower-case
    rug = features.filter(F.col("query") == f"rug {FAMILY} family").collect()
    assert rug and all(r.bm25 > 0 for r in rug)  # "rug" and "family" matched through the emoji
    cafe = features.filter(F.col("query") == "café table").collect()
    assert cafe and all(r.bm25 > 0 for r in cafe)  # the query and the pin text in one normal form
    assert lake.read(spark, "text_embeddings").count() > 0

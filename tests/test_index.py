"""Item embeddings, sharded FAISS indexes built by Spark, their versions, and serving from them.

The models are real two-tower models (untrained: seeded initial weights) published through the
registry as train_two_tower publishes them; embed_pins and build_index run as jobs on a real
Delta lake."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from jobs import build_index, embed_pins, index_admin, nightly_report, retrieve
from jobs.config import load_config
from models.artifacts.registry import Registry, RegistryError
from models.artifacts.storage import Storage
from models.retrieval.ann import merge_top_k, recall_at, resolve_factory
from models.retrieval.retriever import Retriever
from models.retrieval.serving import IndexVersions, Retrieval, VersionMismatch
from models.retrieval.sharded_index import IndexIntegrityError
from models.retrieval.two_tower import MODEL_FOLDER, load_model, new_model
from models.retrieval.two_tower_settings import TwoTowerSettings
from runtime.lake import Lake
from schemas import pin_embeddings as PE
from tests.retrieval_lake import publish, write_sequences

# The tests below share one lake where two model versions were embedded and indexed by the real
# jobs (about a minute of Spark): in `make test-slow`, which CI runs too.
SPARK_BUILT = pytest.mark.slow

N_ITEMS = 300
SOURCE = "s3rec_tiny"
USERS = {f"u{u}": [f"p{(7 * u + 3 * k) % N_ITEMS:04d}" for k in range(5)] for u in range(6)}


# ------------------------------------------------------------------ pure parts


def test_merged_shards_answer_as_one_exact_index():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 8)).astype(np.float32)
    queries = rng.standard_normal((20, 8)).astype(np.float32)
    ids = np.arange(1000, 1500)
    whole = faiss.IndexIDMap(faiss.IndexFlatIP(8))
    whole.add_with_ids(vectors, ids)
    parts = []
    for chunk in np.array_split(np.arange(500), 3):
        shard = faiss.IndexIDMap(faiss.IndexFlatIP(8))
        shard.add_with_ids(vectors[chunk], ids[chunk])
        parts.append(shard.search(queries, 10))
    scores, found = merge_top_k(parts, 10)
    want_scores, want = whole.search(queries, 10)
    np.testing.assert_array_equal(found, want)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    assert recall_at(found, want) == 1.0
    assert recall_at(found[:, ::-1][:, :5], want) == 0.5


def test_padding_never_beats_a_real_answer():
    real = (np.array([[0.1]], np.float32), np.array([[7]]))
    padded = (np.array([[9.9, 9.9]], np.float32), np.array([[-1, -1]]))  # FAISS's "no result"
    assert merge_top_k([padded, real], 2)[1].tolist() == [[7, -1]]


def test_the_factory_follows_the_corpus_size():
    assert resolve_factory("IVF{nlist},Flat", 999, flat_below=1000) == "Flat"
    assert resolve_factory("IVF{nlist},Flat", 1_000_000, flat_below=1000) == "IVF4096,Flat"
    assert resolve_factory("IVF{nlist},Flat", 300, flat_below=0) == "IVF4,Flat"  # >= 39 training points a list
    assert resolve_factory("HNSW32", 10**7, flat_below=1000) == "HNSW32"


# ------------------------------------------------------------------ the jobs, on one lake


# v0001: feature crossing in both towers (DHEN items, MaskNet users; their projections not zero,
# as trained). v0002: two members of 16 served as one (two_tower.model.members), each with three
# vectors per user (two_tower.model.user_vectors): one index search per user vector, merged
WIDTHS = {"v0001": 16, "v0002": 32}


def publish_model(lake: Lake, seed: int, members: int = 1, user_vectors: int = 1, crossing: bool = False) -> str:
    torch.manual_seed(seed)
    settings = TwoTowerSettings(dim=16, max_len=6, layers=1, heads=2, members=members, user_vectors=user_vectors)
    if crossing:
        settings = dataclasses.replace(settings, item_crossing="dhen", user_crossing="masknet")
    model = new_model(N_ITEMS, settings).eval()
    if crossing:
        with torch.no_grad():
            model.item_tower.crossing.out.weight.normal_()
            model.user_tower.crossing.out.weight.normal_()
    return publish(lake, model, SOURCE)


def cfg(lake: Lake, *overrides: str):
    return load_config("local", overrides=[f"lake.root={lake.root}", "index.partitions=3", *overrides])


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """Two model versions, each embedded and indexed (v1 exact, v2 IVF), v2 promoted."""
    lake = Lake.at(str(tmp_path_factory.mktemp("index") / "lake"))
    write_sequences(spark, lake, USERS, SOURCE)
    reports = {}
    for seed, members, vectors, crossing, extra in (
        (1, 1, 1, True, ()),
        (2, 2, 3, False, ("index.flat_below=0", "index.search_params=nprobe=4")),
    ):
        version = publish_model(lake, seed, members, vectors, crossing)
        c = cfg(lake, f"index.model_version={version}", *extra)
        reports[version] = (embed_pins.run(spark, c), build_index.run(spark, c))
    return lake, reports


@SPARK_BUILT
def test_embeddings_are_the_item_towers_vectors(spark, built):
    lake, reports = built
    registry = Registry(lake.artifacts_path())
    for version, (embedded, _) in reports.items():
        assert (embedded.rows, embedded.dim) == (N_ITEMS, WIDTHS[version])
        rows = lake.read(spark, "pin_embeddings").filter(f"model_version = 'two_tower/{version}'").collect()
        got = {r[PE.ITEM_INDEX]: (r[PE.PIN_ID], r[PE.EMBEDDING]) for r in rows}
        assert sorted(got) == list(range(1, N_ITEMS + 1))
        want = load_model(registry.path("two_tower", version) / MODEL_FOLDER).all_items().detach().numpy()
        np.testing.assert_allclose(np.array([got[i][1] for i in range(1, N_ITEMS + 1)]), want, atol=1e-6)
        assert all(got[i][0] == f"p{i - 1:04d}" for i in got)


@SPARK_BUILT
def test_reembedding_rewrites_the_same_rows(spark, built):
    lake, _ = built
    before = lake.read(spark, "pin_embeddings").filter("model_version = 'two_tower/v0001'")
    before = before.collect()
    embed_pins.run(spark, cfg(lake, "index.model_version=v0001", "index.partitions=2"))
    after = lake.read(spark, "pin_embeddings").filter("model_version = 'two_tower/v0001'")
    assert sorted(map(tuple, after.collect())) == sorted(map(tuple, before))


@SPARK_BUILT
def test_the_manifest_describes_every_shard(built):
    lake, reports = built
    versions = IndexVersions(lake.artifacts_path(), "two_tower_items")
    for model_version, (_, report) in reports.items():
        d = versions.describe(report.version)
        assert (d.model, d.dim, d.metric, d.faiss_version) == (
            f"two_tower/{model_version}",
            WIDTHS[model_version],
            "inner_product",
            faiss.__version__,
        )
        assert d.rows == sum(s.rows for s in d.shards) == N_ITEMS
        assert len(d.shards) == 3  # one per partition
        ranges = sorted((s.min_id, s.max_id) for s in d.shards)
        assert ranges[0][0] == 1 and ranges[-1][1] == N_ITEMS
        assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # disjoint id ranges
        folder = versions.indexes.path("two_tower_items", report.version)
        for s in d.shards:
            index = faiss.read_index(str(folder / s.file))
            assert index.ntotal == s.rows
        assert d.recall_at_10 >= 0.95 and report.description == d
    assert versions.describe("v0001").factory == "Flat"
    assert versions.describe("v0002").factory == "IVF4,Flat" and versions.describe("v0002").search_params == "nprobe=4"
    assert [(v.version, v.current) for v in versions.list()] == [("v0001", False), ("v0002", True)]
    assert Registry(lake.artifacts_path()).current("two_tower") == "v0002"  # promoted together


@SPARK_BUILT
@pytest.mark.parametrize("version", ["v0001", "v0002"])  # crossing towers; an ensemble of multi-vector users
def test_retrieval_matches_exact_scoring_of_the_promoted_model(built, version):
    lake, _ = built
    versions = IndexVersions(lake.artifacts_path(), "two_tower_items")
    try:
        versions.promote(version)  # index vN was built from model vN
        retrieval = Retrieval.open(lake.artifacts_path(), "two_tower_items")
        exact = Retriever(load_model(Registry(lake.artifacts_path()).path("two_tower", version) / MODEL_FOLDER))
        for pins in USERS.values():
            got = retrieval.top_k(pins, 10)
            history = retrieval.history_row(pins)
            top, scores = exact.top_k(history, 10)
            assert [c.pin for c in got] == [f"p{int(i) - 1:04d}" for i in top[0]]
            np.testing.assert_allclose([c.score for c in got], scores[0].numpy(), atol=1e-5)
            assert not {c.pin for c in got} & set(pins)  # engaged pins are never returned
    finally:
        versions.promote("v0002")


@SPARK_BUILT
def test_rollback_restores_the_previous_versions_results_exactly(built):
    lake, _ = built
    versions = IndexVersions(lake.artifacts_path(), "two_tower_items")

    def results():
        retrieval = Retrieval.open(lake.artifacts_path(), "two_tower_items")
        return {user: retrieval.top_k(pins, 10) for user, pins in USERS.items()}

    try:
        versions.promote("v0001")
        first = results()
        versions.promote("v0002")
        second = results()
        assert first != second
        version, d = versions.rollback()
        assert (version, d.model, Registry(lake.artifacts_path()).current("two_tower")) == (
            "v0001",
            "two_tower/v0001",
            "v0001",
        )
        assert results() == first  # same pins, same float scores
    finally:
        versions.promote("v0002")


@pytest.fixture
def copy_of(built, tmp_path):
    lake, _ = built
    shutil.copytree(lake.artifacts_path(), tmp_path / "artifacts")
    return tmp_path / "artifacts"


def shard_path(artifacts, version="v0002", n=0):
    d = IndexVersions(artifacts, "two_tower_items").describe(version)
    return artifacts / "indexes" / "two_tower_items" / version / d.shards[n].file


@SPARK_BUILT
def test_a_corrupt_shard_is_refused(copy_of):
    path = shard_path(copy_of, n=1)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexIntegrityError, match=rf"shard {path.name} is corrupt: its sha256"):
        Retrieval.open(copy_of, "two_tower_items")


@SPARK_BUILT
def test_a_missing_shard_is_refused(copy_of):
    path = shard_path(copy_of, n=2)
    path.unlink()
    with pytest.raises(IndexIntegrityError, match=rf"shard {path.name} is missing"):
        Retrieval.open(copy_of, "two_tower_items")


@SPARK_BUILT
def test_a_model_that_is_not_the_indexs_is_refused(copy_of):
    Registry(copy_of).promote("two_tower", "v0001")  # the model alone, behind the index's back
    with pytest.raises(
        VersionMismatch, match=r"holds the item vectors of two_tower/v0002, but the promoted two_tower model is v0001"
    ):
        Retrieval.open(copy_of, "two_tower_items")


@SPARK_BUILT
def test_a_changed_model_file_is_refused(copy_of):
    weights = next((copy_of / "two_tower" / "v0002" / MODEL_FOLDER).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(RegistryError, match=r"the promoted user model: two_tower/v0002: model/"):
        Retrieval.open(copy_of, "two_tower_items")


@SPARK_BUILT
def test_the_report_names_a_damaged_production_and_exits_1(spark, copy_of):
    """What ``pinpipe retrieve`` refuses, the report (where an operator looks first) shows; the
    command exits 1 (its own process: a job's main stops the session it ran in)."""
    path = shard_path(copy_of, n=0)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    sets = ["--set", f"lake.root={copy_of.parent}", "--set", "nightly.date=2026-11-01"]
    written = nightly_report.run(spark, load_config("local", overrides=sets[1::2]))
    warning = (
        f"report: WARNING production index two_tower_items/v0002 is damaged: RegistryError: "
        f"two_tower_items/v0002: {path.name} is missing or changed"
    )
    assert warning in written.line().splitlines()
    assert [h.artifact for h in written.damaged] == ["index two_tower_items/v0002"]  # its model is intact
    page = Path(written.path).read_text()
    assert "Production is damaged: index two_tower_items/v0002</b>" in page
    assert "<td>two_tower/v0002</td><td>intact (checksums verified)</td>" in page
    command = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "report", *sets], capture_output=True, text=True, timeout=300
    )
    assert command.returncode == 1 and warning in command.stdout.splitlines()


def test_two_builds_of_the_same_vectors_write_the_same_shards(spark, tmp_path, s3_server):
    """The shards are a function of the ids, not of how Spark happened to split the vectors (a
    killed-and-resumed nightly writes the same index as an uninterrupted one), nor of where they
    are stored: the first build writes into a local folder, the second's tasks upload theirs to an
    S3 server. Enough vectors that Spark's range partitioning would only sample them."""
    rng = np.random.default_rng(0)
    rows = [(i, rng.standard_normal(8).astype(np.float32).tolist()) for i in range(1, 5001)]
    vectors = spark.createDataFrame(rows, f"{PE.ITEM_INDEX} long, {PE.EMBEDDING} array<float>")
    built_twice, stores = [], [Storage(str(tmp_path / "local")), s3_server.storage(tmp_path / "cache")]
    for store, layout in zip(stores, (vectors.repartition(1), vectors.repartition(7, PE.EMBEDDING)), strict=True):
        plan = build_index.transform(
            build_index.IndexInputs(layout, "two_tower", "v0001"),
            factory="IVF16,Flat",
            flat_below=0,
            search_params="nprobe=16",
            train_sample=1000,
            recall_queries=20,
            seed=0,
            partitions=3,
        )
        built_twice.append(build_index.build_shards(plan, store))
    first, second = built_twice
    assert first.factory == "IVF16,Flat" and first.rows == 5000
    assert [(s.file, s.min_id, s.max_id) for s in first.shards] == [
        ("shard-00000.faiss", 1, 1667),
        ("shard-00001.faiss", 1668, 3334),
        ("shard-00002.faiss", 3335, 5000),
    ]
    assert first.shards == second.shards  # the same files, byte for byte
    for store in stores:
        assert store.files() == [s.file for s in first.shards]
        assert [store.sha256(s.file) for s in first.shards] == [s.sha256 for s in first.shards]
    assert first.recall_at_10 == second.recall_at_10


@SPARK_BUILT
def test_an_index_below_the_recall_gate_is_not_published(spark, built):
    lake, _ = built
    versions = IndexVersions(lake.artifacts_path(), "two_tower_items")
    before = versions.indexes.versions("two_tower_items")
    c = cfg(lake, "index.model_version=v0002", "index.flat_below=0", "index.search_params=nprobe=1")
    with pytest.raises(build_index.IndexRecallTooLow, match=r"not published: recall@10 of the sharded IVF4,Flat"):
        build_index.run(spark, c)
    assert versions.indexes.versions("two_tower_items") == before
    store = versions.indexes.storage
    folders = [n for n in store.listdir("two_tower_items") if n.startswith("v")]
    assert folders == before  # nothing half-written
    assert store.listdir("two_tower_items/.claims") == before  # its claim released


@SPARK_BUILT
def test_the_commands(spark, built, capsys):
    lake, _ = built
    index_admin.main(["--set", f"lake.root={lake.root}", "list"])
    listing = capsys.readouterr().out
    assert "* v0002    two_tower/v0002" in listing and "  v0001    two_tower/v0001" in listing
    report = retrieve.run(spark, cfg(lake), user="u3", k=4)
    assert report.index == "two_tower_items/v0002" and len(report.results) == 4 and report.history == 5
    assert report.line().splitlines()[-1].startswith("retrieve: user=u3 history=5")
    with pytest.raises(ValueError) as unknown:
        retrieve.run(spark, cfg(lake), user="nobody", k=4)
    message = str(unknown.value)
    assert message.startswith("user 'nobody' has no engagements in source 's3rec_tiny' (the promoted model's)")
    assert re.search(r"its user ids look like 'u\d'$", message)  # an id of that source, to show the form
    with pytest.raises(SystemExit):
        index_admin.main(["--set", f"lake.root={lake.root}", "promote", "v0099"])
    assert "no version 'v0099'" in capsys.readouterr().err

"""The README's measured table is exactly what ``bench/readme_table.py`` renders from the
records under ``reports/``: a figure cannot be edited by hand, or a record dropped, unnoticed."""

import json

from bench import readme_table
from bench.record import ROOT, Figure, Record, load_record, write_record


def test_readme_table_matches_the_records():
    readme = (ROOT / "README.md").read_text()
    assert readme_table.replace_table(readme, readme_table.render(readme_table.records())) == readme


def test_records_round_trip_and_mark_what_is_not_measured(tmp_path):
    record = Record(
        "x",
        "a thing",
        "bench/x.py",
        [Figure("rate", 12.5, "pairs/s", headline=True), Figure("total", 3600.0, "s", "projection")],
    )
    path = write_record(record, tmp_path)
    raw = json.loads(path.read_text())
    assert raw["commit"] and raw["machine"]["cores"] >= 1 and raw["machine"]["torch"]
    again = load_record(path)
    assert again.figures == record.figures
    table = readme_table.render([again])
    assert "rate 12.5 pairs/s" in table and "(projection)" not in table  # only headline figures
    assert "total 3,600 s (projection)" in Figure("total", 3600.0, "s", "projection").text()


def test_a_record_names_the_commit_its_bench_started_at(tmp_path, monkeypatch):
    from bench import record as rec

    def written_commit() -> str:
        return json.loads(write_record(Record("x", "t", "c", [Figure("f", 1.0)]), tmp_path).read_text())["commit"]

    monkeypatch.setattr(rec, "COMMIT_AT_START", "a" * 40)
    monkeypatch.setattr(rec, "git_commit", lambda: "a" * 40)
    assert written_commit() == "a" * 40
    monkeypatch.setattr(rec, "git_commit", lambda: "b" * 40)  # a commit landed while the bench ran
    commit = written_commit()
    assert commit.startswith("a" * 40) and "b" * 40 in commit

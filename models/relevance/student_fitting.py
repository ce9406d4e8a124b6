"""Fitting and evaluating a student on collected rows: plain pandas frames in (features, teacher
probabilities, human levels), a trained student's files, metrics and report out. The job
``jobs.train_student`` collects the rows in Spark and publishes what this returns."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.relevance.baselines import BM25, CONSTANT, relevance_baselines
from models.relevance.embedding_lookup import EmbeddingLookup
from models.relevance.levels import LevelThresholds
from models.relevance.metrics import RelevanceReport, evaluate_with_cuts, quadratic_weighted_kappa
from models.relevance.student_settings import StudentSettings, StudentTrainSettings
from schemas import student_features as SF

LEVEL = "level"  # human relevance on the student's 1..num_levels
PROBS = "teacher_probs"
IMPRESSIONS, CLICKS, SAVES = "impressions", "clicks", "saves"
DECODING_FILE = "decoding.json"


def student_data(rows: pd.DataFrame, lookup: EmbeddingLookup, query_index: dict[str, int], num_levels: int):
    """``StudentData`` of rows carrying features, optional teacher probabilities and human level."""
    from models.relevance.student_scoring import feature_arrays
    from models.relevance.student_training import StudentData

    query, pin, dense = feature_arrays(rows, lookup)
    has_teacher = rows[PROBS].notna().to_numpy() if PROBS in rows else np.zeros(len(rows), bool)
    probs = np.zeros((len(rows), num_levels), dtype=np.float32)
    if has_teacher.any():
        probs[has_teacher] = np.stack(rows.loc[has_teacher, PROBS].to_numpy()).astype(np.float32)
    shown = rows[IMPRESSIONS].fillna(0).to_numpy(np.float32) if IMPRESSIONS in rows else np.zeros(len(rows), np.float32)
    safe = np.maximum(shown, 1.0)

    def rate(col: str) -> np.ndarray:
        return (rows[col].fillna(0).to_numpy(np.float32) / safe) if col in rows else np.zeros(len(rows), np.float32)

    human = rows[LEVEL].fillna(0).to_numpy(np.int64) - 1 if LEVEL in rows else np.full(len(rows), -1)
    return StudentData(
        query=query,
        pin=pin,
        dense=dense,
        query_ids=rows[SF.QUERY].map(query_index).to_numpy(np.int64),
        teacher_probs=probs,
        has_teacher=has_teacher,
        human_level=human,
        click_rate=rate(CLICKS),
        save_rate=rate(SAVES),
        impressions=shown,
    )


@dataclass
class TrainedStudent:
    folder_files: dict[str, bytes]
    metrics: dict[str, Any]
    report: str
    baselines: dict[str, RelevanceReport]  # the gate's floor on the test rows (models.relevance.baselines)


def _report(rows: pd.DataFrame, probs: np.ndarray, levels: list[int], cuts: LevelThresholds) -> RelevanceReport:
    return evaluate_with_cuts(rows[SF.QUERY].to_numpy(), rows[LEVEL].to_numpy(), probs, levels, cuts)


def _baselines(val: pd.DataFrame, test: pd.DataFrame, levels: list[int]) -> dict[str, RelevanceReport]:
    """BM25 (the pair's feature) and the constant level on the test rows (``models.relevance.baselines``)."""
    return relevance_baselines(
        val[LEVEL].to_numpy(),
        val[SF.BM25].to_numpy(),
        test[SF.QUERY].to_numpy(),
        test[LEVEL].to_numpy(),
        test[SF.BM25].to_numpy(),
        levels,
    )


def _teacher_report(val: pd.DataFrame, test: pd.DataFrame, levels: list[int]) -> RelevanceReport | None:
    """The teacher on the test rows it labeled (cuts fit on its validation scores)."""
    val, test = val[val[PROBS].notna()], test[test[PROBS].notna()]
    if val.empty or test.empty:
        return None
    lv = np.asarray(levels, dtype=np.float64)
    cuts = LevelThresholds.fit(np.stack(val[PROBS].to_numpy()) @ lv, val[LEVEL], levels)
    return _report(test, np.stack(test[PROBS].to_numpy()).astype(np.float64), levels, cuts)


def fit_student(
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    test_rows: pd.DataFrame,
    lookup: EmbeddingLookup,
    *,
    model_settings: StudentSettings,
    training: StudentTrainSettings,
) -> TrainedStudent:
    """Train on ``train_rows`` (early stopping on ``val_rows`` kappa), fit the level cuts on
    validation, and score ``test_rows`` once: the student, the teacher and BM25."""
    import torch

    from models.relevance.student import build_student, save_student
    from models.relevance.student_scoring import predict_relevance
    from models.relevance.student_training import train_student

    levels = list(range(1, model_settings.num_levels + 1))
    queries = pd.concat([train_rows[SF.QUERY], val_rows[SF.QUERY], test_rows[SF.QUERY]]).unique()
    index = {q: i for i, q in enumerate(sorted(queries))}
    train, val, test = (
        student_data(rows, lookup, index, model_settings.num_levels) for rows in (train_rows, val_rows, test_rows)
    )
    torch.manual_seed(training.seed)
    model = build_student(model_settings, train.query.shape[1], train.dense.shape[1])
    model.inputs.fit(train.dense)

    def predict(data) -> np.ndarray:
        return predict_relevance(model, data.query, data.pin, data.dense, training.eval_batch_size)

    def validate(_model) -> float:
        return quadratic_weighted_kappa(val_rows[LEVEL], predict(val).argmax(1) + 1, min(levels), max(levels))

    result = train_student(model, train, training, validate)
    lv = np.asarray(levels, dtype=np.float64)
    val_probs = predict(val)
    cuts = LevelThresholds.fit(val_probs @ lv, val_rows[LEVEL], levels)
    test_report = _report(test_rows, predict(test), levels, cuts)
    teacher = _teacher_report(val_rows, test_rows, levels)
    baselines = _baselines(val_rows, test_rows, levels)
    bm25 = baselines[BM25]
    metrics = {
        "test": test_report.to_dict(),
        "validation": _report(val_rows, val_probs, levels, cuts).to_dict(),
        "teacher_on_test": teacher.to_dict() if teacher else None,
        "bm25_on_test": bm25.to_dict(),
        "constant_on_test": baselines[CONSTANT].to_dict(),
        "best_epoch": result.best_epoch,
        "history": result.history,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_student(model, Path(tmp) / "student")
        (folder / DECODING_FILE).write_text(json.dumps(cuts.to_dict(), indent=2))
        files = {p.name: p.read_bytes() for p in folder.iterdir()}
    table = test_report.table(f"student test ({len(test_rows):,} human labels)")
    table += "\n\n" + bm25.table("BM25, same rows")
    table += "\n\n" + baselines[CONSTANT].table("the most frequent validation level, same rows")
    if teacher is not None:
        table += "\n\n" + teacher.table(f"teacher, same rows it labeled ({teacher.n:,})")
    return TrainedStudent(files, metrics, table, baselines)


def evaluate_published(folder: Path, rows: pd.DataFrame, lookup: EmbeddingLookup) -> RelevanceReport:
    """A published student (its weights and level cuts, read from ``folder``) on ``rows``: the
    same evaluation for the new version and for production."""
    from models.relevance.student_scoring import StudentScorer

    scorer = StudentScorer(folder)
    cuts = LevelThresholds(**json.loads((folder / DECODING_FILE).read_text()))
    probs, _ = scorer.score(rows, lookup)
    return _report(rows, probs.astype(np.float64), [int(v) for v in scorer.levels], cuts)

"""Okapi BM25 over (query, document) pairs: the lexical baseline the teacher must beat.

``BM25.fit(documents)`` learns document frequencies and the mean length; ``score`` gives the
BM25 score of a query against each document (``models.relevance.levels.LevelThresholds`` turns scores into
graded levels).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str | None) -> list[str]:
    return _TOKEN.findall((text or "").lower())


@dataclass
class BM25:
    k1: float = 1.2
    b: float = 0.75
    doc_freq: Counter = field(default_factory=Counter)
    n_docs: int = 0
    mean_length: float = 0.0

    def fit(self, documents: Sequence[str | None]) -> BM25:
        tokenized = [tokenize(d) for d in documents]
        self.n_docs = len(tokenized)
        if self.n_docs == 0:
            raise ValueError("BM25 needs at least one document")
        self.mean_length = sum(len(t) for t in tokenized) / self.n_docs or 1.0
        self.doc_freq = Counter(term for tokens in tokenized for term in set(tokens))
        return self

    def idf(self, term: str) -> float:
        df = self.doc_freq.get(term, 0)
        return math.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))

    def score(self, query: str | None, document: str | None) -> float:
        if self.n_docs == 0:
            raise ValueError("fit BM25 before scoring")
        counts = Counter(tokenize(document))
        length = sum(counts.values())
        norm = self.k1 * (1 - self.b + self.b * length / self.mean_length)
        total = 0.0
        for term in set(tokenize(query)):
            tf = counts.get(term, 0)
            if tf:
                total += self.idf(term) * tf * (self.k1 + 1) / (tf + norm)
        return total

    def score_pairs(self, queries: Sequence[str | None], documents: Sequence[str | None]) -> np.ndarray:
        return np.array([self.score(q, d) for q, d in zip(queries, documents, strict=False)], dtype=np.float64)

import math

import pytest

from models.relevance.bm25 import BM25, tokenize


def test_tokenize():
    assert tokenize("Wine-Rack, 6 Bottles!") == ["wine", "rack", "6", "bottles"]
    assert tokenize(None) == []


def test_score_matches_the_formula():
    docs = ["oak wine rack", "wine glass set", "steel shelf"]
    bm = BM25(k1=1.2, b=0.75).fit(docs)
    # "wine" is in 2 of 3 documents; doc 0 has 3 tokens, mean length 8/3
    idf = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    norm = 1.2 * (1 - 0.75 + 0.75 * 3 / (8 / 3))
    assert bm.score("wine", docs[0]) == pytest.approx(idf * 1 * 2.2 / (1 + norm))
    assert bm.score("wine rack", docs[0]) > bm.score("wine rack", docs[1]) > bm.score("wine rack", docs[2]) == 0.0
    assert bm.score("wine wine", docs[0]) == bm.score("wine", docs[0])  # query terms count once


def test_unfitted_and_empty():
    with pytest.raises(ValueError, match="fit BM25"):
        BM25().score("a", "a")
    with pytest.raises(ValueError, match="at least one"):
        BM25().fit([])

import pickle

import numpy as np
import pyarrow as pa
import pytest

from models.relevance.embedding_lookup import EmbeddingLookup, MissingEmbeddings


def lookup() -> EmbeddingLookup:
    return EmbeddingLookup(["h2", "h0", "h1"], np.array([[2.0, 2.5], [0.0, 0.5], [1.0, 1.5]]))


def test_gather_returns_each_hash_own_row_from_any_column_kind():
    table = lookup()
    expected = np.array([[1.0, 1.5], [2.0, 2.5], [1.0, 1.5], [0.0, 0.5]], dtype=np.float32)
    hashes = ["h1", "h2", "h1", "h0"]
    for column in (
        hashes,
        np.array(hashes, dtype=object),
        pa.array(hashes),
        pa.chunked_array([hashes[:1], hashes[1:]]),
    ):
        got = table.gather(column)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_unknown_hash_is_an_error_that_counts_and_names_one():
    with pytest.raises(MissingEmbeddings, match=r"2 rows name texts without an embedding .* e\.g\. text hash nope"):
        lookup().gather(["h0", "nope", "nope"])


def test_survives_pickling_as_a_broadcast_does():
    table = lookup()
    table.gather(["h0"])  # builds the hash index, which is not shipped
    copy = pickle.loads(pickle.dumps(table))
    np.testing.assert_array_equal(copy.gather(["h2", "h0"]), table.gather(["h2", "h0"]))


def test_rejects_duplicate_keys_and_mismatched_shapes():
    with pytest.raises(ValueError, match="duplicate"):
        EmbeddingLookup(["a", "a"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2 keys for a matrix of shape"):
        EmbeddingLookup(["a", "b"], np.zeros((3, 3)))

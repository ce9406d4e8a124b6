"""Arrow list columns from NumPy matrices, for ``mapInArrow`` outputs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def float32_lists(matrix: np.ndarray) -> pa.ListArray:
    """(n, width) numbers -> an Arrow list<float> column of n rows, each row's width values."""
    n, width = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix, np.float32).reshape(-1)))

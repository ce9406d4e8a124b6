"""Perceptual image signatures (difference hash) as a pandas UDF.

The signature is a 64-bit dHash of the image's 9x8 grayscale thumbnail, written
``dh:<16 hex>``: re-encodes, resizes and small edits of one image keep the same signature, so
it keys caption caches and near-duplicate removal. A file that cannot be read or decoded gives
a null signature and an error reason instead of failing the task.
"""

from __future__ import annotations

import pandas as pd
from PIL import Image
from pyspark.sql import Column
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import StringType, StructField, StructType

from udfs.images import try_open_image

SIGNATURE = "signature"
ERROR = "error"
RESULT_TYPE = StructType([StructField(SIGNATURE, StringType()), StructField(ERROR, StringType())])


def dhash(image: Image.Image) -> str:
    """``dh:`` + 16 hex digits: bit i is set where pixel i is brighter than its right neighbour."""
    small = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    px = list(small.getdata())
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (px[row * 9 + col] > px[row * 9 + col + 1])
    return f"dh:{bits:016x}"


def image_signature(path: str | None) -> tuple[str | None, str | None]:
    """(signature, None) for a readable image, (None, reason) otherwise."""
    image, error = try_open_image(path, mode="L", draft=(64, 64))
    return (dhash(image), None) if image is not None else (None, error)


def signatures(paths: pd.Series) -> pd.DataFrame:
    """Vectorised :func:`image_signature` over a batch of paths (the UDF's pure core)."""
    results = [image_signature(p) for p in paths]
    return pd.DataFrame(results, columns=[SIGNATURE, ERROR], index=paths.index)


@pandas_udf(RESULT_TYPE)
def _signature_udf(paths: pd.Series) -> pd.DataFrame:
    return signatures(paths)


def image_signature_col(path: Column) -> Column:
    """A struct column ``{signature, error}`` for the image at ``path``."""
    return _signature_udf(path)

import pandas as pd
import pytest
from PIL import Image

from udfs.image_signature import image_signature, signatures
from udfs.images import MAX_PIXELS


def gradient(size=(64, 48), flip=False):
    img = Image.new("RGB", size)
    w, h = size
    img.putdata(
        [((x * 255) // w if not flip else 255 - (x * 255) // w, (y * 255) // h, 90) for y in range(h) for x in range(w)]
    )
    return img


def test_reencoded_and_resized_image_keeps_its_signature(tmp_path):
    gradient().save(tmp_path / "a.png")
    gradient().resize((128, 96)).save(tmp_path / "a_big.jpg", quality=80)
    gradient(flip=True).save(tmp_path / "b.png")
    a, err = image_signature(str(tmp_path / "a.png"))
    assert err is None and a.startswith("dh:") and len(a) == 19
    assert image_signature(str(tmp_path / "a_big.jpg"))[0] == a
    assert image_signature(str(tmp_path / "b.png"))[0] != a


def file_with(content: bytes):
    def make(folder):
        (folder / "f.jpg").write_bytes(content)
        return str(folder / "f.jpg")

    return make


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: None, "missing image path"),
        (lambda d: str(d / "nope.jpg"), "image not found"),
        (file_with(b""), "not a decodable image"),  # zero bytes
        (file_with(b"hello, not an image"), "not a decodable image"),
        (lambda d: str(d), "unreadable image"),  # a folder
    ],
)
def test_broken_inputs_give_a_reason_not_an_exception(tmp_path, make, reason):
    sig, err = image_signature(make(tmp_path))
    assert sig is None and err.startswith(reason)


def test_truncated_and_huge_images(tmp_path):
    gradient((256, 256)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    sig, err = image_signature(str(tmp_path / "cut.jpg"))
    assert sig is None and err.startswith("unreadable image")
    # A PNG header claiming 20,000 x 20,000 px is refused from its size, before decoding.
    side = 20_000
    assert side * side > MAX_PIXELS
    Image.new("1", (side, side)).save(tmp_path / "huge.png", optimize=False)
    sig, err = image_signature(str(tmp_path / "huge.png"))
    assert sig is None and err.startswith("image too large")


def test_batch_keeps_index_and_order(tmp_path):
    gradient().save(tmp_path / "a.png")
    out = signatures(pd.Series([str(tmp_path / "a.png"), None], index=[5, 9]))
    assert list(out.index) == [5, 9]
    assert out.loc[5, "error"] is None and out.loc[9, "signature"] is None


def test_training_and_serving_group_pins_by_the_same_signature(spark, tmp_path):
    """One definition, both paths: the signature ingest computes (``image_signature_col``) is the
    key pin_features captions once per image (training text) and the key serving_corpus serves
    one pin per image by; a re-encoded, resized copy falls in the same group on both paths."""
    import datetime as dt

    from pyspark.sql import functions as F

    from jobs import pin_features, serving_corpus
    from schemas import TABLES
    from schemas import pins as P
    from schemas import serving_corpus as SC
    from udfs.image_signature import SIGNATURE, image_signature_col

    gradient().save(tmp_path / "a.png")
    gradient().resize((128, 96)).save(tmp_path / "a_copy.jpg", quality=80)
    gradient(flip=True).save(tmp_path / "b.png")
    paths = spark.createDataFrame(
        [("p_a", str(tmp_path / "a.png")), ("p_copy", str(tmp_path / "a_copy.jpg")), ("p_b", str(tmp_path / "b.png"))],
        "pin_id string, image_path string",
    )
    pins = paths.withColumn(P.IMAGE_SIGNATURE, image_signature_col(F.col(P.IMAGE_PATH))[SIGNATURE])

    to_caption = pin_features.images_to_caption(pins, None).collect()
    assert len(to_caption) == 2  # training: the copy shares the original's caption

    day = dt.date(2026, 11, 1)
    state = spark.createDataFrame(
        [("p_a", "click", 1.0, day), ("p_copy", "click", 3.0, day), ("p_b", "click", 2.0, day)],
        TABLES["engagement_decay"].schema,
    )
    signatures = pins.select(P.PIN_ID, P.IMAGE_SIGNATURE)
    rows = serving_corpus.ranked_corpus(state, signatures, {"click": 1.0}, 0.0, day).collect()
    served = {r[SC.PIN_ID]: (r[SC.SERVED], r[SC.DUPLICATE_OF]) for r in rows}
    assert served == {"p_copy": (True, None), "p_a": (False, "p_copy"), "p_b": (True, None)}  # serving: one per image

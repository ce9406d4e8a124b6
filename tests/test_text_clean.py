import pytest

from udfs.text_clean import clean_text, fix_mojibake


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("home dÃ©cor itâ€™ll be", "home décor it’ll be"),
        ("PortuguÃªs 日本語", "Português 日本語"),  # a non-cp1252 character elsewhere
        ("swings 360Ã‚Â° fast", "swings 360° fast"),  # mangled twice
        ("Idioma do Ã\x81udio", "Idioma do Áudio"),  # a byte cp1252 leaves undefined
        ("performance Ã¢â‚¬â€\x9d 3LCD", "performance — 3LCD"),  # an em dash, mangled twice
        ("café crème", "café crème"),  # real accents stay
        ("<li>\n\t\tOak &amp; <b>Pine</b>\n</li>", "Oak & Pine"),
        ("ﬁne Ｗide", "fine Wide"),  # NFKC
        ("   \n\t ", None),
        (None, None),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_fix_mojibake_leaves_clean_text_alone():
    assert fix_mojibake("naïve Ã la carte") == "naïve Ã la carte"


def test_queries_are_keyed_in_the_normal_form_pin_texts_are_cleaned_to(spark):
    """One query however its characters are composed or spelled (fullwidth, ligatures, combining
    marks), in the NFKC form clean_text gives pin texts; other scripts, emoji and nulls pass."""
    from pyspark.sql import functions as F

    from udfs.text_clean import normalize_query

    queries = [
        ("a", "Cafe\u0301   Table "),
        ("b", "café table"),
        ("c", "ＣＡＦÉ\tｔａｂｌｅ"),
        ("d", "ﬁne  rug"),
        ("e", "سجادة  صلاة"),
        ("f", "rug \U0001f469\u200d\U0001f467"),
        ("g", None),
    ]
    rows = spark.createDataFrame(queries, "k string, q string").select("k", normalize_query(F.col("q")).alias("n"))
    got = dict(rows.collect())
    assert got["a"] == got["b"] == got["c"] == "café table"
    assert got["d"] == "fine rug" and got["e"] == "سجادة صلاة" and got["f"] == "rug \U0001f469\u200d\U0001f467"
    assert got["g"] is None
    assert clean_text("Cafe\u0301 Table").lower() == got["a"]  # the pin side's form

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

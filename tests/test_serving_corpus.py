import datetime as dt
import random

import pytest

from jobs import serving_corpus
from jobs.config import load_config
from runtime.config import ConfigError
from schemas import TABLES
from schemas import engagement_decay as ED
from schemas import serving_corpus as SC
from schemas import user_engagements as UE

HALF_LIVES = {"click": 2.0, "save": 5.0}
DAY0 = dt.date(2024, 1, 1)
SETTINGS = (
    "serving_corpus.half_life_days={click: 2.0, save: 5.0}",
    "serving_corpus.weights={click: 1.0, save: 3.0}",
    "serving_corpus.min_score=0.0",
)


def events(seed=0, days=6, n=400):
    """Random engagements over ``days`` days; 'view' has no half-life, so it never counts."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        day = DAY0 + dt.timedelta(days=rng.randrange(days))
        kind = rng.choice(["click", "click", "save", "view"])
        at = dt.datetime.combine(day, dt.time(rng.randrange(24)))
        rows.append((f"u{rng.randrange(30)}", f"p{rng.randrange(25):02d}", kind, at, day, None, None, None, "sim"))
    return rows


def expected_state(rows, as_of):
    """The definition, summed in plain Python: 2 ** (-(as_of - day) / half-life) per event."""
    out = {}
    for _, pin, kind, _, day, *_ in rows:
        if kind in HALF_LIVES and day <= as_of:
            key = (pin, kind)
            out[key] = out.get(key, 0.0) + 2.0 ** (-(as_of - day).days / HALF_LIVES[kind])
    return out


def state_of(lake, spark, as_of):
    rows = lake.read(spark, "engagement_decay").filter(f"{ED.AS_OF} = DATE '{as_of}'").collect()
    return {(r[ED.PIN_ID], r[ED.EVENT_TYPE]): r[ED.SCORE] for r in rows}


def assert_close(got, want):
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key


def test_incremental_decay_equals_a_full_recompute_and_the_definition(spark, lake, cfg_for):
    rows = events()
    lake.replace_slice(spark.createDataFrame(rows, UE.USER_ENGAGEMENTS_V1), "user_engagements", "source = 'sim'")
    reports = {}
    for offset in (0, 1, 5):  # day 2 carries day 1 one day forward; day 6 carries day 2 four days
        day = DAY0 + dt.timedelta(days=offset)
        reports[offset] = serving_corpus.run(spark, cfg_for(*SETTINGS, f"serving_corpus.date={day}"))
    last = DAY0 + dt.timedelta(days=5)
    assert (
        reports[0].carried_from is None
        and reports[1].carried_from == DAY0
        and reports[5].carried_from == DAY0 + dt.timedelta(days=1)
    )
    incremental = state_of(lake, spark, last)
    assert_close(incremental, expected_state(rows, last))

    full_cfg = cfg_for(*SETTINGS, f"serving_corpus.date={last}", "serving_corpus.full_recompute=true")
    full_inputs = serving_corpus.read(spark, full_cfg)
    assert full_inputs.previous is None
    c = full_cfg.serving_corpus
    full = serving_corpus.transform(
        full_inputs, as_of=last, half_life_days=c.half_life_days, weights=c.weights, min_score=c.min_score
    )
    assert_close({(r[ED.PIN_ID], r[ED.EVENT_TYPE]): r[ED.SCORE] for r in full.state.collect()}, incremental)

    before = lake.read(spark, "serving_corpus").filter(f"{SC.DT} = DATE '{last}'")
    before = spark.createDataFrame(before.collect(), TABLES["serving_corpus"].schema)
    again = serving_corpus.run(spark, cfg_for(*SETTINGS, f"serving_corpus.date={last}"))  # a re-run: same rows
    after = lake.read(spark, "serving_corpus").filter(f"{SC.DT} = DATE '{last}'")
    assert again.pins == reports[5].pins and again.carried_from == reports[5].carried_from
    assert before.exceptAll(after).count() == 0 and after.exceptAll(before).count() == 0


def test_one_pin_is_served_per_image_signature_and_the_others_point_at_it(spark):
    day = dt.date(2024, 3, 1)
    state = spark.createDataFrame(
        [
            ("a", "click", 2.0, day),
            ("b", "click", 1.0, day),
            ("b", "save", 1.0, day),  # b: 1 + 3 x 1 = 4, the best of signature s1
            ("c", "click", 4.0, day),  # c ties b at 4: b wins on pin id
            ("d", "click", 0.5, day),  # no signature: its own group
            ("e", "click", 0.05, day),  # below min_score
        ],
        TABLES["engagement_decay"].schema,
    )
    signatures = spark.createDataFrame(
        [("a", "s1"), ("b", "s1"), ("c", "s1"), ("e", "s2")], "pin_id string, image_signature string"
    )
    rows = serving_corpus.ranked_corpus(state, signatures, {"click": 1.0, "save": 3.0}, 0.1, day).collect()
    got = {r[SC.PIN_ID]: (r[SC.SCORE], r[SC.SERVED], r[SC.DUPLICATE_OF]) for r in rows}
    assert got == {
        "a": (2.0, False, "b"),
        "b": (4.0, True, None),
        "c": (4.0, False, "b"),
        "d": (0.5, True, None),
    }


def test_weights_of_event_types_without_a_half_life_are_refused():
    with pytest.raises(ConfigError, match="serving_corpus.weights: names event types without a half-life"):
        load_config("local", overrides=["serving_corpus.weights={view: 1.0}"])
    with pytest.raises(ConfigError, match="serving_corpus.half_life_days.click: must be > 0"):
        load_config("local", overrides=["serving_corpus.half_life_days.click=0"])

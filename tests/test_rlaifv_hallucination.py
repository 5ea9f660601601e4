"""CHAIR-style hallucination metrics on hand-written responses with known hallucinations."""

from __future__ import annotations

import pytest

from rewards.rlaifv.hallucination import (
    ObjectVocabulary,
    chair_metrics,
    object_mentions,
    response_hallucination,
    shapes_vocabulary,
)

RESPONSES = [
    # red circle (true), violet box = purple square (hallucinated)
    "There is a red circle at the top left and a violet box at the bottom right.",
    # think block ignored; "two circles" = bare circle (true: a red circle exists); blue square true
    "<think>maybe a green triangle</think>There are two circles and a blue square.",
    # bare triangle (hallucinated: no triangle at all); red ball = red circle (true)
    "A triangle is above the red ball.",
    # mentions nothing
    "Nothing to see here.",
    # "no green triangle" is a negation; yellow triangle true; repeated mention counts once
    "There is no green triangle, only a yellow triangle. The yellow triangle is large.",
]
TRUTH = [
    ["red circle", "blue square"],
    ["red circle", "blue square"],
    ["red circle", "yellow square"],
    ["green triangle"],
    ["yellow triangle"],
]


def test_shapes_mentions_with_synonyms_plurals_and_negation():
    assert [m.canonical for m in object_mentions(RESPONSES[0])] == ["red circle", "purple square"]
    assert [m.canonical for m in object_mentions(RESPONSES[1])] == ["circle", "blue square"]
    assert [m.canonical for m in object_mentions(RESPONSES[4])] == ["yellow triangle", "yellow triangle"]
    per = response_hallucination(RESPONSES[2], TRUTH[2])
    assert per.mentioned == ["triangle", "red circle"] and per.hallucinated == ["triangle"]
    assert per.covered == ["red circle"] and per.n_gt == 2


def test_chair_metrics_by_hand():
    # per response (mentioned / hallucinated / covered of gt):
    # 1: {red circle, purple square} / {purple square} / 1 of 2
    # 2: {circle, blue square}       / {}              / 1 of 2 (a bare circle covers nothing)
    # 3: {triangle, red circle}      / {triangle}      / 1 of 2
    # 4: {}                          / {}              / 0 of 1
    # 5: {yellow triangle}           / {}              / 1 of 1
    m = chair_metrics(RESPONSES, TRUTH)
    assert m["n_responses"] == 5
    assert m["n_responses_with_mentions"] == 4
    assert m["n_responses_hallucinating"] == 2
    assert m["n_mentions"] == 7 and m["n_hallucinated_mentions"] == 2
    assert m["chair_s"] == pytest.approx(2 / 4)
    assert m["chair_i"] == pytest.approx(2 / 7)
    assert m["cover"] == pytest.approx((0.5 + 0.5 + 0.5 + 0 + 1) / 5)
    assert m["hal"] == pytest.approx(40.0)
    assert (m["n_gt_objects"], m["n_covered"]) == (8, 4)


def test_generic_coco_style_vocabulary():
    synonyms = {
        "person": ["person", "man", "woman", "men", "women", "people"],
        "dining table": ["dining table", "table"],
        "hot dog": ["hot dog"],
        "dog": ["dog", "puppy"],
    }
    text = "Two men sit at a dining table eating hot dogs while a puppy sleeps under the table."
    assert [m.canonical for m in object_mentions(text, synonyms)] == [
        "person",
        "dining table",
        "hot dog",  # longest match: not also a "dog"
        "dog",
        "dining table",
    ]
    m = chair_metrics([text], [["person", "table"]], synonyms)  # ground truth given by a synonym
    # mentioned {person, dining table, hot dog, dog}; hallucinated {hot dog, dog}
    assert (m["n_mentions"], m["n_hallucinated_mentions"]) == (4, 2)
    assert m["chair_i"] == pytest.approx(0.5) and m["chair_s"] == 1.0 and m["cover"] == 1.0
    vocab = ObjectVocabulary(synonyms=synonyms)
    assert chair_metrics([text], [["person", "table"]], vocab) == m


def test_shapes_vocabulary_and_degenerate_inputs():
    vocab = shapes_vocabulary()
    assert vocab.canonical("violet box") == "purple square"
    assert vocab.implied(["red circle"]) == {"red circle", "circle"}
    empty = chair_metrics([], [])
    assert empty["chair_s"] == 0.0 and empty["chair_i"] == 0.0 and empty["n_responses"] == 0
    with pytest.raises(ValueError):
        chair_metrics(["a"], [])

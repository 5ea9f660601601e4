"""Yes/no labelling through the Scorer protocol, the oracle labeler and labeler agreement."""

from __future__ import annotations

import math

import pytest

from rewards.rlaifv.claims import Claim, parse_shapes_claims
from rewards.rlaifv.labeler import (
    ANSWER_SUFFIX,
    ClaimLabel,
    LabelItem,
    OracleLabeler,
    ProbabilityLabeler,
    check_claim,
    count_labels,
    labeler_agreement,
    make_labeler,
    yes_no_probs,
)
from rl.data.scenes import Scene, SceneObject
from rollouts.types import ScoreResult

# A fake tokenizer where "Yes" is two tokens; yes/no/No are one each.
WORD_IDS = {"yes": [10], "Yes": [11, 12], "no": [20], "No": [21]}
BROKEN = object()  # an image that fails to load


def encode_text(word: str) -> list[int]:
    return list(WORD_IDS[word])


class FakeEncoder:
    """Prompt ids [1, 2, qid]; raises for the BROKEN image (as a failed image load would)."""

    def __init__(self):
        self.qids: dict[str, int] = {}
        self.calls: list[tuple] = []

    def __call__(self, messages, images, mode):
        self.calls.append((messages, list(images), mode))
        if any(im is BROKEN for im in images):
            raise OSError("cannot identify image file")
        text = messages[0]["content"]
        return [1, 2, 100 + self.qids.setdefault(text, len(self.qids))]


class FakeScorer:
    """Log-probs from a table: (qid, continuation ids) → per-token log-probs; records calls."""

    def __init__(self, table, errors=()):
        self.table = table
        self.errors = set(errors)
        self.calls: list[list] = []

    def score(self, requests):
        self.calls.append(requests)
        out = []
        for req in requests:
            qid = req.token_ids[2] - 100
            cont = tuple(req.token_ids[req.target_start :])
            if (qid, cont) in self.errors:
                out.append(ScoreResult([], error="boom"))
            else:
                out.append(ScoreResult(list(self.table[(qid, cont)])))
        return out


def _claim(q: str, i: int = 0) -> Claim:
    return Claim(text=q.lower().rstrip("?"), question=q, response_index=i, prompt_id="p")


L = math.log


def _table():
    return {
        # q0: P_yes = 0.3 + 0.5*0.4 = 0.5, P_no = 0.1 + 0.15 = 0.25 -> accepted
        (0, (10,)): [L(0.3)],
        (0, (11, 12)): [L(0.5), L(0.4)],
        (0, (20,)): [L(0.1)],
        (0, (21,)): [L(0.15)],
        # q1: P_yes = 0.1 + 0.5*0.2 = 0.2, P_no = 0.3 + 0.05 = 0.35 -> rejected
        (1, (10,)): [L(0.1)],
        (1, (11, 12)): [L(0.5), L(0.2)],
        (1, (20,)): [L(0.3)],
        (1, (21,)): [L(0.05)],
    }


def test_yes_no_aggregation_with_multi_token_words_in_one_scorer_call():
    scorer, enc = FakeScorer(_table()), FakeEncoder()
    labeler = ProbabilityLabeler(scorer, enc, encode_text, source="self")
    items = [
        LabelItem(_claim("Is there a red circle?", 0), images=["img"]),
        LabelItem(_claim("Is there a green triangle?", 0), images=["img"]),
        LabelItem(_claim("Is there a red circle?", 1), images=["img"]),  # same question: scored once
    ]
    labels = labeler.label(items)
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 8  # 2 distinct questions x 4 words
    assert [lab.verdict for lab in labels] == ["accepted", "rejected", "accepted"]
    assert labels[0].p_yes == pytest.approx(0.5) and labels[0].p_no == pytest.approx(0.25)
    assert labels[1].p_yes == pytest.approx(0.2) and labels[1].p_no == pytest.approx(0.35)
    assert labels[2].claim.response_index == 1 and labels[2].source == "self"
    # the prompt: question + suffix, fast mode, the image; each scored word follows the prompt
    messages, images, mode = enc.calls[0]
    assert messages == [{"role": "user", "content": "Is there a red circle?" + ANSWER_SUFFIX}]
    assert (images, mode) == (["img"], "fast")
    req = scorer.calls[0][1]
    assert req.token_ids == [1, 2, 100, 11, 12] and req.target_start == 3 and req.images == ["img"]


def test_identical_spellings_are_counted_once():
    # a lower-casing tokenizer: yes == Yes, no == No
    ids = {"yes": [10], "Yes": [10], "no": [20], "No": [20]}
    table = {(0, (10,)): [L(0.4)], (0, (20,)): [L(0.5)]}
    labeler = ProbabilityLabeler(FakeScorer(table), FakeEncoder(), lambda w: ids[w])
    (lab,) = labeler.label([LabelItem(_claim("Is it?"))])
    assert (lab.p_yes, lab.p_no, lab.accepted) == (pytest.approx(0.4), pytest.approx(0.5), False)


def test_tie_is_a_rejection():
    assert yes_no_probs([L(0.25), L(0.25)], [L(0.5), -math.inf]) == pytest.approx((0.5, 0.5))
    table = {
        (0, (10,)): [L(0.25)],
        (0, (11, 12)): [L(0.5), L(0.5)],
        (0, (20,)): [L(0.5)],
        (0, (21,)): [-math.inf],
    }
    (lab,) = ProbabilityLabeler(FakeScorer(table), FakeEncoder(), encode_text).label(
        [LabelItem(_claim("Q?"))]
    )
    assert lab.ok and not lab.accepted and lab.rejected


@pytest.mark.parametrize(
    "bad, why",
    [
        ({(0, (20,)): [math.nan]}, "non-finite"),
        (
            {
                (0, (10,)): [-math.inf],
                (0, (11, 12)): [-math.inf, 0.0],
                (0, (20,)): [-math.inf],
                (0, (21,)): [-math.inf],
            },
            "no finite",
        ),
        ({(0, (21,)): [L(0.1), L(0.1)]}, "expected 1 log-probs"),
    ],
)
def test_unparseable_scores_are_marked_not_raised(bad, why):
    table = _table()
    table.update(bad)
    labels = ProbabilityLabeler(FakeScorer(table), FakeEncoder(), encode_text).label(
        [LabelItem(_claim("Q0?")), LabelItem(_claim("Q1?"))]
    )
    assert labels[0].verdict == "unparseable" and why in labels[0].error
    assert not labels[0].accepted and not labels[0].rejected
    assert labels[1].verdict == "rejected"  # the other claim is unaffected
    assert count_labels(labels).__dict__ == {"n": 2, "accepted": 0, "rejected": 1, "unparseable": 1}


def test_scorer_error_and_image_that_fails_to_load():
    scorer = FakeScorer(_table(), errors={(1, (20,))})
    enc = FakeEncoder()
    labels = ProbabilityLabeler(scorer, enc, encode_text).label(
        [
            LabelItem(_claim("Broken image?"), images=[BROKEN]),
            LabelItem(_claim("Q0?"), images=["img"]),
            LabelItem(_claim("Q1?"), images=["img"]),
        ]
    )
    assert [lab.verdict for lab in labels] == ["unparseable", "accepted", "unparseable"]
    assert labels[0].error.startswith("prompt: OSError")
    assert labels[2].error == "scorer: boom"
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 8  # the broken item sent nothing


def test_make_labeler_kinds():
    scorer = FakeScorer(_table())
    lab = make_labeler("model:some/vlm", scorer, FakeEncoder(), encode_text)
    assert isinstance(lab, ProbabilityLabeler) and lab.source == "model:some/vlm"
    assert isinstance(make_labeler("oracle"), OracleLabeler)
    with pytest.raises(ValueError, match="needs a scorer"):
        make_labeler("self")
    with pytest.raises(ValueError, match="labeler must be"):
        make_labeler("gpt")


# ----------------------------------------------------------------------------- oracle

SCENE = Scene(
    objects=(
        SceneObject("circle", "red", "large", (0, 0), (2, 2, 25, 25)),
        SceneObject("square", "blue", "small", (1, 1), (36, 36, 50, 50)),
    )
)


def _oracle(text: str) -> list[bool | None]:
    return [check_claim(c, SCENE) for c in parse_shapes_claims(text)]


def test_oracle_checks_parsed_claims_against_the_scene():
    assert _oracle("There is a red circle at the top left and a green triangle.") == [True, True, False]
    assert _oracle("The red circle is above and to the left of the blue box.") == [True, True, True, True]
    assert _oracle("The blue square is to the left of the red circle.") == [True, True, False]
    assert _oracle("There are two shapes. There are three shapes. There is one circle.") == [
        True,
        False,
        True,
    ]
    assert _oracle("There is no green triangle. There is no blue square.") == [True, False]
    text = "The circle is red. The square is large. The red circle is not at the bottom right."
    assert [(c.text, check_claim(c, SCENE)) for c in parse_shapes_claims(text)] == [
        ("there is a circle", True),
        ("the circle is red", True),
        ("there is a square", True),
        ("the square is large", False),  # it is small
        ("there is a red circle", True),
        ("the red circle is not at the bottom right", True),
    ]


def test_oracle_labeler_marks_labels_and_handles_unknowns():
    scene = SCENE.to_json()
    free = Claim("The red circle is at the top left.", "Is the red circle at the top left?", 0, "p")
    vague = Claim("The picture is pretty.", "Is the picture pretty?", 0, "p")
    red = parse_shapes_claims("There is a red circle.", "p", 0)[0]
    labels = OracleLabeler().label(
        [
            LabelItem(free, scene=scene),
            LabelItem(vague, scene=scene),
            LabelItem(red, scene=None),
            LabelItem(red, scene="{bad"),
        ]
    )
    assert [lab.verdict for lab in labels] == ["accepted", "unparseable", "unparseable", "unparseable"]
    assert all(lab.oracle and lab.source == "oracle" for lab in labels)
    assert (labels[0].p_yes, labels[0].p_no) == (1.0, 0.0)


def test_labeler_agreement_on_hand_numbers():
    claims = [_claim(f"Q{i}?") for i in range(6)]

    def lab(c, verdict):
        if verdict == "u":
            return ClaimLabel(c, False, math.nan, math.nan, error="x")
        return ClaimLabel(c, verdict == "a", 0.0, 0.0)

    model = [lab(c, v) for c, v in zip(claims, "aarrru", strict=True)]
    truth = [lab(c, v) for c, v in zip(claims, "arrara", strict=True)]
    # compared: 0..4 (5th is unparseable for the model); agree on 0, 2, 3 -> 3/5
    # model rejects 2, 3, 4; truth rejects 1, 2, 4 (among compared); both reject 2, 4
    got = labeler_agreement(model, truth)
    assert got["n"] == 5 and got["skipped"] == 1
    assert got["accuracy"] == pytest.approx(3 / 5)
    assert got["rejection_precision"] == pytest.approx(2 / 3)
    assert got["rejection_recall"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        labeler_agreement(model, truth[:3])

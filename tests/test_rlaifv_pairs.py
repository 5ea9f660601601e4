"""RLAIF-V scores, pair construction and length balancing, against hand computations."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from rewards.rlaifv.claims import Claim, ShapesClaimSplitter
from rewards.rlaifv.labeler import ClaimLabel, LabelItem, ProbabilityLabeler
from rewards.rlaifv.pairs import (
    BALANCE_RATIOS,
    Pair,
    ScoredResponse,
    build_pairs,
    length_balance,
    response_score,
    score_response,
)
from rollouts.types import ScoreResult


def _resp(
    index: int, n_rejected: int, n_claims: int = 3, n_judgements: int | None = None, pid: str = "p"
) -> ScoredResponse:
    return ScoredResponse(
        prompt_id=pid,
        index=index,
        text=f"response {pid}-{index}",
        n_claims=n_claims,
        n_judgements=n_claims if n_judgements is None else n_judgements,
        n_rejected=n_rejected,
    )


def test_response_score_and_score_from_claims():
    assert response_score(0) == 0 and response_score(3) == -3
    claims = [Claim(f"c{i}", f"Q{i}?", 0, "p") for i in range(4)]
    labels = [
        ClaimLabel(claims[0], True, 0.9, 0.1),
        ClaimLabel(claims[1], False, 0.1, 0.9),
        ClaimLabel(claims[2], False, 0.2, 0.7),
        ClaimLabel(claims[3], True, 0.6, 0.3),
    ]
    r = score_response("p", 0, "text", claims, labels)
    assert (r.n_claims, r.n_judgements, r.n_rejected, r.score, r.consistent) == (4, 4, 2, -2, True)
    assert r.verdicts == ["accepted", "rejected", "rejected", "accepted"]
    labels[3] = ClaimLabel(claims[3], False, math.nan, math.nan, error="scorer: boom")
    r = score_response("p", 0, "text", claims, labels)
    assert (r.n_judgements, r.n_rejected, r.score, r.consistent) == (3, 2, -2, False)
    with pytest.raises(ValueError):
        score_response("p", 0, "text", claims, labels[:2])


def test_gap_and_ties():
    # scores 0, 0, -1, -3: pairs (0,2) (0,3) (1,2) (1,3) (2,3); (0,1) is a tie
    responses = {"p": [_resp(0, 0), _resp(1, 0), _resp(2, 1), _resp(3, 3)]}
    built = build_pairs(responses, seed=0, max_pairs_per_prompt=10)
    got = sorted((p.chosen_index, p.rejected_index) for p in built.pairs)
    assert got == [(0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert all(p.chosen_score > p.rejected_score for p in built.pairs)
    assert built.n_candidate_pairs == 5
    gap2 = build_pairs(responses, seed=0, max_pairs_per_prompt=10, min_gap=2)
    assert sorted((p.chosen_index, p.rejected_index) for p in gap2.pairs) == [(0, 3), (1, 3), (2, 3)]
    ties = build_pairs({"p": [_resp(i, 1) for i in range(5)]}, seed=0)
    assert ties.pairs == [] and ties.n_prompts_with_pairs == 0
    with pytest.raises(ValueError):
        build_pairs(responses, seed=0, min_gap=0)


def test_cap_is_seeded_reproducible_and_order_independent():
    groups = {pid: [_resp(i, i, pid=pid) for i in range(5)] for pid in ("a", "b", "c")}  # 10 candidates each

    def picked(built):
        return [(p.prompt_id, p.chosen_index, p.rejected_index) for p in built.pairs]

    first = build_pairs(groups, seed=1)
    assert [p.prompt_id for p in first.pairs] == ["a", "a", "b", "b", "c", "c"]
    assert picked(first) == picked(build_pairs(groups, seed=1))
    assert len(set(picked(first))) == 6
    reordered = build_pairs({pid: groups[pid] for pid in ("c", "a", "b")}, seed=1)
    assert sorted(picked(reordered)) == sorted(picked(first))
    others = [picked(build_pairs(groups, seed=s)) for s in range(2, 6)]
    assert any(o != picked(first) for o in others)


def test_consistency_and_no_claims_responses_are_excluded_and_counted():
    responses = {
        "p": [
            _resp(0, 0),
            _resp(1, 2, n_judgements=2),  # one claim unparseable: inconsistent
            _resp(2, 0, n_claims=0),  # no claims
            _resp(3, 2),
        ]
    }
    built = build_pairs(responses, seed=0)
    assert [(p.chosen_index, p.rejected_index) for p in built.pairs] == [(0, 3)]
    assert (built.n_responses, built.n_inconsistent, built.n_no_claims) == (4, 1, 1)


class _Scorer:
    """yes = 0.9 for questions about red objects, 0.1 otherwise; errors for 'triangle' questions."""

    def __init__(self, encoder):
        self.encoder = encoder

    def score(self, requests):
        out = []
        for req in requests:
            q = self.encoder.texts[req.token_ids[0]]
            word = req.token_ids[req.target_start]
            if "triangle" in q:
                out.append(ScoreResult([], error="engine hiccup"))
                continue
            p_yes = 0.9 if "red" in q else 0.1
            p = p_yes if word == 10 else (1 - p_yes) if word == 20 else 1e-9
            out.append(ScoreResult([math.log(p)]))
        return out


class _Encoder:
    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, messages, images, mode):
        if images == ["unloadable"]:
            raise OSError("image file is truncated")
        self.texts.append(messages[0]["content"])
        return [len(self.texts) - 1]


def test_a_round_survives_empty_unparseable_and_unloadable_responses():
    """split → label → score → pair with a response with no claims, one whose claim the labeler
    cannot parse and one whose image fails to load: each is skipped and counted."""
    texts = [
        ("There is a red circle.", "ok.png"),
        ("There is a blue square.", "ok.png"),
        ("It is a nice picture.", "ok.png"),  # no claims
        ("There is a red circle and a green triangle.", "ok.png"),  # triangle: scorer error
        ("There is a red square.", "unloadable"),  # image fails to load
    ]
    splitter, enc = ShapesClaimSplitter(), _Encoder()
    labeler = ProbabilityLabeler(
        _Scorer(enc), enc, lambda w: {"yes": [10], "Yes": [11], "no": [20], "No": [21]}[w]
    )
    per_response = [splitter.split(t, "p", i) for i, (t, _) in enumerate(texts)]
    items = [LabelItem(c, images=[img]) for cs, (_, img) in zip(per_response, texts, strict=True) for c in cs]
    labels = iter(labeler.label(items))
    scored = [
        score_response("p", i, t, cs, [next(labels) for _ in cs])
        for i, ((t, _), cs) in enumerate(zip(texts, per_response, strict=True))
    ]
    assert [r.score for r in scored] == [0, -1, 0, 0, 0]
    assert [r.consistent for r in scored] == [True, True, True, False, False]
    built = build_pairs({"p": scored}, seed=0)
    assert (built.n_no_claims, built.n_inconsistent) == (1, 2)
    assert [(p.chosen_index, p.rejected_index) for p in built.pairs] == [(0, 1)]
    assert built.pairs[0].chosen_claims[0].text == "there is a red circle"
    assert built.pairs[0].to_row()["rejected_verdicts"] == ["rejected"]


def _pair(chosen_words: int, rejected_words: int, same: bool = False) -> Pair:
    chosen = " ".join(["c"] * chosen_words)
    rejected = chosen if same else " ".join(["r"] * rejected_words)
    return Pair("p", chosen, rejected, 0, -1)


def test_length_balance_hand_example():
    # (len_ch, len_rej): A (5, 10) -> (10-5)/10 = 0.5; B (9, 10) -> 0.1; C (12, 10) -> -0.2;
    # D is identical (always dropped).
    # r < 0.1:        keep C       -> |12 - 10| / 10 = 0.2
    # 0.1 <= r < 0.5: keep B, C    -> |21 - 20| / 20 = 0.05   <- best, first at r = 0.1
    # r >= 0.5:       keep A, B, C -> |26 - 30| / 30 = 0.133
    a, b, c, d = _pair(5, 10), _pair(9, 10), _pair(12, 10), _pair(7, 7, same=True)
    out = length_balance([a, b, c, d])
    assert out.ratio == pytest.approx(0.1)
    assert out.pairs == [b, c]
    assert out.objective == pytest.approx(0.05)
    assert out.n_in == 4


def test_length_balance_returns_input_when_nothing_balances():
    assert len(BALANCE_RATIOS) == 50 and BALANCE_RATIOS[0] == 0 and BALANCE_RATIOS[-1] == Fraction(49, 50)
    identical = [_pair(3, 3, same=True), _pair(4, 4, same=True)]
    out = length_balance(identical)
    assert out.ratio is None and out.pairs == identical
    much_shorter = [_pair(1, 100)]  # (100 - 1) / 100 = 0.99 > 0.98 at every ratio
    assert length_balance(much_shorter).pairs == much_shorter
    assert length_balance([]).pairs == [] and length_balance([]).ratio is None

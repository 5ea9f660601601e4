"""RLPR: mean token probability, debiasing, sequence construction, the r' cache, composition.

Uses honest fakes defined here: `FakeCharTokenizer` (one id per character, `<think>`/`</think>`
as single ids) and `FakePositionScorer` (log-prob = a known function of position and token id).
Expected numbers are computed by hand in the tests, not with the code under test.
"""

from __future__ import annotations

import math
import pickle
import threading

import pytest
from PIL import Image

from policies.chat import FAST_PREFILL
from rewards.accuracy import AccuracyReward
from rewards.breakdown import RewardSuite, summarise_by_mode
from rewards.config import RewardConfig, RewardSpec
from rewards.rlpr import (
    DebiasRow,
    RLPRReward,
    build_rlpr_inputs,
    debiased,
    mean_token_prob,
    split_reasoning,
)
from rollouts.types import ScoreRequest, ScoreResult

THINK_ID, CLOSE_ID = 1, 2


class FakeCharTokenizer:
    """Fake tokenizer: `<think>` → 1, `</think>` → 2, any other character → its code point."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        assert add_special_tokens is False
        ids, i = [], 0
        while i < len(text):
            if text.startswith("<think>", i):
                ids.append(THINK_ID)
                i += len("<think>")
            elif text.startswith("</think>", i):
                ids.append(CLOSE_ID)
                i += len("</think>")
            else:
                ids.append(ord(text[i]))
                i += 1
        return ids


def fake_logprob(pos: int, tok: int, shift: float = 0.0) -> float:
    """The fake policy: log p(token at pos) = -0.5·((pos + tok) mod 5) - shift."""
    return -0.5 * ((pos + tok) % 5) - shift


class FakePositionScorer:
    """Fake Scorer: teacher-forced log-probs from `fake_logprob`; records every call.

    `shift` stands for a policy update (all log-probs move); `fail_token` makes every request
    containing that token id come back with an error.
    """

    def __init__(self, shift: float = 0.0, fail_token: int | None = None):
        self.shift = shift
        self.fail_token = fail_token
        self.calls: list[list[ScoreRequest]] = []
        self._lock = threading.Lock()  # makes the scorer unpicklable, like an engine handle

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        self.calls.append(list(requests))
        out = []
        for req in requests:
            if self.fail_token is not None and self.fail_token in req.token_ids:
                out.append(ScoreResult(logprobs=[], error="engine failed on this item"))
                continue
            lps = [
                fake_logprob(p, req.token_ids[p], self.shift)
                for p in range(req.target_start, len(req.token_ids))
            ]
            out.append(ScoreResult(logprobs=lps))
        return out

    @property
    def requests(self) -> list[ScoreRequest]:
        return [r for call in self.calls for r in call]


TOK = FakeCharTokenizer()
PREFILL_IDS = TOK.encode(FAST_PREFILL)
PROMPT = [100, 101, 102]  # a deep-mode generation prompt (P = 3)


def make_reward(debias: str = "initial", scorer: FakePositionScorer | None = None) -> RLPRReward:
    return RLPRReward(tokenizer=TOK, scorer=scorer or FakePositionScorer(), debias=debias)


# ---- pure math --------------------------------------------------------------------------------


def test_mean_token_prob_is_mean_of_probabilities_not_likelihood():
    lps = [math.log(0.9), math.log(0.5), math.log(0.1)]
    assert mean_token_prob(lps) == pytest.approx(0.5)  # (0.9 + 0.5 + 0.1) / 3
    likelihood = 0.9 * 0.5 * 0.1  # exp(sum of log-probs) = 0.045
    assert math.exp(sum(lps)) == pytest.approx(likelihood)
    assert abs(mean_token_prob(lps) - likelihood) > 0.4
    assert mean_token_prob([]) == 0.0
    assert mean_token_prob([float("nan"), 0.0]) == pytest.approx(0.5)


def test_debiased_clips_to_unit_interval():
    assert debiased(0.7, 0.2) == pytest.approx(0.5)
    assert debiased(0.2, 0.7) == 0.0
    assert debiased(1.5, 0.0) == 1.0


# ---- sequence construction ---------------------------------------------------------------------


def test_deep_sequence_keeps_reasoning_and_substitutes_reference():
    inp = build_rlpr_inputs(PROMPT, "<think>abcd</think>\n\nwrong", "cd", "deep", TOK.encode, PREFILL_IDS)
    assert inp.valid
    z_ids = [THINK_ID, 97, 98, 99, 100, CLOSE_ID, 10, 10]
    assert inp.token_ids == PROMPT + z_ids + [99, 100]
    assert inp.target_start == 3 + 8
    assert inp.debias_ids == PROMPT + [THINK_ID, 10, 10, CLOSE_ID, 10, 10] + [99, 100]
    assert inp.debias_start == 9


def test_reference_inside_reasoning_does_not_move_the_answer_span():
    completion = "<think>I guess Paris, yes Paris</think>\n\nLyon"
    inp = build_rlpr_inputs(PROMPT, completion, "Paris", "deep", TOK.encode, PREFILL_IDS)
    z = "<think>I guess Paris, yes Paris</think>\n\n"
    assert inp.target_start == 3 + len(TOK.encode(z))
    assert inp.token_ids[: inp.target_start] == PROMPT + TOK.encode(z)
    assert inp.token_ids[inp.target_start :] == TOK.encode("Paris")


@pytest.mark.parametrize(
    "completion, z",
    [
        ("<think>x</think>\n\nans", "<think>x</think>\n\n"),
        ("<think>x</think>ans", "<think>x</think>\n\n"),  # no whitespace: "\n\n" inserted
        ("<think>x</think> \n ans", "<think>x</think> \n "),  # the policy's whitespace is kept
        ("  <think>x</think>\n", "  <think>x</think>\n"),  # empty answer still has a located span
        ("x</think>\n\nans", "x</think>\n\n"),  # no <think>: the span is still located
    ],
)
def test_whitespace_after_think_close(completion, z):
    assert split_reasoning(completion) == z
    inp = build_rlpr_inputs(PROMPT, completion, " ans \n", "deep", TOK.encode, PREFILL_IDS)
    assert inp.valid and inp.token_ids == PROMPT + TOK.encode(z) + TOK.encode("ans")


@pytest.mark.parametrize(
    "completion",
    [
        "<think>a</think>b</think>c",  # two delimiters
        "<think>never closed",
        "plain answer without tags",
        "<think><think>a</think>b",  # nested
        "<think>a</think><think>b",  # a second think block after the answer span starts
        "",
    ],
)
def test_invalid_formats_have_no_sequence(completion):
    assert split_reasoning(completion) is None
    inp = build_rlpr_inputs(PROMPT, completion, "cd", "deep", TOK.encode, PREFILL_IDS)
    assert not inp.valid and inp.token_ids == [] and inp.reason


def test_fast_mode_sequence_ignores_the_completion():
    fast_prompt = PROMPT + PREFILL_IDS
    inp = build_rlpr_inputs(fast_prompt, "garbage </think> more", "cd", "fast", TOK.encode, PREFILL_IDS)
    assert inp.valid
    assert inp.token_ids == fast_prompt + [99, 100] and inp.target_start == len(fast_prompt)
    assert inp.debias_ids == inp.token_ids and inp.debias_start == inp.target_start


def test_blank_reference_is_invalid():
    assert not build_rlpr_inputs(PROMPT, "<think>a</think>b", "  ", "deep", TOK.encode, PREFILL_IDS).valid


# ---- the reward --------------------------------------------------------------------------------
# Hand computation, deep completion "<think>abcd</think>\n\n…", reference "cd" = ids [99, 100]:
#   o'  : reference at positions 11, 12 → (11+99)%5=0 → p=1 ; (12+100)%5=2 → p=e^-1.0
#         r  = (1 + e^-1) / 2          = 0.6839397205857212
#   r'  : prompt+prefill (9 tokens), reference at 9, 10 → (9+99)%5=3 → e^-1.5 ; (10+100)%5=0 → 1
#         r' = (e^-1.5 + 1) / 2        = 0.611565080074215
#   r̂ = r - r' = 0.07237464051150622; the likelihood would be e^-1 = 0.3679 ≠ r.
R, R_PRIME = 0.6839397205857212, 0.611565080074215


def test_rlpr_reward_matches_hand_computation():
    reward = make_reward("current")
    out = reward(
        [None],
        ["<think>abcd</think>\n\nwhatever"],
        answer=["cd"],
        prompt_ids=[PROMPT],
        images=[None],
        mode=["deep"],
        trainer_state=object(),
    )
    assert out == [pytest.approx(R - R_PRIME)]
    (score,) = reward.last_breakdown
    assert score.valid and score.r == pytest.approx(R) and score.r_prime == pytest.approx(R_PRIME)
    assert score.r != pytest.approx(math.exp(-1.0))  # not the sequence likelihood


def test_rlpr_clips_negative_and_scores_invalid_as_zero():
    # z = "<think>abc</think>\n\n": reference at 10, 11 → e^-2, e^-0.5 → r = 0.37093 < r' → 0
    reward = make_reward("current")
    out = reward(
        None,
        ["<think>abc</think>\n\nx", "<think>no close", "<think>a</think>b</think>c"],
        answer=["cd"] * 3,
        prompt_ids=[PROMPT] * 3,
        mode=["deep"] * 3,
    )
    assert out == [0.0, 0.0, 0.0]
    first, second, third = reward.last_breakdown
    assert first.valid and first.r == pytest.approx(0.37093297147462306)
    assert not second.valid and not third.valid and second.r == 0.0


def test_no_debias_reward_is_r():
    reward = make_reward("none")
    assert reward(None, ["<think>abcd</think>\n\nx"], answer=["cd"], prompt_ids=[PROMPT]) == [
        pytest.approx(R)
    ]
    assert reward.last_breakdown[0].r_prime is None
    assert len(reward._scorer.requests) == 1  # no debias request


def test_fast_mode_current_debias_is_exactly_zero_and_deduplicated():
    scorer = FakePositionScorer()
    reward = make_reward("current", scorer)
    fast_prompt = PROMPT + PREFILL_IDS
    out = reward(
        None,
        ["cd", "something else", "</think>junk"],
        answer=["cd"] * 3,
        prompt_ids=[fast_prompt] * 3,
        mode=["fast"] * 3,
    )
    assert out == [0.0, 0.0, 0.0]
    assert reward.last_breakdown[0].r == pytest.approx(R_PRIME)  # same positions as the debias sequence
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 1  # o' == debias sequence, sent once


def test_one_scorer_call_per_batch_with_temperature():
    scorer = FakePositionScorer()
    reward = RLPRReward(tokenizer=TOK, scorer=scorer, debias="current", temperature=0.7)
    reward(
        None,
        ["<think>abcd</think>\n\nx", "<think>ab</think>y"],
        answer=["cd", "ef"],
        prompt_ids=[PROMPT, PROMPT],
        mode=["deep", "deep"],
    )
    assert len(scorer.calls) == 1
    assert len(scorer.calls[0]) == 4  # two r and two r' requests
    assert {r.temperature for r in scorer.calls[0]} == {0.7}


def test_item_error_gives_zero_not_exception():
    scorer = FakePositionScorer(fail_token=ord("!"))
    reward = make_reward("current", scorer)
    out = reward(
        None,
        ["<think>ab!</think>\n\nx", "<think>abcd</think>\n\nx"],
        answer=["cd", "cd"],
        prompt_ids=[PROMPT, PROMPT],
    )
    assert out == [0.0, pytest.approx(R - R_PRIME)]
    assert reward.last_breakdown[0].error and reward.last_stats["errors"] == 1


def test_none_reference_gives_none():
    reward = make_reward()
    assert reward(None, ["x"], answer=[None], prompt_ids=[PROMPT]) == [None]
    assert reward._scorer.calls == []


# ---- the debias cache --------------------------------------------------------------------------


def test_initial_debias_is_computed_once_and_survives_policy_updates():
    scorer = FakePositionScorer()
    reward = make_reward("initial", scorer)
    batch = dict(answer=["cd"], prompt_ids=[PROMPT], mode=["deep"])
    assert reward(None, ["<think>abcd</think>\n\nx"], **batch) == [pytest.approx(R - R_PRIME)]
    assert len(scorer.calls[-1]) == 2
    scorer.shift = 0.1  # the policy moved: every probability × e^-0.1
    out = reward(None, ["<think>abcd</think>\n\nx"], **batch)
    assert len(scorer.calls[-1]) == 1  # r only; r' from the cache
    assert out == [pytest.approx(R * math.exp(-0.1) - R_PRIME)]
    assert reward.last_stats["cache_hits"] == 1


def test_current_debias_is_recomputed_every_call():
    scorer = FakePositionScorer()
    reward = make_reward("current", scorer)
    batch = dict(answer=["cd"], prompt_ids=[PROMPT], mode=["deep"])
    reward(None, ["<think>abcd</think>\n\nx"], **batch)
    scorer.shift = 0.1
    out = reward(None, ["<think>abcd</think>\n\nx"], **batch)
    assert len(scorer.calls[-1]) == 2
    assert out == [pytest.approx((R - R_PRIME) * math.exp(-0.1))]
    assert reward.cache_size == 0


def _image(color):
    return Image.new("RGB", (4, 4), color)


def test_cache_is_keyed_by_image_content():
    scorer = FakePositionScorer()
    reward = make_reward("initial", scorer)
    red, blue, red_again = _image("red"), _image("blue"), _image("red")
    reward(
        None,
        ["<think>abcd</think>\n\nx"] * 2,
        answer=["cd"] * 2,
        prompt_ids=[PROMPT] * 2,
        images=[[red], [blue]],
    )
    assert reward.cache_size == 2  # same token ids, different images: two r' entries
    reward(None, ["<think>abcd</think>\n\nx"], answer=["cd"], prompt_ids=[PROMPT], images=[[red_again]])
    assert reward.last_stats["cache_hits"] == 1  # equal pixels, another object: a hit
    assert scorer.calls[0][0].images == [red]


def test_precompute_fills_cache_from_initial_policy_and_round_trips():
    scorer = FakePositionScorer()
    reward = make_reward("initial", scorer)
    rows = [
        DebiasRow(prompt_ids=PROMPT, reference="cd"),
        {"prompt_ids": PROMPT, "answer": "cd"},
        {"prompt_ids": PROMPT + PREFILL_IDS, "answer": "cd", "mode": "fast"},
    ]
    assert reward.precompute(rows) == 1  # deep prompt+prefill == fast prompt: one entry
    scorer.shift = 0.1
    reward(None, ["<think>abcd</think>\n\nx"], answer=["cd"], prompt_ids=[PROMPT])
    assert reward.last_breakdown[0].r_prime == pytest.approx(R_PRIME)
    state = reward.state_dict()
    fresh = make_reward("initial", FakePositionScorer(shift=0.3))
    fresh.load_state_dict(state)
    fresh(None, ["<think>abcd</think>\n\nx"], answer=["cd"], prompt_ids=[PROMPT])
    assert fresh.last_breakdown[0].r_prime == pytest.approx(R_PRIME)
    assert len(fresh._scorer.calls[0]) == 1


def test_pickles_without_its_scorer():
    reward = make_reward("initial")
    reward.precompute([DebiasRow(prompt_ids=PROMPT, reference="cd")])
    with pytest.raises(TypeError):
        pickle.dumps(reward._scorer)
    clone = pickle.loads(pickle.dumps(reward))
    assert clone._scorer is None and clone.cache_size == 1 and clone.debias == "initial"
    with pytest.raises(RuntimeError, match="set_scorer"):
        clone(None, ["<think>a</think>b"], answer=["cd"], prompt_ids=[PROMPT])


# ---- composition -------------------------------------------------------------------------------


def test_composition_with_format_weight():
    """R = 0.9·r̂ + 0.1·format + repetition (RLPR defaults, c = 0.1)."""
    config = RewardConfig(routing={"freeform.fast": "rlpr_nodebias"})
    suite = RewardSuite(config=config, tokenizer=TOK, scorer=FakePositionScorer())
    completions = ["<think>abcd</think>\n\nx", "<think>abcd</think>\n\n", "<think>abcd</think>\n\nx"]
    rows = suite.compute(
        None,
        completions,
        answer=["cd", "cd", "cd"],
        prompt_ids=[PROMPT] * 3,
        task=["freeform", "freeform", "freeform"],
        mode=["deep", "deep", "fast"],
    )
    assert rows[0].total == pytest.approx(0.9 * (R - R_PRIME) + 0.1 * 1.0)  # = 0.16513717646
    assert rows[1].total == pytest.approx(0.9 * (R - R_PRIME))  # empty answer: format 0, same span
    assert rows[0].rlpr_r == pytest.approx(R) and rows[0].rlpr_r_prime == pytest.approx(R_PRIME)
    assert rows[0].accuracy_route == "rlpr" and rows[2].accuracy_route == "rlpr_nodebias"
    # fast row: prompt given as-is, so o' = PROMPT + ref (positions 3, 4): (3+99)%5=2, (4+100)%5=4
    assert rows[2].components["accuracy"] == pytest.approx((math.exp(-1.0) + math.exp(-2.0)) / 2)
    assert rows[2].components["format"] == 0.0  # a think block with content in fast mode
    summary = summarise_by_mode(rows)
    assert summary["deep"]["count"] == 2 and summary["fast"]["count"] == 1
    assert summary["deep"]["format"] == pytest.approx(0.5)


def test_accuracy_router_sends_one_scorer_call_for_mixed_routes():
    scorer = FakePositionScorer()
    acc = AccuracyReward(rlpr={"debias": "current"}, tokenizer=TOK, scorer=scorer)
    out = acc(
        None,
        ["<think>abcd</think>\n\nx", "cd", "<think>t</think>\n\nyes"],
        answer=["cd", "cd", "yes"],
        prompt_ids=[PROMPT, PROMPT + PREFILL_IDS, PROMPT],
        task=["freeform", "description", "short"],
        mode=["deep", "fast", "deep"],
    )
    assert out[0] == pytest.approx(R - R_PRIME)
    assert out[1] == pytest.approx(R_PRIME)  # nodebias in fast: r itself
    assert out[2] == 1.0
    assert len(scorer.calls) == 1
    assert [s.route for s in acc.last_breakdown] == ["rlpr", "rlpr_nodebias", "rule"]


def test_suite_reward_spec_override():
    suite = RewardSuite(
        [RewardSpec("rlpr", 1.0, {"debias": "none"})], tokenizer=TOK, scorer=FakePositionScorer()
    )
    assert suite(None, ["<think>abcd</think>\n\nx"], answer=["cd"], prompt_ids=[PROMPT]) == [pytest.approx(R)]


def test_list_reference_uses_its_first_entry():
    reward = make_reward("current")
    out = reward(None, ["<think>abcd</think>\n\nx"], answer=[["cd", "zz"]], prompt_ids=[PROMPT])
    assert out == [pytest.approx(R - R_PRIME)]

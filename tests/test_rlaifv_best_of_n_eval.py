"""Best-of-N self-reward at RLAIF-V evaluation: the batch pick (pure) and the stage's eval on fakes."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from rewards.rlaifv.best_of_n import choose_best, implicit_reward
from rewards.rlaifv.config import RLAIFVConfig
from rl.report import summary_md
from rl.stages.rlaifv import best_of_n_eval
from rollouts.fake import FakeEngine
from rollouts.types import ScoreResult


def test_choose_best_picks_the_highest_implicit_reward_per_prompt():
    # prompt 0: rewards 0.1*(0)/1, 0.1*(2)/2 = 0.1, 0.1*(1)/1 = 0.1 -> first of the tie (index 1)
    # prompt 1: candidate 0 unscored (NaN, last) -> index 1 even with a negative reward
    choices = choose_best(
        [["a", "b", "c"], ["x", "y"]],
        [[[-1.0], [-1.0, -1.0], [-1.0]], [None, [-2.0]]],
        [[[-1.0], [-2.0, -2.0], [-2.0]], [[-1.0], [-1.0]]],
        beta=0.1,
    )
    assert [(c.index, c.text) for c in choices] == [(1, "b"), (1, "y")]
    assert choices[0].rewards == pytest.approx([0.0, 0.1, 0.1])
    assert math.isnan(choices[1].rewards[0]) and choices[1].rewards[1] == pytest.approx(-0.1)
    # nothing scored: keep the first (no reranking)
    assert choose_best([["p", "q"]], [[None, None]], [[None, None]], 0.1)[0].index == 0
    with pytest.raises(ValueError):
        choose_best([["a"]], [[[-1.0]]], [], 0.1)
    with pytest.raises(ValueError):
        choose_best([["a", "b"]], [[[-1.0]]], [[[-1.0]]], 0.1)
    with pytest.raises(ValueError):
        choose_best([[]], [[]], [[]], 0.1)


# Candidates per prompt; the policy gives every token -1, the reference gives "!" -3 and the rest
# -1, so the implicit reward is 2β·(number of "!")/T: candidate 1 wins, candidate 0 (the random
# baseline) hallucinates a square.
ANSWERS = ["There is a red square.", "There is a red circle!!", "There is a red circle and a square!"]


class _FailingEngine(FakeEngine):
    """FakeEngine whose rollout of one request id fails."""

    def __init__(self, fail_id: str, **kwargs):
        super().__init__(**kwargs)
        self.fail_id = fail_id
        self.scored = []

    def generate(self, requests):
        outs = super().generate(requests)
        for o in outs:
            if o.request_id == self.fail_id:
                o.completions, o.error = [], "boom"
        return outs

    def score(self, requests):
        self.scored.append(list(requests))
        return super().score(requests)


class _RefScorer:
    def __init__(self, fail_request: str = ""):
        self.fail_request = fail_request
        self.requests = []

    def score(self, requests):
        self.requests += requests
        return [
            ScoreResult([], 0, error="bad")
            if r.request_id == self.fail_request
            else ScoreResult([-3.0 if t == ord("!") else -1.0 for t in r.token_ids[r.target_start :]], 0)
            for r in requests
        ]


def _rows(n: int):
    img = Image.new("RGB", (8, 8))
    return [{"id": f"h{i}", "prompt": [{"role": "user", "content": "Describe the image."}], "images": [img],
             "objects": ["red circle"]} for i in range(n)]  # fmt: skip


def test_best_of_n_eval_reranks_with_the_implicit_reward_on_fakes():
    cfg = RLAIFVConfig(best_of_n=True, best_of_n_samples=3, temperature=0.7, max_tokens=16)
    engine = _FailingEngine("bon-h2", answer_fn=lambda req, k: ANSWERS[k], score_fn=lambda tok, pos: -1.0)
    ref = _RefScorer(fail_request="bon-h1-1")  # h1's best candidate cannot be scored
    out = best_of_n_eval(engine, ref, _rows(3), cfg, seed=5)
    req = engine.calls[0][0]
    assert (req.n, req.mode, req.sampling.temperature, req.sampling.max_tokens, req.sampling.seed) == (
        3,
        "fast",
        0.7,
        16,
        5,
    )
    assert all(r.temperature == 1.0 for r in engine.scored[0] + ref.requests)  # explicit, untempered
    assert len(engine.scored[0]) == len(ref.requests) == 6  # 2 ok prompts x 3 candidates
    expected = [
        implicit_reward([-1.0] * len(a), [-3.0 if c == "!" else -1.0 for c in a], cfg.dpo.beta)
        for a in ANSWERS
    ]
    assert max(range(3), key=expected.__getitem__) == 1
    # h0: candidate 1 (no hallucination); h1: candidate 1 unscored -> candidate 2 (mentions a square)
    assert (out["prompts"], out["failed_rollouts"], out["score_errors"], out["n"], out["reranked"]) == (
        2,
        1,
        1,
        3,
        2,
    )
    assert out["chair_s"] == pytest.approx(0.5) and out["cover"] == pytest.approx(1.0)
    assert out["random_sample"] == pytest.approx({"chair_i": 1.0, "chair_s": 1.0, "cover": 0.0})
    assert out["chair_i"] == pytest.approx(1 / 3)  # mentions: circle | circle, square
    md = summary_md({"rlaifv": {"best_of_n": out}}, [])
    assert "best-of-3" in md and "0.500" in md


def test_best_of_n_eval_with_every_rollout_failed():
    cfg = RLAIFVConfig(best_of_n=True, best_of_n_samples=2)
    engine = _FailingEngine("bon-h0", answer_fn=lambda req, k: ANSWERS[k])
    out = best_of_n_eval(engine, _RefScorer(), _rows(1), cfg, seed=0)
    assert (out["prompts"], out["failed_rollouts"], out["chair_i"], out["score_errors"]) == (0, 1, 0.0, 0)
    assert set(out["random_sample"]) == {"chair_i", "chair_s", "cover"}

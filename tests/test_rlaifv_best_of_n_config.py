"""Best-of-N with the implicit DPO reward (hand numbers) and the RLAIF-V config validation."""

from __future__ import annotations

import math

import pytest

from rewards.rlaifv.best_of_n import best_of_n, implicit_reward, rerank
from rewards.rlaifv.config import RLAIFVConfig, parse_labeler_spec, parse_splitter_spec
from rl.configlib import ConfigError, from_dict


def test_implicit_reward_by_hand():
    # (0.1 / 2) * ((-1 - -1.5) + (-2 - -3)) = 0.05 * 1.5 = 0.075
    assert implicit_reward([-1.0, -2.0], [-1.5, -3.0], beta=0.1) == pytest.approx(0.075)
    # length normalisation: the same per-token gain gives the same reward at any length
    assert implicit_reward([-1.0] * 4, [-2.0] * 4, 0.5) == pytest.approx(implicit_reward([-1.0], [-2.0], 0.5))
    assert implicit_reward([], [], 0.1) == 0.0
    assert implicit_reward([math.nan], [0.0], 0.1) == -math.inf
    with pytest.raises(ValueError):
        implicit_reward([-1.0], [], 0.1)


def test_rerank_and_best_of_n():
    assert rerank(["a", "b", "c"], [0.1, 0.3, 0.3]) == 1  # first on ties
    assert rerank(["a", "b"], [math.nan, -5.0]) == 1  # NaN ranks last
    with pytest.raises(ValueError):
        rerank([], [])
    # rewards: a = 0.1*(0.5)/1 = 0.05; b = 0.1*(1+1)/2 = 0.1; c = 0.1*(-1)/1 = -0.1
    idx, rewards = best_of_n(
        ["a", "b", "c"], [[-1.0], [-1.0, -1.0], [-2.0]], [[-1.5], [-2.0, -2.0], [-1.0]], 0.1
    )
    assert idx == 1 and rewards == pytest.approx([0.05, 0.1, -0.1])


def test_config_defaults_and_validation():
    cfg = from_dict(RLAIFVConfig, {})
    assert (cfg.rounds, cfg.n_samples, cfg.temperature, cfg.labeler, cfg.splitter) == (
        2,
        10,
        0.7,
        "self",
        "shapes",
    )
    assert (cfg.max_pairs_per_prompt, cfg.min_gap, cfg.dpo.beta, cfg.dpo.learning_rate) == (2, 1, 0.1, 5e-7)
    ok = from_dict(
        RLAIFVConfig,
        {
            "labeler": "model:org/vlm-7b",
            "splitter": "model:/models/llama",
            "dpo": {"trl": {"max_length": 256}},
        },
    )
    assert ok.dpo.dpo_kwargs()["max_length"] == 256 and ok.dpo.dpo_kwargs()["loss_type"] == ["sigmoid"]
    mixed = from_dict(RLAIFVConfig, {"dpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}})
    assert mixed.dpo.dpo_kwargs()["loss_type"] == ["sigmoid", "sft"] and mixed.dpo.dpo_kwargs()["loss_weights"] == [1.0, 0.5]
    assert parse_labeler_spec("model:org/vlm-7b") == ("model", "org/vlm-7b")
    assert parse_splitter_spec("shapes") == ("shapes", "")
    bad = [
        ({"labeler": "gpt4"}, "labeler"),
        ({"labeler": "model:"}, "labeler"),
        ({"splitter": "oracle"}, "splitter"),
        ({"min_gap": 0}, "min_gap"),
        ({"n_samples": 1}, "n_samples"),
        ({"temperature": 0.0}, "temperature"),
        ({"dpo": {"beta": -1.0}}, "dpo.beta"),
        ({"dpo": {"trl": {"beta": 0.2}}}, "dpo.trl.beta"),
        ({"dpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}}, "dpo.loss_weights"),
        ({"best_of_n": True, "best_of_n_samples": 1}, "best_of_n_samples"),
        ({"nonsense": 1}, "nonsense"),
    ]
    for data, key in bad:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            from_dict(RLAIFVConfig, data)

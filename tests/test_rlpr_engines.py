"""RLPR through a real vLLM actor and through the trainer model: the same r within 1e-4 (fp32)."""

from __future__ import annotations

import pytest

from policies.chat import encode_prompt
from policies.loading import PolicyConfig, load_policy
from policies.scoring import HFScorer
from rewards.rlpr import RLPRReward

pytestmark = [pytest.mark.ray, pytest.mark.vllm]


def test_rlpr_scores_agree_between_actor_and_trainer(rollout_pool, tiny_model_dir, shapes_small):
    model, processor, _ = load_policy(PolicyConfig(name_or_path=tiny_model_dir))
    rollout_pool.sync_from_model(model)  # the actor holds exactly the trainer's weights
    rows = [r for r in shapes_small["train"] if r["task"] == "freeform"][:3]
    completions, refs, prompt_ids, images, modes = [], [], [], [], []
    for r in rows:
        for mode, completion in (("deep", f"<think>{r['reasoning']}</think>\n\n{r['answer']}"), ("fast", "left")):
            completions.append(completion)
            refs.append(r["answer"])
            prompt_ids.append(encode_prompt(processor, list(r["prompt"]), list(r["images"]), mode))
            images.append(list(r["images"]))
            modes.append(mode)
    scores = {}
    for name, scorer in (("actor", rollout_pool), ("trainer", HFScorer(model.eval(), processor))):
        reward = RLPRReward(tokenizer=processor.tokenizer, scorer=scorer, debias="current")
        scores[name] = reward.score_batch(completions, refs, prompt_ids, images, modes)
    for a, t in zip(scores["actor"], scores["trainer"], strict=True):
        assert a.valid and t.valid and a.error is None
        assert abs(a.r - t.r) <= 1e-4 and abs(a.r_prime - t.r_prime) <= 1e-4
        assert 0.0 < a.r < 1.0

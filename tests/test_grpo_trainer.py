"""Hybrid GRPO trainer glue on the tiny model (transformers engine, no Ray): prompt alignment with
TRL's re-templating in both modes, one optimizer step that changes the policy, weight sync hook."""

from __future__ import annotations

import itertools

import pytest
import torch

from policies.hf_engine import HFEngine
from policies.loading import PolicyConfig, load_policy
from rewards.breakdown import RewardSuite
from rewards.config import RewardConfig, RewardSpec, StdFilterConfig
from rl.grpo_sampling import GroupSampler
from rl.grpo_trainer import HybridGRPOTrainer, check_prompt_alignment, precomputed_reward
from rl.stages.grpo import GRPOStageConfig, grpo_args
from rollouts.scheduler import ModeScheduler, ScheduleConfig
from rollouts.types import SamplingSettings


@pytest.fixture(scope="module")
def setup(tiny_model_dir, shapes_small):
    model, processor, _ = load_policy(PolicyConfig(name_or_path=tiny_model_dir))
    train = shapes_small["train"].filter(lambda t: t == "short", input_columns="task")
    engine = HFEngine(model, processor, {"deep": 16, "fast": 6})
    return model, processor, train, engine


def length_reward(prompts, completions, **kwargs):
    """A test reward that differs between samples of a group (so advantages are non-zero)."""
    return [len(c) / 100.0 for c in completions]


def _sampler(engine, processor, train, kind="fixed"):
    config = RewardConfig(rewards=[RewardSpec("accuracy", 0.9), RewardSpec("tests.test_grpo_trainer:length_reward", 1.0)])
    suite = RewardSuite.from_config(config, tokenizer=processor.tokenizer, scorer=engine)
    rows = itertools.cycle([train[i] for i in range(len(train))])
    return GroupSampler(engine, suite, ModeScheduler(ScheduleConfig(kind=kind)), StdFilterConfig(enabled=False),
                        rows, 2, SamplingSettings())


@pytest.mark.parametrize("kind", ["deep_only", "fast_only"])
def test_prompt_ids_and_image_tokens_match_trl_retemplating(setup, kind):
    model, processor, train, engine = setup
    groups, _ = _sampler(engine, processor, train, kind).sample([train[i] for i in range(3)])
    assert {g.mode for g in groups} == {kind.split("_")[0]}
    check_prompt_alignment(processor, groups, {})  # raises on any mismatch
    bad = groups[0]
    bad.rollout.prompt_ids = bad.rollout.prompt_ids[:-1]
    with pytest.raises(RuntimeError, match="differ"):
        check_prompt_alignment(processor, [bad], {})


def test_one_grpo_step_changes_the_policy_and_syncs(setup, tmp_path):
    model, processor, train, engine = setup
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = GRPOStageConfig(steps=1, prompts_per_step=2, num_generations=2, learning_rate=1e-2, save_steps=0)
    args = grpo_args(cfg, str(tmp_path), 16, 1.0, 0)
    args.report_to = []
    sampler = _sampler(engine, processor, train)
    trainer = HybridGRPOTrainer(model=model, reward_funcs=[precomputed_reward], args=args, train_dataset=train,
                                processing_class=processor, sampler=sampler, pool=engine)
    v0 = engine.version
    trainer.train()
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed, {k: v for k, v in trainer.state.log_history[0].items() if k.startswith(("reward", "frac", "sampling", "completions/clipped", "entropy"))}  # the optimizer stepped
    assert engine.version > v0  # TRL's weight-sync hook reached our engine
    assert trainer.state.global_step == 1
    log = trainer.state.log_history[0]
    assert "sampling/sampling_logp_difference/mean" in log and "modes/deep_share" in log
    assert log["frac_reward_zero_std"] < 1.0  # each completion kept its own reward

"""GroupSampler with a fake engine: shared modes per group, std filter with refill, batch size kept."""

from __future__ import annotations

import itertools

from rewards.breakdown import RewardSuite
from rewards.config import RewardConfig, RewardSpec, StdFilterConfig
from rl.grpo_sampling import GroupSampler
from rl.grpo_trainer import groups_to_rollout_output
from rollouts.fake import FakeEngine
from rollouts.scheduler import ModeScheduler, ScheduleConfig
from rollouts.types import SamplingSettings


def _rows(prefix: str, n: int, answer: str = "yes"):
    return [{"id": f"{prefix}{i}", "prompt": [{"role": "user", "content": f"q{i}?"}], "images": [],
             "answer": answer, "task": "short", "qtype": "exists", "objects": []} for i in range(n)]


def _answers(req, k):
    """Prompts whose id ends in an even digit get mixed answers (informative), odd ones constant."""
    informative = int(req.request_id.split("-")[-1][-1]) % 2 == 0
    word = ("yes" if k % 2 else "no") if informative else "no"
    return word if req.mode == "fast" else f"<think>look</think>\n\n{word}"


def _sampler(filter_cfg: StdFilterConfig, fresh):
    suite = RewardSuite([RewardSpec("accuracy", 1.0)], config=RewardConfig())
    return GroupSampler(FakeEngine(_answers), suite, ModeScheduler(ScheduleConfig(kind="fixed", deep_ratio=0.5)),
                        filter_cfg, fresh, 4, SamplingSettings())


def test_groups_share_one_mode_and_outputs_align():
    sampler = _sampler(StdFilterConfig(enabled=False), iter(()))
    groups, stats = sampler.sample(_rows("p", 4))
    assert len(groups) == 4 and stats.deep_share == 0.5
    out = groups_to_rollout_output(groups)
    assert len(out["completion_ids"]) == 16 == len(out["reward_total"])
    for g in range(4):
        assert len(set(out["mode"][g * 4 : (g + 1) * 4])) == 1


def test_std_filter_drops_flat_groups_and_refills_to_the_batch_size():
    fresh = itertools.cycle(_rows("fresh", 10))
    sampler = _sampler(StdFilterConfig(enabled=True, beta=0.5, warmup_steps=1, max_rounds=6), fresh)
    sampler.sample(_rows("w", 4))  # warm-up step: nothing filtered, EMA seeded
    assert sampler.filter_state.ema is not None and sampler.filter_state.ema > 0
    groups, stats = sampler.sample(_rows("p", 4))
    assert len(groups) == 4  # batch size kept
    assert stats.dropped >= 2 and stats.kept == 4 and stats.padded == 0
    assert all(g.std > 0 for g in groups)  # only informative groups were kept
    assert any(str(g.row["id"]).startswith("fresh") for g in groups)  # refilled from fresh prompts


def test_sampler_state_round_trips():
    sampler = _sampler(StdFilterConfig(enabled=True, warmup_steps=1), iter(_rows("f", 50)))
    sampler.sample(_rows("p", 4))
    state = sampler.state_dict()
    other = _sampler(StdFilterConfig(enabled=True, warmup_steps=1), iter(()))
    other.load_state_dict(state)
    assert other.filter_state == sampler.filter_state and other.scheduler.step == sampler.scheduler.step

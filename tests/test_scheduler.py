"""Thinking-mode scheduler: configured deep shares over many draws, seeded reproducibility, state."""

from __future__ import annotations

import pytest

from rl.configlib import ConfigError, from_dict
from rollouts.scheduler import ModeScheduler, ScheduleConfig, annealed_share


def _share(sched: ModeScheduler, batches: int = 200, size: int = 16, step=None) -> float:
    modes = [m for _ in range(batches) for m in sched.assign([f"p{i}" for i in range(size)], step)]
    return modes.count("deep") / len(modes)


@pytest.mark.parametrize("ratio", [0.5, 0.25, 0.7])
def test_fixed_ratio_share(ratio):
    assert _share(ModeScheduler(ScheduleConfig(kind="fixed", deep_ratio=ratio))) == pytest.approx(ratio, abs=0.02)


def test_fixed_ratio_is_exact_per_batch_when_integral():
    sched = ModeScheduler(ScheduleConfig(kind="fixed", deep_ratio=0.5))
    for _ in range(20):
        assert sched.assign([str(i) for i in range(8)]).count("deep") == 4


def test_deep_and_fast_only():
    assert _share(ModeScheduler(ScheduleConfig(kind="deep_only")), 5) == 1.0
    assert _share(ModeScheduler(ScheduleConfig(kind="fast_only")), 5) == 0.0


def test_annealed_share_moves_linearly():
    cfg = ScheduleConfig(kind="annealed", anneal_start=0.8, anneal_end=0.2, anneal_steps=10)
    assert [round(annealed_share(0.8, 0.2, 10, s), 2) for s in (0, 5, 10, 20)] == [0.8, 0.5, 0.2, 0.2]
    sched = ModeScheduler(cfg)
    assert _share(sched, 300, 10, step=0) == pytest.approx(0.8, abs=0.03)
    assert _share(sched, 300, 10, step=10) == pytest.approx(0.2, abs=0.03)


def test_adaptive_prefers_deep_for_hard_prompts():
    sched = ModeScheduler(ScheduleConfig(kind="adaptive", adaptive_threshold=0.5, adaptive_explore=0.1))
    for _ in range(3):
        sched.observe("hard", "fast", 0.0)
        sched.observe("easy", "fast", 1.0)
        sched.observe("easy", "deep", 0.0)  # deep results do not steer the schedule
    draws = [sched.assign(["hard", "easy"]) for _ in range(500)]
    hard_deep = sum(d[0] == "deep" for d in draws) / 500
    easy_deep = sum(d[1] == "deep" for d in draws) / 500
    assert hard_deep == pytest.approx(0.9, abs=0.04)
    assert easy_deep == pytest.approx(0.1, abs=0.04)
    unseen = _share(ModeScheduler(ScheduleConfig(kind="adaptive", deep_ratio=0.5)), 100, 10)
    assert unseen == pytest.approx(0.5, abs=0.04)


def test_same_seed_same_modes_and_state_round_trip():
    cfg = ScheduleConfig(kind="fixed", deep_ratio=0.3, seed=7)
    a, b = ModeScheduler(cfg), ModeScheduler(cfg)
    keys = [str(i) for i in range(10)]
    assert [a.assign(keys) for _ in range(5)] == [b.assign(keys) for _ in range(5)]
    assert ModeScheduler(ScheduleConfig(kind="fixed", deep_ratio=0.3, seed=8)).assign(keys * 3) != a.assign(keys * 3)
    state = a.state_dict()
    c = ModeScheduler(cfg)
    c.load_state_dict(state)
    assert [a.assign(keys) for _ in range(3)] == [c.assign(keys) for _ in range(3)]


def test_bad_schedule_config_named():
    with pytest.raises(ConfigError, match=r"'deep_ratio': must be between 0 and 1"):
        from_dict(ScheduleConfig, {"deep_ratio": 1.5})
    with pytest.raises(ConfigError, match=r"'kind'"):
        from_dict(ScheduleConfig, {"kind": "sometimes"})

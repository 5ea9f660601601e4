"""Standard-deviation filter: group stds, the EMA threshold trajectory, refill, checkpoint state.

Expected numbers are written out by hand below (β = 0.5, ratio = 0.9, warm-up 2 steps).
"""

from __future__ import annotations

import json
import math

import pytest

from rewards.std_filter import (
    StdFilterState,
    apply_std_filter,
    fill_batch,
    group_stds,
    std_threshold,
    update_std_state,
)
from rl.configlib import FieldError


def test_group_stds_are_bessel_corrected():
    stds = group_stds([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 2.0, None], 2)
    assert stds[0] == pytest.approx(math.sqrt(0.5))  # [1, 0]: var = 0.5 with ddof=1 (0.25 with ddof=0)
    assert stds[1] == 0.0
    assert stds[2] == pytest.approx(math.sqrt(0.5))
    assert stds[3] == 0.0  # one finite reward left
    assert group_stds([0.0, 1.0, 2.0], 3) == [pytest.approx(1.0)]
    with pytest.raises(ValueError):
        group_stds([1.0, 2.0, 3.0], 2)


# Scripted run, β = 0.5, ratio = 0.9, warm-up = 2 steps. Hand computation:
#   step 0  stds .2 .4        m = .3     warm-up, keep all
#   step 1  stds .1 .3        m = .2     warm-up, keep all; EMA := (.3 + .2)/2 = .25
#   step 2  stds .1 .2 .6     m = .3     thr = .5·.25 = .125  keep F T T ; EMA = .9·.25 + .1·.3 = .255
#   step 3  stds 0 .5         m = .25    thr = .1275         keep F T   ; EMA = .9·.255 + .1·.25 = .2545
#   step 4  stds .127 .128    m = .1275  thr = .12725        keep F T   ; EMA = .9·.2545 + .1·.1275 = .2418
SCRIPT = [[0.2, 0.4], [0.1, 0.3], [0.1, 0.2, 0.6], [0.0, 0.5], [0.127, 0.128]]
EXPECTED_THRESHOLDS = [None, None, 0.125, 0.1275, 0.12725]
EXPECTED_EMAS = [None, 0.25, 0.255, 0.2545, 0.2418]
EXPECTED_KEEP = [[True, True], [True, True], [False, True, True], [False, True], [False, True]]


def test_threshold_trajectory_matches_hand_computed_ema():
    state = StdFilterState(beta=0.5, ema_ratio=0.9, warmup_steps=2)
    for step, stds in enumerate(SCRIPT):
        keep, state, stats = apply_std_filter(stds, state)
        if EXPECTED_THRESHOLDS[step] is None:
            assert stats.threshold is None
        else:
            assert stats.threshold == pytest.approx(EXPECTED_THRESHOLDS[step])
        if EXPECTED_EMAS[step] is None:
            assert state.ema is None
        else:
            assert state.ema == pytest.approx(EXPECTED_EMAS[step])
        assert keep == EXPECTED_KEEP[step]
        assert (stats.kept, stats.dropped) == (sum(keep), len(keep) - sum(keep))
        assert state.step == step + 1


def test_no_warmup_seeds_ema_with_first_step_mean():
    state = StdFilterState(beta=0.5, ema_ratio=0.9, warmup_steps=0)
    keep, state, stats = apply_std_filter([0.1, 0.5], state)  # m = .3 → EMA .3, thr .15
    assert stats.threshold == pytest.approx(0.15) and keep == [False, True]
    assert state.ema == pytest.approx(0.3)
    keep, state, stats = apply_std_filter([0.1, 0.2], state)  # thr .15; EMA = .9·.3 + .1·.15 = .285
    assert keep == [False, True] and state.ema == pytest.approx(0.285)


def test_state_round_trips_through_dict_mid_run():
    state = StdFilterState(beta=0.5, ema_ratio=0.9, warmup_steps=2)
    for stds in SCRIPT[:3]:
        _, state, _ = apply_std_filter(stds, state)
    restored = StdFilterState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    keep_a, state_a, _ = apply_std_filter(SCRIPT[3], state)
    keep_b, state_b, _ = apply_std_filter(SCRIPT[3], restored)
    assert keep_a == keep_b and state_a == state_b
    with pytest.raises(ValueError, match="unknown"):
        StdFilterState.from_dict({"beta": 0.5, "bogus": 1})
    with pytest.raises(FieldError):
        StdFilterState(ema_ratio=1.5).validate()


def test_threshold_and_update_primitives_compose_for_refill():
    state = StdFilterState(beta=0.5, ema_ratio=0.9, warmup_steps=1)
    assert std_threshold(state) is None
    state = update_std_state(state, 0.4)  # end of warm-up: EMA = .4
    assert std_threshold(state) == pytest.approx(0.2)
    state = update_std_state(state, 0.2)  # EMA = .9·.4 + .1·.2 = .38
    assert state.ema == pytest.approx(0.38)


class ScriptedSampler:
    """Hands out pre-scripted groups (here: just their std) and records each request size."""

    def __init__(self, stds):
        self.queue = list(stds)
        self.asked = []

    def __call__(self, k):
        self.asked.append(k)
        out, self.queue = self.queue[:k], self.queue[k:]
        return out


def test_refill_keeps_the_batch_size():
    sampler = ScriptedSampler([0.5, 0.0, 0.4, 0.1, 0.0, 0.6, 0.7, 0.9])
    batch, stats = fill_batch(4, sampler, lambda s: s >= 0.3, max_rounds=5, std_fn=lambda s: s)
    assert batch == [0.5, 0.4, 0.6, 0.7]
    assert sampler.asked == [4, 2, 1]  # round 1 keeps 2, round 2 keeps 1 (.0 .6), round 3 keeps .7
    assert (stats.rounds, stats.sampled, stats.kept, stats.dropped, stats.padded) == (3, 7, 4, 3, 0)


def test_refill_pads_with_best_dropped_after_max_rounds():
    sampler = ScriptedSampler([0.5, 0.1, 0.2, 0.0, 0.25, 0.05, 0.02, 0.9])
    batch, stats = fill_batch(4, sampler, lambda s: s >= 0.3, max_rounds=2, std_fn=lambda s: s)
    assert len(batch) == 4
    assert batch == [0.5, 0.25, 0.2, 0.1]  # kept first, then dropped by std, highest first
    assert (stats.kept, stats.padded, stats.short) == (1, 3, 0)
    assert "padded with 3" in stats.message


def test_refill_when_sampling_runs_dry():
    batch, stats = fill_batch(3, ScriptedSampler([0.0, 0.5]), lambda s: s >= 0.3, max_rounds=4)
    assert batch == [0.5, 0.0] and stats.short == 1 and stats.padded == 1
    assert "ran dry" in stats.message

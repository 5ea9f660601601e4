"""Rollout benchmark (`rollouts.bench`): argument handling that needs no engine."""

from __future__ import annotations

import pytest

from rollouts import bench


def test_policy_folder_without_a_model_is_named(tmp_path):
    with pytest.raises(SystemExit, match=r"--policy .*not a model folder"):
        bench.run("tiny", 2, 2, 4, 1, policy=str(tmp_path))


def test_mean_tokens_counts_every_sample_of_every_repeat():
    from rollouts.types import RolloutRequest, SamplingSettings

    reqs = [RolloutRequest(f"r{i}", [], [], "fast", 4, SamplingSettings()) for i in range(3)]
    assert bench._mean_tokens(240, reqs, 2) == 10.0

"""The rollout boundary: what a generation engine must offer to the trainer and the rewards.

One real implementation (a Ray actor owning an in-process `vllm.LLM`, `rollouts.actor`) and one
in-process fake for unit tests (`rollouts.fake.FakeEngine`). Rewards depend only on `Scorer`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from rollouts.types import Rollout, RolloutRequest, ScoreRequest, ScoreResult


@runtime_checkable
class Scorer(Protocol):
    """Teacher-forced log-probs of fixed sequences (RLPR scores, yes/no labels)."""

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]: ...


@runtime_checkable
class Engine(Scorer, Protocol):
    """A generation engine holding one copy of the policy weights at a known version."""

    def generate(self, requests: list[RolloutRequest]) -> list[Rollout]: ...

    def update_weights(self, named_tensors: list[tuple[str, Any]], version: int) -> int:
        """Load the given parameters (HF names) and return the new version."""
        ...

    def health(self) -> dict[str, Any]:
        """`{"ok": bool, "version": int, ...}`; cheap, safe to call at any time."""
        ...

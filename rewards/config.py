"""Reward configuration: the weighted reward list, RLPR settings, accuracy routing, std filter.

Defaults follow RLPR's composition R = (1 − c)·accuracy + c·format + repetition with c = 0.1
(arXiv 2506.18254) and MiniCPM-V 4.5's per-task choice of rule verifier vs RLPR (arXiv
2509.18154). Loaded by `rl.configlib.from_dict`; `validate()` raises `FieldError` naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from rewards.accuracy import TASKS, routing_errors
from rewards.registry import UnknownRewardError, check_reward_name
from rewards.std_filter import StdFilterState
from rl.configlib import FieldError


@dataclass
class RewardSpec:
    """One reward of the sum: a registered name or dotted path, its weight and its params."""

    name: str
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.name:
            raise FieldError("name", "must name a reward")
        if not math.isfinite(self.weight):
            raise FieldError("weight", f"must be a finite number, got {self.weight!r}")
        try:
            check_reward_name(self.name)
        except UnknownRewardError as exc:
            raise FieldError("name", str(exc)) from None


@dataclass
class RLPRConfig:
    """RLPR settings. `temperature` must equal the rollout temperature (logits / T)."""

    debias: Literal["initial", "current", "none"] = "initial"
    temperature: float = 1.0
    precompute: bool = True  # fill the r' cache from the initial policy before training
    precompute_batch_size: int = 256

    def validate(self) -> None:
        if not self.temperature > 0:
            raise FieldError("temperature", f"must be > 0, got {self.temperature!r}")
        if self.precompute_batch_size < 1:
            raise FieldError("precompute_batch_size", f"must be >= 1, got {self.precompute_batch_size!r}")

    def reward_params(self) -> dict[str, Any]:
        """Constructor params of `RLPRReward`."""
        return {"debias": self.debias, "temperature": self.temperature}


@dataclass
class StdFilterConfig:
    """Std filter settings (RLPR dynamic sampling); see `rewards.std_filter`."""

    enabled: bool = True
    beta: float = 0.5  # 0.5 Qwen, 0.9 Llama, 1.0 Gemma (RLPR)
    ema_ratio: float = 0.99
    warmup_steps: int = 10  # our choice: steps without filtering whose mean std seeds the EMA
    max_rounds: int = 4  # refill rounds before padding with the best dropped groups

    def validate(self) -> None:
        self.initial_state().validate()
        if self.max_rounds < 1:
            raise FieldError("max_rounds", f"must be >= 1, got {self.max_rounds!r}")

    def initial_state(self) -> StdFilterState:
        return StdFilterState(beta=self.beta, ema_ratio=self.ema_ratio, warmup_steps=self.warmup_steps)


def default_rewards() -> list[RewardSpec]:
    """accuracy 0.9 + format 0.1 + repetition 1.0: R = (1 − c)·acc + c·format + rep, c = 0.1."""
    return [RewardSpec("accuracy", 0.9), RewardSpec("format", 0.1), RewardSpec("repetition", 1.0)]


@dataclass
class RewardConfig:
    """All reward settings of a GRPO run."""

    rewards: list[RewardSpec] = field(default_factory=default_rewards)
    rlpr: RLPRConfig = field(default_factory=RLPRConfig)
    routing: dict[str, str] = field(default_factory=dict)  # e.g. {"freeform.fast": "rlpr"}
    default_task: str = "short"  # task of rows without a `task` column
    std_filter: StdFilterConfig = field(default_factory=StdFilterConfig)

    def validate(self) -> None:
        if not self.rewards:
            raise FieldError("rewards", "needs at least one reward")
        seen: set[str] = set()
        for i, spec in enumerate(self.rewards):
            try:
                spec.validate()
            except FieldError as exc:
                raise FieldError(f"rewards[{i}].{exc.field}", exc.message) from None
            if spec.name in seen:
                raise FieldError(f"rewards[{i}].name", f"reward {spec.name!r} is listed twice")
            seen.add(spec.name)
        for key, message in routing_errors(self.routing):
            raise FieldError(f"routing.{key}", message)
        if self.default_task not in TASKS:
            raise FieldError("default_task", f"must be one of {list(TASKS)}, got {self.default_task!r}")
        for name, sub in (("rlpr", self.rlpr), ("std_filter", self.std_filter)):
            try:
                sub.validate()
            except FieldError as exc:
                raise FieldError(f"{name}.{exc.field}", exc.message) from None

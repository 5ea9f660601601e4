"""Thinking-mode scheduler: which prompts of a batch are sampled in deep vs fast mode.

Every sample of one prompt shares its mode, so GRPO's group normalisation compares like with like
(MiniCPM-V 4.5 runs 50% of prompts in deep mode). Schedules:

- `fixed`: a share `deep_ratio` of each batch (stochastic rounding of the count, random positions);
- `deep_only` / `fast_only`;
- `annealed`: the share moves linearly from `anneal_start` to `anneal_end` over `anneal_steps`;
- `adaptive`: deep for prompts whose recent fast-mode group accuracy is below `adaptive_threshold`,
  fast for those above; prompts with no fast-mode history are deep with probability
  `deep_ratio`, and a share `adaptive_explore` is flipped to keep re-measuring.

Seeded (numpy PCG64); `state_dict()` / `load_state_dict()` round-trip through checkpoints.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rl.configlib import FieldError

KINDS = ("fixed", "deep_only", "fast_only", "annealed", "adaptive")


@dataclass
class ScheduleConfig:
    kind: Literal["fixed", "deep_only", "fast_only", "annealed", "adaptive"] = "fixed"
    deep_ratio: float = 0.5
    anneal_start: float = 0.8
    anneal_end: float = 0.2
    anneal_steps: int = 100
    adaptive_threshold: float = 0.75
    adaptive_window: int = 4
    adaptive_explore: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        for name in ("deep_ratio", "anneal_start", "anneal_end", "adaptive_threshold", "adaptive_explore"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FieldError(name, "must be between 0 and 1")
        if self.anneal_steps <= 0:
            raise FieldError("anneal_steps", "must be positive")
        if self.adaptive_window <= 0:
            raise FieldError("adaptive_window", "must be positive")


def annealed_share(start: float, end: float, steps: int, step: int) -> float:
    """Linear interpolation from `start` (step 0) to `end` (step >= `steps`)."""
    frac = min(max(step, 0) / steps, 1.0)
    return start + (end - start) * frac


class ModeScheduler:
    def __init__(self, cfg: ScheduleConfig):
        self.cfg = cfg
        self.rng = np.random.Generator(np.random.PCG64(cfg.seed))
        self.step = 0
        self.fast_history: dict[str, deque[float]] = {}

    def deep_share(self, step: int | None = None) -> float:
        """The target share of deep-mode prompts at `step` (adaptive: its prior for unseen prompts)."""
        step = self.step if step is None else step
        kind = self.cfg.kind
        if kind == "deep_only":
            return 1.0
        if kind == "fast_only":
            return 0.0
        if kind == "annealed":
            return annealed_share(self.cfg.anneal_start, self.cfg.anneal_end, self.cfg.anneal_steps, step)
        return self.cfg.deep_ratio

    def _quota(self, n: int, share: float) -> list[str]:
        exact = share * n
        k = int(np.floor(exact)) + int(self.rng.random() < exact - np.floor(exact))
        modes = np.array(["fast"] * n, dtype=object)
        modes[self.rng.permutation(n)[:k]] = "deep"
        return list(modes)

    def _adaptive(self, keys: list[str]) -> list[str]:
        out = []
        for key in keys:
            hist = self.fast_history.get(key)
            if hist:
                mode = "deep" if float(np.mean(hist)) < self.cfg.adaptive_threshold else "fast"
            else:
                mode = "deep" if self.rng.random() < self.cfg.deep_ratio else "fast"
            if self.rng.random() < self.cfg.adaptive_explore:
                mode = "fast" if mode == "deep" else "deep"
            out.append(mode)
        return out

    def assign(self, prompt_keys: list[str], step: int | None = None) -> list[str]:
        """Modes for one batch of distinct prompts; advances the scheduler's step."""
        if step is not None:
            self.step = step
        if self.cfg.kind == "adaptive":
            modes = self._adaptive(prompt_keys)
        else:
            modes = self._quota(len(prompt_keys), self.deep_share())
        self.step += 1
        return modes

    def observe(self, prompt_key: str, mode: str, accuracy: float) -> None:
        """Record a prompt's group accuracy; only fast-mode results steer the adaptive schedule."""
        if mode != "fast":
            return
        hist = self.fast_history.setdefault(prompt_key, deque(maxlen=self.cfg.adaptive_window))
        hist.append(float(accuracy))

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "rng": self.rng.bit_generator.state,
            "fast_history": {k: list(v) for k, v in self.fast_history.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.rng.bit_generator.state = state["rng"]
        self.fast_history = {
            k: deque(v, maxlen=self.cfg.adaptive_window) for k, v in state["fast_history"].items()
        }

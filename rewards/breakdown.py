"""The reward suite: the configured weighted sum of rewards, with a per-completion breakdown.

`RewardSuite` builds the configured rewards (name, weight, params) from the registry, computes
every component for a batch, the weighted total (TRL's semantics: None components are skipped,
like its nansum), and the RLPR pieces r, r', r̂ where a completion went through RLPR.
`summarise_by_mode` averages each component per thinking mode — RLPR's fast-mode caveat
(r ≈ r') makes per-mode reporting necessary (ALGORITHMS.md §1.9).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rewards.accuracy import AccuracyScore
from rewards.common import column, modes_column
from rewards.config import RewardConfig, RewardSpec, default_rewards
from rewards.registry import resolve_reward
from rewards.rlpr import RLPRReward, RLPRScore


@dataclass
class RewardBreakdown:
    """Every reward component of one completion and their weighted total."""

    total: float  # Σ weight·component over non-None components
    components: dict[str, float | None] = field(default_factory=dict)  # unweighted, by reward name
    mode: str = "deep"
    task: str | None = None
    accuracy_route: str | None = None  # "rule" | "rlpr" | "rlpr_nodebias" when routed
    rlpr_r: float | None = None
    rlpr_r_prime: float | None = None
    rlpr_reward: float | None = None  # r̂
    rlpr_valid: bool | None = None
    rlpr_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RewardSuite:
    """The configured rewards as one TRL reward function plus a per-completion breakdown.

    Registered rewards "accuracy" and "rlpr" get the config's RLPR settings, routing and default
    task unless their spec's params override them. `__call__` returns the totals;
    `last_breakdown` keeps the last batch's `RewardBreakdown`s.
    """

    def __init__(
        self,
        specs: Sequence[RewardSpec | Mapping[str, Any]] | None = None,
        config: RewardConfig | None = None,
        tokenizer: Any = None,
        scorer: Any = None,
    ):
        config = config or RewardConfig()
        raw = list(specs) if specs is not None else list(config.rewards or default_rewards())
        self.specs = [s if isinstance(s, RewardSpec) else RewardSpec(**dict(s)) for s in raw]
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"reward names must be unique, got {names}")
        self.funcs = [resolve_reward(s.name, **self._params(s, config)) for s in self.specs]
        self.last_breakdown: list[RewardBreakdown] = []
        self.__name__ = "reward_suite"
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)
        if scorer is not None:
            self.set_scorer(scorer)

    @classmethod
    def from_config(cls, config: RewardConfig, tokenizer: Any = None, scorer: Any = None) -> RewardSuite:
        return cls(config.rewards, config=config, tokenizer=tokenizer, scorer=scorer)

    @staticmethod
    def _params(spec: RewardSpec, config: RewardConfig) -> dict[str, Any]:
        if spec.name == "accuracy":
            base: dict[str, Any] = {
                "routing": dict(config.routing),
                "rlpr": config.rlpr.reward_params(),
                "default_task": config.default_task,
            }
        elif spec.name == "rlpr":
            base = config.rlpr.reward_params()
        else:
            base = {}
        return {**base, **spec.params}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def weights(self) -> list[float]:
        return [s.weight for s in self.specs]

    def _each(self, method: str, *args: Any) -> None:
        for fn in self.funcs:
            if callable(getattr(fn, method, None)):
                getattr(fn, method)(*args)

    def set_scorer(self, scorer: Any) -> None:
        self._each("set_scorer", scorer)

    def set_tokenizer(self, tokenizer: Any) -> None:
        self._each("set_tokenizer", tokenizer)

    def rlpr_rewards(self) -> list[RLPRReward]:
        """The RLPR rewards inside the suite (to `precompute` their debias caches)."""
        out = []
        for fn in self.funcs:
            inner = getattr(fn, "rlpr", fn)
            if isinstance(inner, RLPRReward):
                out.append(inner)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state of the rewards that have one (the RLPR r' caches)."""
        return {
            name: fn.state_dict()
            for name, fn in zip(self.names, self.funcs, strict=True)
            if hasattr(fn, "state_dict")
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, fn in zip(self.names, self.funcs, strict=True):
            if name in state and hasattr(fn, "load_state_dict"):
                fn.load_state_dict(state[name])

    def compute(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[RewardBreakdown]:
        """Every component and the weighted total of each completion."""
        n = len(completions)
        modes = modes_column(columns, n)
        tasks = column(columns, "task", n)
        out = [RewardBreakdown(total=0.0, mode=modes[i], task=tasks[i]) for i in range(n)]
        for spec, fn in zip(self.specs, self.funcs, strict=True):
            values = list(fn(prompts, completions, **columns))
            if len(values) != n:
                raise RuntimeError(f"reward {spec.name!r} returned {len(values)} values for {n} completions")
            details = getattr(fn, "last_breakdown", None)
            for i, value in enumerate(values):
                value = None if value is None else float(value)
                out[i].components[spec.name] = value
                if value is not None:
                    out[i].total += spec.weight * value
                if details is not None and len(details) == n:
                    _attach_detail(out[i], details[i])
        self.last_breakdown = out
        return out

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        return [b.total for b in self.compute(prompts, completions, **columns)]


def _attach_detail(row: RewardBreakdown, detail: Any) -> None:
    """Copy the route and RLPR pieces of a reward's per-row detail into the breakdown."""
    if isinstance(detail, AccuracyScore):
        row.accuracy_route = detail.route
        detail = detail.rlpr
    if isinstance(detail, RLPRScore):
        row.rlpr_r = detail.r
        row.rlpr_r_prime = detail.r_prime
        row.rlpr_reward = detail.reward
        row.rlpr_valid = detail.valid
        row.rlpr_error = detail.error


_SUMMARY_FIELDS = ("total", "rlpr_r", "rlpr_r_prime", "rlpr_reward", "rlpr_valid")


def summarise_by_mode(
    breakdowns: Sequence[RewardBreakdown], modes: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """{mode: {"count", "total", each component, "rlpr_r", "rlpr_r_prime", "rlpr_reward",
    "rlpr_valid" (a rate), "route/<route>" (a share)}}: means over the completions of each mode
    where the value is present (keys with no value in a mode are left out).

    `modes` defaults to each breakdown's own `mode`.
    """
    modes = list(modes) if modes is not None else [b.mode for b in breakdowns]
    if len(modes) != len(breakdowns):
        raise ValueError(f"{len(modes)} modes for {len(breakdowns)} breakdowns")
    grouped: dict[str, dict[str, list[float]]] = {}
    for b, mode in zip(breakdowns, modes, strict=True):
        acc = grouped.setdefault(mode, {})
        acc.setdefault("count", []).append(1.0)
        values: dict[str, Any] = {k: getattr(b, k) for k in _SUMMARY_FIELDS}
        values.update(b.components)
        if b.accuracy_route is not None:
            values[f"route/{b.accuracy_route}"] = 1.0
        for key, value in values.items():
            if value is not None:
                acc.setdefault(key, []).append(float(value))
    out: dict[str, dict[str, float]] = {}
    for mode, acc in grouped.items():
        count = len(acc["count"])
        out[mode] = {"count": float(count)}
        for key, vals in acc.items():
            if key == "count":
                continue
            out[mode][key] = float(sum(vals) / count) if key.startswith("route/") else float(np.mean(vals))
    return out


def flatten_summary(summary: Mapping[str, Mapping[str, float]], prefix: str = "rewards") -> dict[str, float]:
    """{"rewards/deep/accuracy": 0.5, ...}: `summarise_by_mode` as flat metric names for loggers."""
    return {
        f"{prefix}/{mode}/{key}": value for mode, stats in summary.items() for key, value in stats.items()
    }

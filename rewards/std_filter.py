"""Standard-deviation filtering of prompt groups (RLPR's dynamic sampling) and batch refill.

RLPR (arXiv 2506.18254, §"standard deviation filtering"): a group whose rewards barely vary
carries no learning signal, so keep group g iff s_g ≥ β·EMA, where s_g is the (Bessel,
ddof=1) std of its final rewards and EMA tracks the per-step mean m_t of the s_g. β = 0.5
(Qwen), 0.9 (Llama), 1.0 (Gemma); EMA ratio 0.99. Dropped groups are replaced by fresh prompts.

Choices where the paper/code are silent or broken (the released code fails to initialise the
EMA with its own warm-up setting):

- stds and m_t are computed every step from step 0;
- during the `warmup_steps` first steps nothing is filtered; their m_t are collected and at the
  end of warm-up EMA = mean of those m_t (with `warmup_steps == 0`, EMA = m_0 at step 0);
- after warm-up the threshold uses the EMA *before* this step's update, then
  EMA ← ratio·EMA + (1 − ratio)·m_t, with m_t the mean over *all* groups sampled this step
  (before filtering; refill rounds included when they are passed in).

State is an immutable-by-convention dataclass: every function returns a new one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from rl.configlib import FieldError

G = TypeVar("G")


def group_stds(rewards: Sequence[float | None], group_size: int) -> list[float]:
    """Bessel-corrected (ddof=1) std of each consecutive group of `group_size` rewards.

    None/NaN rewards are ignored; a group with fewer than 2 finite rewards has std 0.0.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for a sample std, got {group_size}")
    if len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    values = np.array([np.nan if r is None else float(r) for r in rewards], dtype=np.float64)
    out = []
    for group in values.reshape(-1, group_size):
        finite = group[np.isfinite(group)]
        out.append(float(np.std(finite, ddof=1)) if finite.size >= 2 else 0.0)
    return out


@dataclass
class StdFilterState:
    """Settings and running state of the std filter (checkpointed with `to_dict`/`from_dict`)."""

    beta: float = 0.5
    ema_ratio: float = 0.99
    warmup_steps: int = 10
    ema: float | None = None  # None until warm-up ends
    step: int = 0  # training steps seen
    warmup_means: list[float] = field(default_factory=list)  # m_t of the warm-up steps

    def validate(self) -> None:
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise FieldError("beta", f"must be a number >= 0, got {self.beta!r}")
        if not 0.0 <= self.ema_ratio <= 1.0:
            raise FieldError("ema_ratio", f"must be in [0, 1], got {self.ema_ratio!r}")
        if self.warmup_steps < 0:
            raise FieldError("warmup_steps", f"must be >= 0, got {self.warmup_steps!r}")

    @property
    def in_warmup(self) -> bool:
        return self.step < self.warmup_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StdFilterState:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown std-filter state keys {unknown}; known: {sorted(known)}")
        state = cls(**{k: (list(v) if k == "warmup_means" else v) for k, v in data.items()})
        state.validate()
        return state


@dataclass
class StdFilterStats:
    """What one step of the filter did, for logging."""

    step: int
    mean_std: float  # m_t
    threshold: float | None  # β·EMA used this step; None during warm-up (nothing filtered)
    ema: float | None  # EMA after this step's update
    kept: int
    dropped: int

    def as_dict(self) -> dict[str, float]:
        out = {
            "step": float(self.step),
            "mean_std": self.mean_std,
            "kept": float(self.kept),
            "dropped": float(self.dropped),
        }
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.ema is not None:
            out["ema"] = self.ema
        return out


def std_threshold(state: StdFilterState, step_mean: float | None = None) -> float | None:
    """The keep threshold β·EMA for the current step, or None while warming up.

    With `warmup_steps == 0` and no EMA yet, the EMA starts at this step's mean `step_mean`
    (None if not given).
    """
    if state.in_warmup:
        return None
    if state.ema is None:
        return None if step_mean is None else state.beta * step_mean
    return state.beta * state.ema


def update_std_state(state: StdFilterState, step_mean: float) -> StdFilterState:
    """Advance the state by one training step whose groups had mean std `step_mean`."""
    if state.in_warmup:
        means = [*state.warmup_means, float(step_mean)]
        ema = float(np.mean(means)) if state.step + 1 == state.warmup_steps else None
        return dataclasses.replace(state, step=state.step + 1, warmup_means=means, ema=ema)
    prev = float(step_mean) if state.ema is None else state.ema
    ema = state.ema_ratio * prev + (1.0 - state.ema_ratio) * float(step_mean)
    return dataclasses.replace(state, step=state.step + 1, ema=ema)


def apply_std_filter(
    group_stds: Sequence[float], state: StdFilterState
) -> tuple[list[bool], StdFilterState, StdFilterStats]:
    """One step of the filter: (keep mask, new state, stats).

    Keeps group g iff s_g ≥ β·EMA (EMA before this step's update); keeps all during warm-up.
    """
    if len(group_stds) == 0:
        raise ValueError("apply_std_filter needs at least one group")
    stds = [float(s) for s in group_stds]
    mean = float(np.mean(stds))
    threshold = std_threshold(state, mean)
    keep = [True] * len(stds) if threshold is None else [s >= threshold for s in stds]
    new_state = update_std_state(state, mean)
    stats = StdFilterStats(
        step=state.step,
        mean_std=mean,
        threshold=threshold,
        ema=new_state.ema,
        kept=sum(keep),
        dropped=len(keep) - sum(keep),
    )
    return keep, new_state, stats


@dataclass
class FillStats:
    """How `fill_batch` assembled a batch."""

    rounds: int  # calls to sample_groups_fn
    sampled: int  # groups sampled in all
    kept: int  # groups in the batch that passed keep_fn
    dropped: int  # groups that failed keep_fn
    padded: int  # dropped groups put back (highest std first) to reach the target
    short: int  # target − batch size; > 0 only when sampling returned nothing more
    surplus: int = 0  # groups that passed but were beyond the target (sampler over-delivered)
    stds: list[float] = field(default_factory=list)  # std_fn of every sampled group (if given)

    @property
    def message(self) -> str:
        msg = f"kept {self.kept}/{self.sampled} groups in {self.rounds} round(s)"
        if self.padded:
            msg += f"; padded with {self.padded} dropped group(s) after max_rounds"
        if self.short:
            msg += f"; {self.short} short: sampling ran dry"
        return msg


def fill_batch(
    target_groups: int,
    sample_groups_fn: Callable[[int], Sequence[G]],
    keep_fn: Callable[[G], bool],
    max_rounds: int,
    std_fn: Callable[[G], float] | None = None,
) -> tuple[list[G], FillStats]:
    """Sample groups until `target_groups` pass `keep_fn`, keeping the batch size fixed.

    Each round asks `sample_groups_fn(k)` for k = (groups still missing) fresh groups. After
    `max_rounds` rounds (or when a round returns none) the batch is padded with the dropped
    groups of highest `std_fn` (sampling order without it); `FillStats.padded` says how many.
    """
    if target_groups < 0 or max_rounds < 1:
        raise ValueError("target_groups must be >= 0 and max_rounds >= 1")
    kept: list[G] = []
    dropped: list[G] = []
    stds: list[float] = []
    rounds = sampled = 0
    while len(kept) < target_groups and rounds < max_rounds:
        fresh = list(sample_groups_fn(target_groups - len(kept)))
        rounds += 1
        if not fresh:
            break
        sampled += len(fresh)
        for group in fresh:
            if std_fn is not None:
                stds.append(float(std_fn(group)))
            (kept if keep_fn(group) else dropped).append(group)
    extra = kept[target_groups:]  # a sampler may return more than asked
    kept = kept[:target_groups]
    n_kept = len(kept)
    missing = target_groups - n_kept
    if missing > 0:
        if std_fn is not None:
            dropped = sorted(dropped, key=std_fn, reverse=True)  # stable: ties keep sampling order
        kept += dropped[:missing]
    stats = FillStats(
        rounds=rounds,
        sampled=sampled,
        kept=n_kept,
        dropped=len(dropped),
        padded=len(kept) - n_kept,
        short=target_groups - len(kept),
        surplus=len(extra),
        stds=stds,
    )
    return kept, stats

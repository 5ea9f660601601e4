"""Best-of-N with self-reward: rerank samples by the length-normalised implicit DPO reward.

RLAIF-V (arXiv 2405.17220, §3.4) uses the DPO-trained model as its own reward model at
inference: for a response y of T tokens,

    r(y) = (β / T) · Σ_t [log π_θ(y_t | x, y_<t) − log π_ref(y_t | x, y_<t)],

the implicit reward of DPO divided by the length (so longer answers are not favoured merely for
having more tokens), and keeps the best of N samples. Pure functions; the log-probs come from
the `Scorer` protocol (policy and reference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def implicit_reward(policy_logprobs: Sequence[float], ref_logprobs: Sequence[float], beta: float) -> float:
    """(β/T)·Σ_t[log π_θ − log π_ref] over the T response tokens.

    Deviations (guards): T = 0 gives 0.0; a non-finite total gives -inf, so the sample ranks
    last instead of poisoning the comparison.
    """
    if len(policy_logprobs) != len(ref_logprobs):
        raise ValueError(
            f"{len(policy_logprobs)} policy log-probs but {len(ref_logprobs)} reference log-probs"
        )
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    t = len(policy_logprobs)
    if t == 0:
        return 0.0
    total = math.fsum(float(p) - float(r) for p, r in zip(policy_logprobs, ref_logprobs, strict=True))
    return beta * total / t if math.isfinite(total) else -math.inf


def rerank(candidates: Sequence[object], scores: Sequence[float]) -> int:
    """Index of the best candidate by score (the first on ties; NaN ranks last)."""
    if len(candidates) != len(scores):
        raise ValueError(f"{len(candidates)} candidates but {len(scores)} scores")
    if not candidates:
        raise ValueError("no candidates to rerank")
    best = 0
    for i, s in enumerate(scores):
        if not math.isnan(s) and (math.isnan(scores[best]) or s > scores[best]):
            best = i
    return best


def best_of_n(
    candidates: Sequence[str],
    policy_logprobs: Sequence[Sequence[float]],
    ref_logprobs: Sequence[Sequence[float]],
    beta: float,
) -> tuple[int, list[float]]:
    """(index of the best candidate, every candidate's implicit reward)."""
    rewards = [implicit_reward(p, r, beta) for p, r in zip(policy_logprobs, ref_logprobs, strict=True)]
    return rerank(candidates, rewards), rewards

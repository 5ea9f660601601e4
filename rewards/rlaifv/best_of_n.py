"""Best-of-N with self-reward: rerank samples by the length-normalised implicit DPO reward.

RLAIF-V (arXiv 2405.17220, §3.4) uses the DPO-trained model as its own reward model at
inference: for a response y of T tokens,

    r(y) = (β / T) · Σ_t [log π_θ(y_t | x, y_<t) − log π_ref(y_t | x, y_<t)],

the implicit reward of DPO divided by the length (so longer answers are not favoured merely for
having more tokens), and keeps the best of N samples. Pure functions; the log-probs come from
the `Scorer` protocol (policy and reference). `choose_best` is the batch form the RLAIF-V stage
uses at evaluation (`rl.stages.rlaifv.best_of_n_eval`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


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


@dataclass(frozen=True)
class Choice:
    """The pick of one prompt: index and text of the best candidate, every candidate's reward."""

    index: int
    text: str
    rewards: list[float]  # NaN for a candidate that could not be scored


def choose_best(
    candidates: Sequence[Sequence[str]],
    policy_logprobs: Sequence[Sequence[Sequence[float] | None]],
    ref_logprobs: Sequence[Sequence[Sequence[float] | None]],
    beta: float,
) -> list[Choice]:
    """Best-of-N for a batch of prompts.

    `candidates[i][k]` is the text of candidate k of prompt i; `policy_logprobs[i][k]` and
    `ref_logprobs[i][k]` are its per-token log-probs under π_θ and π_ref, or None when either
    could not be scored (its reward is NaN, so it ranks last; with no scored candidate the first
    is kept, i.e. no reranking). Raises ValueError on misaligned inputs or a prompt with no
    candidate.
    """
    if not len(candidates) == len(policy_logprobs) == len(ref_logprobs):
        raise ValueError(
            f"{len(candidates)} prompts, {len(policy_logprobs)} policy and {len(ref_logprobs)} reference log-prob rows"
        )
    out = []
    for texts, pol, ref in zip(candidates, policy_logprobs, ref_logprobs, strict=True):
        if not len(texts) == len(pol) == len(ref):
            raise ValueError(
                f"{len(texts)} candidates, {len(pol)} policy and {len(ref)} reference log-prob lists"
            )
        rewards = [
            math.nan if p is None or r is None else implicit_reward(p, r, beta)
            for p, r in zip(pol, ref, strict=True)
        ]
        idx = rerank(texts, rewards)
        out.append(Choice(idx, texts[idx], rewards))
    return out

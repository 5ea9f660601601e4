"""RLAIF-V response scores and preference pairs (pure functions).

From the claim judgements of the n responses of each instruction (arXiv 2405.17220, §3.2–3.3):

1. Score: S(response) = −(number of rejected claims).
2. Pairs: among all response pairs of one instruction keep those with |S_a − S_b| ≥ 1 (higher
   score = chosen); ties are never paired; a response whose number of judgements differs from
   its number of claims (some claim could not be labelled) is inconsistent and is not paired;
   at most 2 random pairs per instruction.
3. Length balance: lengths in whitespace words; for r ∈ {0, 0.02, …, 0.98} drop pairs whose
   chosen is much shorter than the rejected ((len_rej − len_ch)/len_rej > r) and pairs with
   identical texts, and keep the r minimising |mean len_ch − mean len_rej| / mean len_rej (the
   first r on ties).

Deviations and choices, each stated where it is made: a response with no claims is excluded
from pairing (its score 0 would otherwise beat every response that said something checkable,
rewarding empty or evasive answers); the random pick is seeded per (seed, prompt id), so it is
reproducible and does not depend on the order of the prompts; ratios that keep no pairs are
skipped (the reference divides by zero there) and the input is returned unchanged when every
ratio keeps none.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from rewards.rlaifv.claims import Claim

BALANCE_RATIOS: tuple[Fraction, ...] = tuple(Fraction(i, 50) for i in range(50))  # 0, 0.02, …, 0.98


def response_score(n_rejected: int) -> int:
    """S = −(number of rejected claims) (RLAIF-V's response score)."""
    return -int(n_rejected)


@dataclass
class ScoredResponse:
    """One sampled response with the outcome of its claim judgements."""

    prompt_id: str
    index: int  # sample index within its prompt
    text: str
    n_claims: int
    n_judgements: int  # claims that got a verdict (accepted or rejected)
    n_rejected: int
    claims: list[Claim] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)  # per claim: accepted | rejected | unparseable

    @property
    def score(self) -> int:
        return response_score(self.n_rejected)

    @property
    def consistent(self) -> bool:
        """Every claim was judged (the pairing consistency check)."""
        return self.n_judgements == self.n_claims


def score_response(
    prompt_id: str, index: int, text: str, claims: Sequence[Claim], labels: Sequence[Any]
) -> ScoredResponse:
    """A ScoredResponse from a response's claims and their labels (`labeler.ClaimLabel`s, aligned)."""
    if len(labels) != len(claims):
        raise ValueError(f"{len(labels)} labels for {len(claims)} claims")
    verdicts = [lab.verdict for lab in labels]
    return ScoredResponse(
        prompt_id=prompt_id,
        index=index,
        text=text,
        n_claims=len(claims),
        n_judgements=sum(v != "unparseable" for v in verdicts),
        n_rejected=sum(v == "rejected" for v in verdicts),
        claims=list(claims),
        verdicts=verdicts,
    )


@dataclass
class Pair:
    """One preference pair: the chosen response scored strictly higher than the rejected one."""

    prompt_id: str
    chosen: str
    rejected: str
    chosen_score: int
    rejected_score: int
    chosen_index: int = -1
    rejected_index: int = -1
    chosen_claims: list[Claim] = field(default_factory=list)  # the claims of the chosen response
    rejected_claims: list[Claim] = field(default_factory=list)  # the claims of the rejected response
    chosen_verdicts: list[str] = field(default_factory=list)
    rejected_verdicts: list[str] = field(default_factory=list)

    def to_row(self) -> dict[str, Any]:
        """A flat row for a `datasets` parquet (claims as their texts)."""
        return {
            "prompt_id": self.prompt_id,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "chosen_score": self.chosen_score,
            "rejected_score": self.rejected_score,
            "chosen_claims": [c.text for c in self.chosen_claims],
            "rejected_claims": [c.text for c in self.rejected_claims],
            "chosen_verdicts": list(self.chosen_verdicts),
            "rejected_verdicts": list(self.rejected_verdicts),
        }


@dataclass
class PairBuild:
    """The pairs of a round and what happened to the responses on the way."""

    pairs: list[Pair]
    n_prompts: int = 0
    n_responses: int = 0
    n_no_claims: int = 0  # responses with no claims (excluded)
    n_inconsistent: int = 0  # responses with judgements != claims (excluded)
    n_candidate_pairs: int = 0  # pairs passing the gap before the per-prompt cap
    n_prompts_with_pairs: int = 0


def _make_pair(a: ScoredResponse, b: ScoredResponse) -> Pair:
    chosen, rejected = (a, b) if a.score > b.score else (b, a)
    return Pair(
        prompt_id=chosen.prompt_id,
        chosen=chosen.text,
        rejected=rejected.text,
        chosen_score=chosen.score,
        rejected_score=rejected.score,
        chosen_index=chosen.index,
        rejected_index=rejected.index,
        chosen_claims=list(chosen.claims),
        rejected_claims=list(rejected.claims),
        chosen_verdicts=list(chosen.verdicts),
        rejected_verdicts=list(rejected.verdicts),
    )


def build_pairs(
    responses_per_prompt: Mapping[str, Sequence[ScoredResponse]],
    seed: int,
    max_pairs_per_prompt: int = 2,
    min_gap: int = 1,
) -> PairBuild:
    """RLAIF-V pair construction (see the module doc), prompts in input order.

    Responses with no claims or with n_judgements != n_claims are excluded (and counted).
    Among the rest, every unordered pair with |S_a − S_b| ≥ `min_gap` is a candidate (ties
    never are); up to `max_pairs_per_prompt` candidates are drawn without replacement with
    `random.Random(f"rlaifv-pairs/{seed}/{prompt_id}")`, from the candidates listed in sample order.
    """
    if min_gap < 1:
        raise ValueError(f"min_gap must be >= 1 (ties are never paired), got {min_gap}")
    if max_pairs_per_prompt < 1:
        raise ValueError(f"max_pairs_per_prompt must be >= 1, got {max_pairs_per_prompt}")
    out = PairBuild(pairs=[], n_prompts=len(responses_per_prompt))
    for prompt_id, responses in responses_per_prompt.items():
        out.n_responses += len(responses)
        usable = []
        for r in responses:
            if r.n_claims == 0:
                out.n_no_claims += 1
            elif not r.consistent:
                out.n_inconsistent += 1
            else:
                usable.append(r)
        candidates = [
            (a, b) for a, b in itertools.combinations(usable, 2) if abs(a.score - b.score) >= min_gap
        ]
        out.n_candidate_pairs += len(candidates)
        if not candidates:
            continue
        rng = random.Random(f"rlaifv-pairs/{seed}/{prompt_id}")
        picked = rng.sample(candidates, min(max_pairs_per_prompt, len(candidates)))
        out.pairs.extend(_make_pair(a, b) for a, b in picked)
        out.n_prompts_with_pairs += 1
    return out


def word_length(text: str) -> int:
    """Length in whitespace-separated words."""
    return len(text.split())


@dataclass
class Balance:
    """The result of `length_balance`."""

    pairs: list[Pair]
    ratio: float | None  # the chosen r; None when the input was returned unchanged
    objective: float | None  # |mean len_ch − mean len_rej| / mean len_rej of the kept pairs
    n_in: int = 0


def _kept(pairs: Sequence[Pair], lengths: list[tuple[int, int]], r: Fraction) -> list[int]:
    """Indices of the pairs kept at ratio r: not identical, (len_rej − len_ch)/len_rej ≤ r."""
    keep = []
    for i, (pair, (n_ch, n_rej)) in enumerate(zip(pairs, lengths, strict=True)):
        if pair.chosen == pair.rejected:
            continue
        if n_rej > 0 and Fraction(n_rej - n_ch, n_rej) > r:
            continue
        keep.append(i)
    return keep


def _objective(lengths: list[tuple[int, int]], keep: list[int]) -> Fraction | None:
    """|mean len_ch − mean len_rej| / mean len_rej = |Σ len_ch − Σ len_rej| / Σ len_rej (the
    pair counts cancel); exact, so ties between ratios are real ties. None if Σ len_rej = 0
    and the sums differ (an unbounded imbalance)."""
    sum_ch = sum(lengths[i][0] for i in keep)
    sum_rej = sum(lengths[i][1] for i in keep)
    if sum_rej == 0:
        return Fraction(0) if sum_ch == 0 else None
    return Fraction(abs(sum_ch - sum_rej), sum_rej)


def length_balance(pairs: Sequence[Pair], ratios: Sequence[Fraction] = BALANCE_RATIOS) -> Balance:
    """RLAIF-V's length-balance filter by ratio search (see the module doc).

    Ratios are compared exactly (fractions), so a pair at exactly (len_rej − len_ch)/len_rej =
    r is kept. A rejected response of 0 words never makes its pair "much shorter". Ratios that
    keep no pairs, or leave an unbounded imbalance, are skipped; when none is left the input
    comes back unchanged with `ratio=None`.
    """
    pairs = list(pairs)
    lengths = [(word_length(p.chosen), word_length(p.rejected)) for p in pairs]
    best: tuple[Fraction, Fraction, list[int]] | None = None
    for r in ratios:
        keep = _kept(pairs, lengths, Fraction(r))
        if not keep:
            continue
        obj = _objective(lengths, keep)
        if obj is None:
            continue
        if best is None or obj < best[1]:  # strict: the first r wins ties
            best = (Fraction(r), obj, keep)
    if best is None:
        return Balance(pairs=pairs, ratio=None, objective=None, n_in=len(pairs))
    r, obj, keep = best
    return Balance(pairs=[pairs[i] for i in keep], ratio=float(r), objective=float(obj), n_in=len(pairs))

"""RLPR: the probability reward without a verifier (arXiv 2506.18254), thinking-mode aware.

For a prompt x, a sampled response o = z ‖ y (reasoning z, answer y) and a reference y*:

1. Substitute: o' = z ‖ y* (the policy's reasoning, then the reference where its answer was).
2. Score: r = mean over the tokens of y* of exp(log π(o'_i | x, o'_<i)) — the mean per-token
   probability under teacher forcing at the rollout temperature, *not* the sequence likelihood
   exp(Σ log p) (the paper's ablation with the likelihood collapses).
3. Debias: r' = the same score of y* decoded right after the prompt with no reasoning (the
   fast-mode prompt, whose pre-filled empty think block stands for "no reasoning");
   reward r̂ = clip(r − r', 0, 1).
4. Invalid format (the answer span cannot be located) → r = 0.

Pure pieces (`mean_token_prob`, `debiased`, `build_rlpr_inputs`) are separate from the batched
`RLPRReward`, which sends every teacher-forced sequence of a call in one `Scorer.score` request.
The debias score r' is cached per (prompt, images, reference) from the initial policy by default
("initial", as the reference code does; the paper does not say), recomputed each call
("current"), or skipped ("none": r̂ = clip(r, 0, 1)).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from policies.chat import FAST_PREFILL, THINK_CLOSE, THINK_OPEN
from rewards.common import column, completion_texts, images_key, media_column, modes_column
from rollouts.types import ScoreRequest, split_media

Debias = Literal["initial", "current", "none"]
DEBIAS_CHOICES: tuple[str, ...] = ("initial", "current", "none")
CACHE_FORMAT = 1
DEFAULT_GAP = "\n\n"  # put between `</think>` and y* when the policy wrote no whitespace there

Encode = Callable[[str], list[int]]


def mean_token_prob(logprobs: Sequence[float]) -> float:
    """r = (1/|y*|) Σ_i exp(logprob_i): the mean per-token probability (RLPR eq. for r).

    Guards (not in the paper): a non-finite log-prob (NaN, -inf) counts as probability 0, a
    positive one (numerical noise) as probability 1; an empty sequence scores 0.0.
    """
    if len(logprobs) == 0:
        return 0.0
    lp = np.asarray(logprobs, dtype=np.float64)
    probs = np.where(np.isfinite(lp), np.exp(np.minimum(lp, 0.0)), 0.0)
    return float(probs.mean())


def debiased(r: float, r_prime: float) -> float:
    """r̂ = clip(r − r', 0, 1) (RLPR's debiased probability reward)."""
    return float(min(max(r - r_prime, 0.0), 1.0))


def split_reasoning(completion: str) -> str | None:
    """The reasoning prefix z of a deep-mode completion, or None when it cannot be located.

    z runs up to and including the single `</think>` plus the whitespace the policy wrote right
    after it; with no whitespace there, "\\n\\n" is appended (the chat template's gap). None when
    there is no `</think>`, more than one, more than one `<think>` (nested/repeated), or a
    `<think>` after the `</think>`.
    """
    if completion.count(THINK_CLOSE) != 1 or completion.count(THINK_OPEN) > 1:
        return None
    end = completion.index(THINK_CLOSE) + len(THINK_CLOSE)
    if THINK_OPEN in completion[end:]:
        return None
    rest = completion[end:]
    gap = rest[: len(rest) - len(rest.lstrip())]
    return completion[:end] + (gap or DEFAULT_GAP)


@dataclass(frozen=True)
class RLPRInputs:
    """The two teacher-forced sequences of one completion (or why it is invalid).

    `token_ids[target_start:]` and `debias_ids[debias_start:]` are both exactly encode(y*).
    """

    valid: bool
    token_ids: list[int] = field(default_factory=list)  # [P + Z + Y] prompt ‖ z ‖ y*
    target_start: int = 0  # P + Z
    debias_ids: list[int] = field(default_factory=list)  # [P' + Y] fast-mode prompt ‖ y*
    debias_start: int = 0  # P'
    reason: str = ""  # set when not valid


def build_debias_inputs(
    prompt_ids: Sequence[int], reference: str, mode: str, encode: Encode, prefill_ids: Sequence[int]
) -> tuple[list[int], int] | None:
    """(fast-mode prompt ‖ encode(y*), len(fast-mode prompt)), or None for a blank reference.

    The fast-mode prompt is `prompt_ids + prefill_ids` for a deep prompt, `prompt_ids` as-is for
    a fast one (it already ends with the prefill), so both modes share one debias sequence.
    """
    ref_ids = list(encode(reference.strip()))
    if not ref_ids:
        return None
    fast_prompt = list(prompt_ids) + (list(prefill_ids) if mode == "deep" else [])
    return fast_prompt + ref_ids, len(fast_prompt)


def build_rlpr_inputs(
    prompt_ids: Sequence[int],
    completion: str,
    reference: str,
    mode: str,
    encode: Encode,
    prefill_ids: Sequence[int],
) -> RLPRInputs:
    """Build o' = x ‖ z ‖ y* and the debias sequence for one completion.

    deep: z = `split_reasoning(completion)`; the policy's answer is dropped, so y* appearing
          inside the reasoning changes nothing. Invalid when z cannot be located.
    fast: z = "" (the prompt already ends with the pre-filled empty think block); the completion
          is not used, so o' equals the debias sequence.
    Pieces are encoded separately (encode(z), encode(y*)) so the scored tokens are exactly
    encode(y*.strip()), with no EOS. Invalid also for a blank reference.
    """
    debias = build_debias_inputs(prompt_ids, reference, mode, encode, prefill_ids)
    if debias is None:
        return RLPRInputs(valid=False, reason="empty reference")
    debias_ids, debias_start = debias
    ref_ids = debias_ids[debias_start:]
    if mode == "fast":
        z_ids: list[int] = []
    else:
        z = split_reasoning(completion)
        if z is None:
            return RLPRInputs(
                valid=False,
                debias_ids=debias_ids,
                debias_start=debias_start,
                reason="answer span not found (need exactly one </think>, no nested <think>)",
            )
        z_ids = list(encode(z))
    prefix = list(prompt_ids) + z_ids
    return RLPRInputs(
        valid=True,
        token_ids=prefix + ref_ids,
        target_start=len(prefix),
        debias_ids=debias_ids,
        debias_start=debias_start,
    )


@dataclass
class RLPRScore:
    """The RLPR breakdown of one completion, for logging."""

    r: float  # mean token prob of y* after the policy's reasoning (0.0 when invalid or on error)
    r_prime: float | None  # debias score (None when debias is "none" or not computed)
    reward: float  # r̂ = clip(r − r', 0, 1), or clip(r, 0, 1) without debias; 0.0 on error
    valid: bool  # the answer span was located
    debias: str = "initial"  # the debias mode applied to this row
    error: str | None = None  # a scorer error for this row's r or r'


@dataclass
class DebiasRow:
    """One (prompt, images, reference) whose r' `RLPRReward.precompute` should cache."""

    prompt_ids: list[int]  # [P] the prompt as the engine sees it, in `mode`
    reference: str
    images: list[Any] = field(default_factory=list)  # the prompt's media: PIL images and `Video`s
    mode: str = "deep"


def _seq_key(token_ids: Sequence[int], start: int, image_key: str) -> str:
    """A compact key of a scored sequence: sha1 of its ids, target start and images."""
    h = hashlib.sha1(np.asarray(token_ids, dtype=np.int64).tobytes())
    h.update(f"|{start}|{image_key}".encode())
    return h.hexdigest()


class _RequestBatch:
    """Collects the ScoreRequests of one call, sending each distinct sequence once.

    In fast mode every sample of a group (and its debias row) is the same sequence, so
    de-duplication saves most of the fast-mode scoring.
    """

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.requests: list[ScoreRequest] = []
        self._slots: dict[str, int] = {}

    def add(self, key: str, token_ids: list[int], start: int, media: list[Any]) -> int:
        """Slot of the sequence `key`; `media` is the prompt's images and videos (`split_media`)."""
        if key not in self._slots:
            self._slots[key] = len(self.requests)
            images, videos = split_media(list(media))
            self.requests.append(ScoreRequest(token_ids=token_ids, images=images, target_start=start,
                                              temperature=self.temperature, request_id=f"rlpr-{key[:12]}",
                                              videos=videos))
        return self._slots[key]

    def run(self, scorer: Any) -> list[tuple[float | None, str | None]]:
        """(mean token prob, None) or (None, error) per request; one `scorer.score` call."""
        if not self.requests:
            return []
        results = scorer.score(self.requests)
        if len(results) != len(self.requests):
            raise RuntimeError(f"scorer returned {len(results)} results for {len(self.requests)} requests")
        out: list[tuple[float | None, str | None]] = []
        for req, res in zip(self.requests, results, strict=True):
            expected = len(req.token_ids) - req.target_start
            if res.error is not None:
                out.append((None, str(res.error)))
            elif len(res.logprobs) != expected:
                out.append((None, f"expected {expected} log-probs, got {len(res.logprobs)}"))
            else:
                out.append((mean_token_prob(res.logprobs), None))
        return out


@dataclass
class _RowPlan:
    inputs: RLPRInputs
    debias: str
    r_slot: int | None = None
    rp_slot: int | None = None
    rp_key: str | None = None
    rp_cached: float | None = None


class RLPRReward:
    """RLPR reward (TRL reward signature), batched into one scorer call per invocation.

    Args:
        tokenizer: anything with `encode(text, add_special_tokens=False) -> list[int]` (the
            policy's tokenizer); attach later with `set_tokenizer` if not known at build time.
        scorer: a `rollouts.protocol.Scorer` holding the *current* policy weights; attach later
            with `set_scorer`. It is not pickled (`__getstate__` drops it).
        debias: "initial" (cache r' per prompt+images+reference at first sight; `precompute`
            fills it from the initial policy), "current" (recompute r' every call) or "none".
        temperature: the rollout temperature; log-probs come from logits / temperature.

    Columns: `answer` (y*; a list uses its first entry; None → reward None), `prompt_ids` (token ids of the generation
    prompt as the engine saw it), `images` and `videos` (the prompt's media; a row's images and videos
    are one media list inside, `rollouts.types.split_media`), `mode`. `last_breakdown` holds one `RLPRScore` (or
    None) per completion of the last call; `last_stats` the call's counts; `totals` running ones.
    A per-item scorer error gives that item 0.0 (counted in `errors`), not an exception; an
    exception raised by `scorer.score` itself (a dead engine) propagates.
    """

    def __init__(
        self, tokenizer: Any = None, scorer: Any = None, debias: str = "initial", temperature: float = 1.0
    ):
        if debias not in DEBIAS_CHOICES:
            raise ValueError(f"debias must be one of {list(DEBIAS_CHOICES)}, got {debias!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.debias = debias
        self.temperature = float(temperature)
        self.tokenizer = tokenizer
        self._scorer = scorer
        self._prefill_ids: list[int] | None = None
        self._cache: dict[str, float] = {}
        self.last_breakdown: list[RLPRScore | None] = []
        self.last_stats: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.__name__ = "rlpr"

    # -- attachments and state ---------------------------------------------------------------
    def set_scorer(self, scorer: Any) -> None:
        self._scorer = scorer

    def set_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._prefill_ids = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_scorer"] = None  # engines/actor handles are not shipped with the reward
        state["last_breakdown"] = []
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def state_dict(self) -> dict[str, Any]:
        """The r' cache, JSON-serialisable, for checkpoints."""
        return {"format": CACHE_FORMAT, "debias": self.debias, "r_prime": dict(self._cache)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the r' cache saved by `state_dict` (replaces the current cache)."""
        if state.get("format") != CACHE_FORMAT:
            raise ValueError(f"unknown RLPR cache format {state.get('format')!r} (expected {CACHE_FORMAT})")
        self._cache = {str(k): float(v) for k, v in dict(state.get("r_prime", {})).items()}

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    # -- scoring -----------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise RuntimeError("RLPRReward has no tokenizer: pass tokenizer= or call set_tokenizer()")
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _prefill(self) -> list[int]:
        if self._prefill_ids is None:
            self._prefill_ids = self._encode(FAST_PREFILL)
        return self._prefill_ids

    def _require_scorer(self) -> Any:
        if self._scorer is None:
            raise RuntimeError("RLPRReward has no scorer: pass scorer= or call set_scorer()")
        return self._scorer

    def _plan_row(
        self,
        batch: _RequestBatch,
        completion: str,
        reference: str,
        prompt_ids: Sequence[int],
        images: list[Any],
        mode: str,
        debias: str,
        memo: dict[int, str],
    ) -> _RowPlan:
        inputs = build_rlpr_inputs(prompt_ids, completion, reference, mode, self._encode, self._prefill())
        plan = _RowPlan(inputs=inputs, debias=debias)
        if not inputs.valid:
            return plan
        ikey = images_key(images, memo)
        plan.r_slot = batch.add(
            _seq_key(inputs.token_ids, inputs.target_start, ikey),
            inputs.token_ids,
            inputs.target_start,
            images,
        )
        if debias != "none":
            plan.rp_key = _seq_key(inputs.debias_ids, inputs.debias_start, ikey)
            if debias == "initial" and plan.rp_key in self._cache:
                plan.rp_cached = self._cache[plan.rp_key]
            else:
                plan.rp_slot = batch.add(plan.rp_key, inputs.debias_ids, inputs.debias_start, images)
        return plan

    def score_batch(
        self,
        completions: Sequence[Any],
        references: Sequence[str | None],
        prompt_ids: Sequence[Sequence[int] | None],
        images: Sequence[list[Any]] | None = None,
        modes: Sequence[str] | None = None,
        debias: Sequence[str] | None = None,
    ) -> list[RLPRScore | None]:
        """RLPR scores of a batch (None where the reference is None), one scorer call in all.

        `debias` optionally overrides the debias mode per row (the accuracy router uses "none"
        for fast-mode free-form rows).
        """
        texts = completion_texts(completions)
        n = len(texts)
        images = [list(x or []) for x in images] if images is not None else [[] for _ in range(n)]
        modes = list(modes) if modes is not None else ["deep"] * n
        debias = list(debias) if debias is not None else [self.debias] * n
        for d in set(debias):
            if d not in DEBIAS_CHOICES:
                raise ValueError(f"debias must be one of {list(DEBIAS_CHOICES)}, got {d!r}")
        batch = _RequestBatch(self.temperature)
        memo: dict[int, str] = {}
        plans: list[_RowPlan | None] = []
        for i in range(n):
            reference = _first_reference(references[i])
            if reference is None:
                plans.append(None)
                continue
            if prompt_ids[i] is None:
                raise ValueError("RLPR needs the `prompt_ids` column (the generation prompt's token ids)")
            plans.append(
                self._plan_row(
                    batch, texts[i], reference, prompt_ids[i], images[i], modes[i], debias[i], memo
                )
            )
        values = batch.run(self._require_scorer()) if batch.requests else []
        scores = [None if p is None else self._compose(p, values) for p in plans]
        self._count(plans, scores, batch)
        return scores

    def _compose(self, plan: _RowPlan, values: list[tuple[float | None, str | None]]) -> RLPRScore:
        if not plan.inputs.valid:
            return RLPRScore(r=0.0, r_prime=None, reward=0.0, valid=False, debias=plan.debias)
        r, err = values[plan.r_slot]
        r_prime, rp_err = (plan.rp_cached, None) if plan.rp_slot is None else values[plan.rp_slot]
        if plan.debias == "initial" and plan.rp_slot is not None and r_prime is not None:
            self._cache[plan.rp_key] = r_prime
        error = err or rp_err
        if error is not None or r is None:
            return RLPRScore(
                r=r or 0.0, r_prime=r_prime, reward=0.0, valid=True, debias=plan.debias, error=error
            )
        reward = debiased(r, r_prime) if plan.debias != "none" else debiased(r, 0.0)
        return RLPRScore(
            r=r,
            r_prime=r_prime if plan.debias != "none" else None,
            reward=reward,
            valid=True,
            debias=plan.debias,
        )

    def _count(
        self, plans: list[_RowPlan | None], scores: list[RLPRScore | None], batch: _RequestBatch
    ) -> None:
        present = [s for s in scores if s is not None]
        self.last_stats = {
            "rows": len(present),
            "invalid": sum(not s.valid for s in present),
            "errors": sum(s.error is not None for s in present),
            "requests": len(batch.requests),
            "cache_hits": sum(p is not None and p.rp_cached is not None for p in plans),
        }
        for key, value in self.last_stats.items():
            self.totals[key] = self.totals.get(key, 0) + value

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        *,
        answer: Sequence[Any] | None = None,
        prompt_ids: Sequence[Any] | None = None,
        images: Sequence[Any] | None = None,
        mode: Sequence[Any] | None = None,
        task: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        n = len(completions)
        cols = dict(kwargs, answer=answer, prompt_ids=prompt_ids, images=images, mode=mode, videos=videos)
        scores = self.score_batch(
            completions,
            column(cols, "answer", n),
            column(cols, "prompt_ids", n),
            media_column(cols, n),
            modes_column(cols, n),
        )
        self.last_breakdown = scores
        return [None if s is None else s.reward for s in scores]

    # -- debias cache --------------------------------------------------------------------------
    def precompute(self, rows: Iterable[DebiasRow | Mapping[str, Any]], batch_size: int = 256) -> int:
        """Fill the r' cache for `rows` with the attached scorer (call it with the initial policy).

        Rows already cached are skipped; rows whose scoring fails stay uncached (they are scored
        at first sight instead). Returns the number of entries added.
        """
        pending: dict[str, tuple[list[int], int, list[Any]]] = {}
        memo: dict[int, str] = {}
        for row in rows:
            row = _as_debias_row(row)
            built = build_debias_inputs(
                row.prompt_ids, row.reference, row.mode, self._encode, self._prefill()
            )
            if built is None:
                continue
            key = _seq_key(built[0], built[1], images_key(row.images, memo))
            if key not in self._cache and key not in pending:
                pending[key] = (built[0], built[1], row.images)
        added = 0
        items = list(pending.items())
        for lo in range(0, len(items), max(1, batch_size)):
            batch = _RequestBatch(self.temperature)
            chunk = items[lo : lo + max(1, batch_size)]
            for key, (ids, start, imgs) in chunk:
                batch.add(key, ids, start, imgs)
            for (key, _), (value, _err) in zip(chunk, batch.run(self._require_scorer()), strict=True):
                if value is not None and math.isfinite(value):
                    self._cache[key] = value
                    added += 1
        return added


def _first_reference(reference: Any) -> str | None:
    """y* of a row: the string itself, or the first of a list of references (None if none)."""
    if isinstance(reference, (list, tuple)):
        reference = next((r for r in reference if r is not None), None)
    return None if reference is None else str(reference)


def _as_debias_row(row: DebiasRow | Mapping[str, Any]) -> DebiasRow:
    """A DebiasRow from itself or a dataset-style mapping (prompt_ids, answer|reference, images|image, mode)."""
    if isinstance(row, DebiasRow):
        return row
    images = row.get("images", row.get("image"))
    if images is None:
        images = []
    elif not isinstance(images, (list, tuple)):
        images = [images]
    reference = _first_reference(row.get("answer", row.get("reference")))
    if reference is None or row.get("prompt_ids") is None:
        raise ValueError("a debias row needs `prompt_ids` and `answer` (or `reference`)")
    return DebiasRow(
        prompt_ids=list(row["prompt_ids"]),
        reference=reference,
        images=list(images),
        mode=row.get("mode") or "deep",
    )

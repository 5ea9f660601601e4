"""FakeEngine: an in-process stand-in for the rollout pool, for unit tests only.

It implements the `Engine` protocol without a model: completions come from a user function
(default: a fixed deep/fast answer), log-probs are a fixed value per token, prompt ids are the
characters of the rendered prompt. Scoring returns a user function of (token id, position).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policies.chat import FAST_PREFILL
from rollouts.types import Completion, Rollout, RolloutRequest, ScoreRequest, ScoreResult


def _default_answer(req: RolloutRequest, k: int) -> str:
    return "yes" if req.mode == "fast" else f"<think>sample {k}</think>\n\nyes"


class FakeEngine:
    def __init__(
        self,
        answer_fn: Callable[[RolloutRequest, int], str] = _default_answer,
        logprob: float = -0.5,
        score_fn: Callable[[int, int], float] | None = None,
    ):
        self.answer_fn = answer_fn
        self.logprob = logprob
        self.score_fn = score_fn or (lambda tok, pos: -0.1 * ((tok + pos) % 7))
        self.version = 0
        self.calls: list[list[RolloutRequest]] = []
        self.received: list[tuple[list[str], int]] = []

    def generate(self, requests: list[RolloutRequest]) -> list[Rollout]:
        self.calls.append(list(requests))
        out = []
        for req in requests:
            text = "".join(str(m["content"]) for m in req.messages) + ("\n" + FAST_PREFILL if req.mode == "fast" else "\n")
            comps = []
            for k in range(req.n):
                ans = self.answer_fn(req, k)
                ids = [ord(c) % 1000 for c in ans]
                comps.append(Completion(ans, ids, [self.logprob] * len(ids), "stop"))
            out.append(Rollout(req.request_id, req.mode, text, [ord(c) % 1000 for c in text], comps, self.version, "fake"))
        return out

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return [
            ScoreResult([self.score_fn(r.token_ids[p], p) for p in range(r.target_start, len(r.token_ids))], self.version)
            for r in requests
        ]

    def update_weights(self, named_tensors: list[tuple[str, Any]], version: int) -> int:
        self.received.append(([n for n, _ in named_tensors], version))
        self.version = version
        return version

    def health(self) -> dict[str, Any]:
        return {"ok": True, "version": self.version, "backend": "fake"}

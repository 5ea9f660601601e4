"""Teacher-forced log-probs from a transformers model: the trainer side of parity checks.

`HFScorer` implements the `rollouts.protocol.Scorer` protocol on a loaded policy, so rewards
(RLPR, yes/no labels) can be computed by the trainer model in tests and compared with the vLLM
actors, which compute the same quantities from prompt log-probs.
"""

from __future__ import annotations

from typing import Any

from rollouts.types import ScoreRequest, ScoreResult


def sequence_logprobs(model: Any, processor: Any, token_ids: list[int], images: list[Any], temperature: float = 1.0,
                      videos: list[Any] = ()):
    """Log-prob of every token of `token_ids` given its prefix (position 0 gets none): [L-1]."""
    import torch

    from policies.media import forward_media

    ids = torch.tensor([token_ids], dtype=torch.long, device=model.device)
    extra = forward_media(processor, [list(images)], [list(videos)], ids)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits[0, :-1].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, ids[0, 1:, None]).squeeze(-1)


class HFScorer:
    """Scorer over a transformers model (one forward per request; fine for tests and small batches)."""

    def __init__(self, model: Any, processor: Any, version: int = 0):
        self.model = model
        self.processor = processor
        self.version = version

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        results = []
        for req in requests:
            try:
                lp = sequence_logprobs(self.model, self.processor, req.token_ids, req.images, req.temperature,
                                       req.videos)
                results.append(ScoreResult(lp[req.target_start - 1 :].tolist(), self.version))
            except Exception as exc:  # one bad request must not sink the batch
                results.append(ScoreResult([], self.version, error=f"{type(exc).__name__}: {exc}"))
        return results

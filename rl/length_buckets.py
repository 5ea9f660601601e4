"""Length-bucketed loss for hybrid GRPO batches (`grpo.length_buckets`): no compute on padding.

A hybrid batch mixes fast answers of a few tokens with deep answers of a hundred; TRL pads every
row to the longest prompt and the longest completion of the batch, so the forward and backward of
a fast row cost as much as a deep one. Here the rows are sorted by length and cut into at most K
contiguous buckets (the cut that minimises rows x (prompt width + completion width) summed over
buckets, plus a fixed `overhead` per bucket in the same token units for the extra forward); each
bucket is trimmed to its own widths and goes through TRL's loss separately, and the losses add up.

This is exact for TRL's "dapo" loss (the default): it sums per-token losses and divides by the
token count of the whole generation batch (`num_items_in_batch`), which a bucket carries
unchanged. Losses that normalise per batch (grpo, bnpo, dr_grpo, ...) or select tokens across the
batch (`top_entropy_quantile` < 1) would change meaning, so the trainer uses one bucket for them.
"""

from __future__ import annotations

from typing import Any

COMPLETION_KEYS = ("completion_ids", "completion_mask", "old_per_token_logps", "sampling_per_token_logps",
                   "ref_per_token_logps", "tool_mask")  # [rows, completion width], right-padded
PROMPT_KEYS = ("prompt_ids", "prompt_mask")  # [rows, prompt width], left-padded


def plan_buckets(prompt_lens: list[int], completion_lens: list[int], max_buckets: int,
                 overhead: float = 0.0) -> list[list[int]]:
    """Row indices of each bucket: rows sorted by (completion, prompt) length, cut into at most
    `max_buckets` contiguous runs minimising sum(rows x (max prompt + max completion)) + overhead
    per bucket (dynamic programming over the sorted order)."""
    n = len(completion_lens)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: (completion_lens[i], prompt_lens[i]))
    k_max = max(1, min(max_buckets, n))

    def cost(a: int, b: int) -> float:  # rows order[a:b]
        rows = order[a:b]
        return len(rows) * (max(prompt_lens[i] for i in rows) + max(completion_lens[i] for i in rows)) + overhead

    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(k_max + 1)]  # best[k][j]: first j sorted rows in k buckets
    cut = [[0] * (n + 1) for _ in range(k_max + 1)]
    best[0][0] = 0.0
    for k in range(1, k_max + 1):
        for j in range(1, n + 1):
            for i in range(k - 1, j):
                if best[k - 1][i] < inf and best[k - 1][i] + cost(i, j) < best[k][j]:
                    best[k][j], cut[k][j] = best[k - 1][i] + cost(i, j), i
    k = min(range(1, k_max + 1), key=lambda kk: best[kk][n])
    bounds, j = [], n
    while k > 0:
        i = cut[k][j]
        bounds.append((i, j))
        j, k = i, k - 1
    return [sorted(order[a:b]) for a, b in reversed(bounds)]


def last_filled(mask: Any) -> Any:
    """Per row, 1 + the index of the last nonzero entry of `mask` (0 for an empty row)."""
    import torch

    positions = torch.arange(1, mask.size(1) + 1, device=mask.device)
    return (mask.ne(0) * positions).amax(dim=1)


def take_rows(inputs: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The batch restricted to `rows`, trimmed to the widths those rows need: completion tensors
    cut on the right, prompt tensors on the left (they are left-padded). Per-row tensors and lists
    are indexed, everything else (e.g. `num_items_in_batch`) kept as is."""
    import torch

    n = int(inputs["completion_mask"].size(0))
    index = torch.tensor(rows, dtype=torch.long)
    cm = inputs["completion_mask"][index.to(inputs["completion_mask"].device)]
    pm = inputs["prompt_mask"][index.to(inputs["prompt_mask"].device)]
    c_width = max(int(last_filled(cm).max()), 1)  # completions are right-padded
    p_width = max(int(last_filled(pm.flip(1)).max()), 1)  # prompts are left-padded
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.size(0) == n:
            value = value[index.to(value.device)]
            if key in COMPLETION_KEYS or (key == "importance_sampling_ratio" and value.dim() == 2
                                          and value.size(1) == inputs["completion_mask"].size(1)):
                value = value[:, :c_width]
            elif key in PROMPT_KEYS:
                value = value[:, value.size(1) - p_width:]
        elif isinstance(value, list) and len(value) == n:
            value = [value[i] for i in rows]
        out[key] = value
    return out

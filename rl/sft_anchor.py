"""SFT anchor for GRPO: a supervised loss on the warm-up's own examples, added to every GRPO step.

GRPO on the compositional Shapes questions raises them but wears down the perception answers
the warm-up taught (README, "Does GRPO learn here?"); a KL penalty to the warm-up did not stop
that. The anchor is InstructGPT's PPO-ptx idea in its simplest form: each optimizer step adds
`coef ×` the mean completion-token NLL of a batch of warm-up SFT examples (both thinking modes,
the same rows and rendering as `rl.stages.warmup`) to the GRPO loss, so the policy keeps
answering what SFT taught while RL moves it on what SFT did not.

Batches are drawn by `(seed, step)` alone, so a resumed run sees the same anchor batches as an
uninterrupted one without storing any sampler state.
"""

from __future__ import annotations

import random
from typing import Any


def anchor_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The dataset rows of the anchor batch at optimizer step `step` (without replacement)."""
    if n < 1:
        raise ValueError("the SFT anchor dataset is empty")
    rng = random.Random(f"sft-anchor/{seed}/{step}")
    return rng.sample(range(n), min(batch_size, n))


def add_anchor(grpo_loss: Any, anchor_loss: Any, coef: float) -> Any:
    """The step's loss: GRPO's plus `coef` times the anchor's NLL."""
    return grpo_loss + coef * anchor_loss


class SFTAnchor:
    """Mean completion-token NLL of the warm-up examples picked for a given step."""

    def __init__(self, dataset: Any, processor: Any, coef: float, batch_size: int, seed: int):
        from rl.media_collators import MediaSFTCollator

        keep = [c for c in ("prompt", "completion", "images", "videos") if c in dataset.column_names]
        self.dataset = dataset.select_columns(keep)
        self.coef = float(coef)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        # Completion-only loss, as the warm-up's SFTTrainer trains it.
        self.collator = MediaSFTCollator(processor=processor, completion_only_loss=True)

    def batch(self, step: int) -> dict[str, Any]:
        rows = [dict(self.dataset[i]) for i in anchor_indices(len(self.dataset), self.batch_size, self.seed, step)]
        return self.collator(rows)

    def loss(self, model: Any, step: int) -> Any:
        """The anchor NLL at `step`, on `model`'s device, with gradients."""
        device = next(model.parameters()).device
        batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in self.batch(step).items()}
        batch.pop("completion_mask", None)  # the labels already mask the prompt and padding
        return model(**batch).loss

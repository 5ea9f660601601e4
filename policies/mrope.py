"""Qwen2.5-VL's M-RoPE text positions after a video, as the model was trained and as vLLM computes them.

Qwen2.5-VL gives each media token a (time, height, width) position; text after a media item
resumes at one past the largest position used so far (the original implementation and vLLM).
transformers 5.x resumes at `start + max(h, w)` instead, which is the same for an image but not
for a video whose time positions run past its side in tokens (56-px frames, 4 frames at 2 fps:
the next text token sits ~100 positions too early). The sampler (vLLM) and the trainer then score
different sequences: measured gaps of 0.07-0.20 per token on the tiny model's video prompts.

The pipeline takes the original convention everywhere it runs transformers: `install()` wraps
`get_rope_index` of the model classes in `FIXED` (done by `policies.loading.load_model`), so SFT,
DPO, GRPO and the scorers all agree with vLLM. The correction (`resume_after_media`) only moves
text runs that start below the running maximum, so it is a no-op for images, for text-only rows and
for a transformers release that already follows the original rule.
"""

from __future__ import annotations

import functools
import importlib
import itertools
from typing import Any

# model_type -> (module, class) whose get_rope_index is corrected
FIXED: dict[str, tuple[str, str]] = {
    "qwen2_5_vl": ("transformers.models.qwen2_5_vl.modeling_qwen2_5_vl", "Qwen2_5_VLModel"),
}


def resume_after_media(position_ids: Any, mm_token_type_ids: Any, attention_mask: Any | None = None) -> Any:
    """Positions `[3, B, L]` with every text run after a media run moved to start one past the
    largest position before it, everything after it moving along. `mm_token_type_ids` `[B, L]`:
    0 text, > 0 media; padding (`attention_mask == 0`) is left as it is. Returns a new tensor."""
    import torch

    out = position_ids.clone()
    for b in range(out.shape[1]):
        keep = attention_mask[b].bool() if attention_mask is not None else torch.ones_like(mm_token_type_ids[b], dtype=torch.bool)
        pos = position_ids[:, b, keep]
        new = pos.clone()
        shift, top, prev, i = 0, -1, None, 0
        for kind, run in itertools.groupby(mm_token_type_ids[b][keep].tolist()):
            n = len(list(run))
            if kind == 0 and prev not in (None, 0):  # text after media: one past the largest so far
                shift += max(0, top + 1 - (int(pos[0, i]) + shift))
            new[:, i : i + n] = pos[:, i : i + n] + shift
            top = max(top, int(new[:, i : i + n].max()))
            prev, i = kind, i + n
        out[:, b, keep] = new
    return out


def _fixed(original: Any) -> Any:
    @functools.wraps(original)
    def get_rope_index(self: Any, input_ids: Any, mm_token_type_ids: Any, *args: Any, **kwargs: Any) -> Any:
        import torch

        position_ids, _ = original(self, input_ids, mm_token_type_ids, *args, **kwargs)
        mask = kwargs.get("attention_mask")
        fixed = resume_after_media(position_ids, mm_token_type_ids, mask)
        deltas = []
        for b in range(input_ids.shape[0]):
            keep = mask[b].bool() if mask is not None else torch.ones_like(input_ids[b], dtype=torch.bool)
            deltas.append(fixed[:, b, keep].max() + 1 - int(keep.sum()))
        return fixed, torch.stack(deltas).to(input_ids.device).unsqueeze(1)

    get_rope_index.__mmrl_fixed__ = True
    return get_rope_index


def install(model_type: str) -> bool:
    """Correct `get_rope_index` of the family's model class (once per process). True when the
    family has a correction."""
    if model_type not in FIXED:
        return False
    module, name = FIXED[model_type]
    cls = getattr(importlib.import_module(module), name)
    if not getattr(cls.get_rope_index, "__mmrl_fixed__", False):
        cls.get_rope_index = _fixed(cls.get_rope_index)
    return True

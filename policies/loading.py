"""Load any Hugging Face VLM + processor by name or path (+ optional LoRA), one code path for all.

The embedded default (empty `policy.name_or_path`) builds the tiny model of `policy.family`
(Idefics3 unless set: `qwen2_5_vl`, `qwen3_vl`, `minicpmv4_6`) into the run's folder first. Real
checkpoints of those families (and SmolVLM, MiniCPM-V with `trust_remote_code: true`) load through
the same functions; `policies.families` pins what differs per family. The vision tower is frozen by default: it is never trained and so
never synced to the rollout actors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rl.configlib import FieldError

# Parameter-name fragments of vision towers in the families we support (Idefics3/SmolVLM,
# Qwen2/2.5/3-VL, LLaVA, MiniCPM-V's "vpm").
VISION_PATTERNS = ("vision_model", "vision_tower", "visual", "vpm.", "image_encoder")
DTYPES = ("float32", "bfloat16", "float16", "auto")


class PolicyError(ValueError):
    """The policy cannot be loaded as configured; the message names the field or path."""


@dataclass
class LoraSettings:
    """LoRA on the language model only (peft). Sync to rollout actors sends merged weights."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def validate(self) -> None:
        if self.r <= 0:
            raise FieldError("r", "must be a positive integer")
        if not self.target_modules:
            raise FieldError("target_modules", "must name at least one module")


@dataclass
class PolicyConfig:
    """Which model to train and how to load it."""

    name_or_path: str = ""  # empty: build the embedded tiny model into <output_dir>/model_init
    # Family of the embedded tiny model (`policies.tiny.FAMILIES`); ignored when name_or_path is set.
    family: str = "idefics3"
    tiny_size: Literal["tiny", "small"] = "tiny"
    tiny_seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False
    freeze_vision: bool = True
    lora: LoraSettings = field(default_factory=LoraSettings)

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise FieldError("dtype", f"must be one of {list(DTYPES)}")
        from policies.tiny import FAMILIES

        if self.family not in FAMILIES:
            raise FieldError("family", f"unknown family {self.family!r}; tiny models exist for {', '.join(FAMILIES)}")


def is_vision_param(name: str) -> bool:
    return any(p in name for p in VISION_PATTERNS)


def looks_local(name_or_path: str) -> bool:
    return name_or_path.startswith(("/", "./", "../", "~")) or Path(name_or_path).exists()


def resolve_model_path(cfg: PolicyConfig, workdir: str | Path) -> str:
    """Return a loadable name or path; builds the tiny model when none is configured."""
    if not cfg.name_or_path:
        from policies.tiny import build_tiny_model

        # The Idefics3 folder keeps its historical name, so earlier run folders resume.
        family = "" if cfg.family == "idefics3" else f"{cfg.family}_"
        target = Path(workdir) / f"model_init_{family}{cfg.tiny_size}_s{cfg.tiny_seed}"
        if not (target / "tiny_spec.json").exists():
            build_tiny_model(target, seed=cfg.tiny_seed, size=cfg.tiny_size, family=cfg.family)
        return str(target)
    from policies.preflight import check_loadable

    check_loadable(cfg.name_or_path, "policy.name_or_path", cfg.trust_remote_code)
    return str(Path(cfg.name_or_path).expanduser()) if looks_local(cfg.name_or_path) else cfg.name_or_path


def _torch_dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def load_processor(path: str, trust_remote_code: bool = False):
    """The checkpoint's processor, with the family's pinned options (`policies.families`)."""
    from transformers import AutoProcessor

    from policies.families import processor_kwargs

    return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code, **processor_kwargs(path))


def load_model(path: str, cfg: PolicyConfig):
    """Load the model (AutoModelForImageTextToText; AutoModel for remote-code families)."""
    from transformers import AutoModel, AutoModelForImageTextToText

    kwargs: dict[str, Any] = {"dtype": _torch_dtype(cfg.dtype), "trust_remote_code": cfg.trust_remote_code}
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except ValueError as exc:
        # MiniCPM-V registers only AutoModel in its remote code.
        if not cfg.trust_remote_code:
            raise PolicyError(
                f"cannot load {path} as an image-text-to-text model ({exc}); if it ships its own "
                "code (MiniCPM-V), set policy.trust_remote_code: true"
            ) from None
        model = AutoModel.from_pretrained(path, **kwargs)
    from policies.mrope import install as fix_mrope

    fix_mrope(getattr(model.config, "model_type", ""))  # text positions after a video as vLLM has them
    return model.to(cfg.device)


def apply_lora(model, lora: LoraSettings):
    """Wrap the language model's projections with LoRA adapters; vision modules excluded."""
    from peft import LoraConfig, get_peft_model

    targets = "|".join(re.escape(t) for t in lora.target_modules)
    vision = "|".join(re.escape(p.rstrip(".")) for p in VISION_PATTERNS)
    # A regex target: any module ending in one of the names whose path has no vision fragment.
    pattern = rf"^(?!.*(?:{vision})).*\.(?:{targets})$"
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=pattern)
    return get_peft_model(model, config)


def freeze_vision(model) -> int:
    """Turn off gradients of the vision tower; returns the number of frozen parameters."""
    frozen = 0
    for name, param in model.named_parameters():
        if is_vision_param(name):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def load_policy(cfg: PolicyConfig, workdir: str | Path = "runs") -> tuple[Any, Any, str]:
    """Load (model, processor, resolved path) as configured: dtype, device, frozen vision, LoRA."""
    path = resolve_model_path(cfg, workdir)
    processor = load_processor(path, cfg.trust_remote_code)
    model = load_model(path, cfg)
    if cfg.freeze_vision:
        freeze_vision(model)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    return model, processor, path


def trainable_parameter_names(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]

"""RLAIF-V configuration: sampling, claim splitter, labeler, pair building and the DPO update.

Defaults follow RLAIF-V (arXiv 2405.17220): n = 10 candidates per prompt at temperature 0.7,
pairs with a score gap ≥ 1, at most 2 per prompt, length-balanced; DPO with the sigmoid loss,
β = 0.1, lr 5e-7. `rounds` defaults to 2 (the paper runs 4) to fit the tiny CPU default. TRL's
`DPOConfig` stays the source of truth for trainer knobs: the named fields below are the common
ones, and `dpo.trl` passes any other `DPOConfig` field through unchanged. Imports nothing heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from rl.configlib import FieldError
from rl.train_labeler import LabelerTraining

LABELER_KINDS: tuple[str, ...] = ("self", "oracle", "trained", "model")
SPLITTER_KINDS: tuple[str, ...] = ("shapes", "model")


def _parse_spec(spec: str, plain: tuple[str, ...], what: str) -> tuple[str, str]:
    if spec in plain:
        return spec, ""
    if spec.startswith("model:") and spec[len("model:") :].strip():
        return "model", spec[len("model:") :].strip()
    choices = " | ".join([*(f'"{p}"' for p in plain), '"model:<path-or-name>"'])
    raise ValueError(f"{what} must be {choices}, got {spec!r}")


def parse_labeler_spec(spec: str) -> tuple[str, str]:
    """("self" | "oracle" | "trained" | "model", model path or "") of a labeler spec; ValueError if
    invalid."""
    return _parse_spec(spec, ("self", "oracle", "trained"), "labeler")


def parse_splitter_spec(spec: str) -> tuple[str, str]:
    """("shapes" | "model", model path or "") of a claim-splitter spec; ValueError if invalid."""
    return _parse_spec(spec, ("shapes",), "splitter")


@dataclass
class DPOSettings:
    """The DPO update of one round (TRL `DPOTrainer`); reference = the round's starting policy."""

    beta: float = 0.1
    learning_rate: float = 5e-7  # RLAIF-V; MiniCPM-V 4.5 used 1e-6
    # One TRL loss or several combined (e.g. [sigmoid, sft]: DPO plus NLL on the chosen answer,
    # as in RPO / MPO, which keeps the policy from escaping pairs by saying less).
    loss_type: str | list[str] = "sigmoid"
    loss_weights: list[float] | None = None  # one per loss_type entry (TRL default: all 1.0)
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs (TRL semantics)
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    trl: dict[str, Any] = field(default_factory=dict)  # any other DPOConfig field, passed through

    def validate(self) -> None:
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise FieldError("beta", f"must be > 0, got {self.beta!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise FieldError("learning_rate", f"must be > 0, got {self.learning_rate!r}")
        if not self.loss_type:
            raise FieldError("loss_type", "must name a DPO loss (e.g. sigmoid)")
        n_losses = 1 if isinstance(self.loss_type, str) else len(self.loss_type)
        if self.loss_weights is not None and len(self.loss_weights) != n_losses:
            raise FieldError("loss_weights", f"needs one weight per loss_type entry ({n_losses}), got {len(self.loss_weights)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise FieldError("max_steps", f"must be -1 (use epochs) or >= 1, got {self.max_steps!r}")
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise FieldError("num_train_epochs", f"must be > 0, got {self.num_train_epochs!r}")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)!r}")
        named = set(self._named())
        for key in self.trl:
            if key in named:
                raise FieldError(f"trl.{key}", f"set dpo.{key} instead of passing it through trl")

    def _named(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "learning_rate": self.learning_rate,
            "loss_type": [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type),
            "loss_weights": self.loss_weights,
            "num_train_epochs": self.num_train_epochs,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }

    def dpo_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `trl.DPOConfig` (named fields, then the `trl` passthrough)."""
        return {**self._named(), **self.trl}


@dataclass
class RLAIFVConfig:
    """All settings of the RLAIF-V rounds."""

    rounds: int = 2
    prompts_per_round: int = 64  # (image, instruction) prompts sampled per round
    n_samples: int = 10  # candidates per prompt, one decoding setting, seeds differ
    temperature: float = 0.7
    max_tokens: int = 64
    mode: Literal["deep", "fast"] = "fast"  # thinking mode of the candidates (think blocks are stripped)
    splitter: str = "shapes"  # "shapes" | "model:<path-or-name>"
    splitter_temperature: float = 0.2
    # "self" (the policy) | "trained" (a separate tiny labeler trained here on fresh scenes'
    # claim questions, `labeler_training`, cached) | "model:<path-or-name>" (any VLM) | "oracle"
    # (the scene's ground truth: an ablation only)
    labeler: str = "self"
    labeler_training: LabelerTraining = field(default_factory=LabelerTraining)
    labeler_temperature: float = 1.0  # logits / T of the yes/no probabilities
    labeler_suffix: str = " Answer yes or no."  # appended to every claim question
    max_pairs_per_prompt: int = 2
    min_gap: int = 1  # |S_a − S_b| ≥ min_gap
    length_balance: bool = True
    dpo: DPOSettings = field(default_factory=DPOSettings)
    best_of_n: bool = False  # rerank samples with the implicit DPO reward at evaluation
    best_of_n_samples: int = 4
    # Each round describes fresh generator scenes (its own stream, never a train, RL or held-out
    # scene) instead of the train split's memorised images; Shapes data only (other data sample
    # the train split's description rows).
    fresh_scenes: bool = True
    # CHAIR on one description per held-out image (Shapes rows carry the objects of every image),
    # not only on the split's description rows.
    describe_every_heldout_image: bool = True
    seed: int = 0

    def validate(self) -> None:
        for name, low in (("rounds", 1), ("prompts_per_round", 1), ("n_samples", 2), ("max_tokens", 1)):
            if getattr(self, name) < low:
                raise FieldError(name, f"must be >= {low}, got {getattr(self, name)!r}")
        for name in ("temperature", "splitter_temperature", "labeler_temperature"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise FieldError(name, f"must be > 0, got {value!r}")
        if self.mode not in ("deep", "fast"):
            raise FieldError("mode", f"must be 'deep' or 'fast', got {self.mode!r}")
        for name, parse in (("splitter", parse_splitter_spec), ("labeler", parse_labeler_spec)):
            try:
                parse(getattr(self, name))
            except ValueError as exc:
                raise FieldError(name, str(exc)) from None
        if self.max_pairs_per_prompt < 1:
            raise FieldError("max_pairs_per_prompt", f"must be >= 1, got {self.max_pairs_per_prompt!r}")
        if self.min_gap < 1:
            raise FieldError("min_gap", f"must be >= 1 (ties are never paired), got {self.min_gap!r}")
        if self.best_of_n and self.best_of_n_samples < 2:
            raise FieldError("best_of_n_samples", f"must be >= 2, got {self.best_of_n_samples!r}")
        try:
            self.dpo.validate()
        except FieldError as exc:
            raise FieldError(f"dpo.{exc.field}", exc.message) from None
        try:
            self.labeler_training.validate()
        except FieldError as exc:
            raise FieldError(f"labeler_training.{exc.field}", exc.message) from None

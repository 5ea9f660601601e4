"""Stage 1, warm-up SFT: the recipe's cold start, with TRL `SFTTrainer` on both thinking modes.

The policy learns deep answers (`<think>` reasoning `</think>` answer) and fast answers (after the
pre-filled empty think block) on the train split, yes/no existence questions and descriptions
included (`rl.sft_data`). Hard question types can be up-weighted. The trained policy is saved in
Hugging Face format to `<output_dir>/policy_warmup` (model + processor, loadable by vLLM), becomes
`ctx.model_path`, and is evaluated on the held-out split in both modes.

The config is read with `getattr(ctx.cfg, "warmup", WarmupConfig())`, so the stage also runs
from a `TrainConfig` that has no `warmup` section.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl.configlib import FieldError
from rl.sft_data import DEFAULT_HARD_QTYPES
from rl.text_pretrain import TextPretrainConfig
from rl.vision_pretrain import VisionPretrainConfig

# SFTConfig fields the stage sets from its own fields; naming them under `trl:` would give
# one knob two sources of truth.
OWNED_TRL_KEYS = {
    "output_dir": "(the stage writes under <output_dir>/warmup)",
    "learning_rate": "learning_rate",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "max_steps": "steps",
    "num_train_epochs": "epochs",
    "seed": "(the run's top-level seed)",
    "train_sampling_strategy": "group_by_length",
}


@dataclass
class WarmupConfig:
    """Warm-up SFT settings; `trl` passes any other `trl.SFTConfig` field through."""

    enabled: bool = True
    steps: int = 540  # optimizer steps; 0 = train for `epochs` instead
    epochs: float = 1.0
    # For the tiny model from random init; 2e-3 and 3e-3 learned less in the same steps, 6e-3
    # failed (measured). Pretrained VLMs want ~1e-5.
    learning_rate: float = 1e-3
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    mode_mix: float | None = None  # share of deep examples; None = both modes for every row
    hard_qtypes: list[str] = field(default_factory=lambda: list(DEFAULT_HARD_QTYPES))
    hard_weight: int = 2  # times each hard-qtype row appears
    # Question types the warm-up never trains on (left for RL to learn, e.g. the compositional
    # Shapes qtypes colour_count / shape_count / more / neighbour).
    exclude_qtypes: list[str] = field(default_factory=list)
    max_examples: int = 0  # cap on SFT examples after shuffling (0 = all)
    # The cold start trains the vision tower too (the tiny model's is random); later stages keep
    # it frozen. Real recipes may set false. At lr 1e-3 training it scored a little higher than
    # keeping it frozen; at 3e-3 it scored lower (measured on the tiny model).
    train_vision: bool = True
    # Learning rate of the vision tower and the connector as a multiple of `learning_rate` (real
    # VLM recipes often give the image path its own rate). Measured on the demo config: 5.0 fell
    # to held-out 0.343 / 0.286 (deep / fast) and CHAIRi 0.55, against 0.362 / 0.374 and 0.38
    # at 1.0 (README, "Does GRPO learn here?").
    vision_lr_scale: float = 1.0
    # Per-cell scene-label training of the vision tower before the SFT (`rl.vision_pretrain`, the
    # tiny model's stand-in for a pretrained encoder; Shapes data only). Off by default.
    vision_pretrain: VisionPretrainConfig = field(default_factory=VisionPretrainConfig)
    # Text-only training of the language model on deep completions of fresh scenes' questions
    # (the taught qtypes only) before the SFT (`rl.text_pretrain`, the tiny model's stand-in for
    # a pretrained language model; Shapes data only). Off by default.
    text_pretrain: TextPretrainConfig = field(default_factory=TextPretrainConfig)
    # Batches of similar length (transformers' LengthGroupedSampler over each example's token
    # count): deep answers and descriptions are ~3x longer than fast answers, so random batches
    # carry much padding. Changes which examples share a batch, not which examples are seen.
    # Measured on the demo config: 1.5x faster warm-up, but batches of one kind (all fast answers,
    # all descriptions) trained a far worse policy (held-out 0.20 against 0.36, CHAIRi 0.80).
    group_by_length: bool = False
    logging_steps: int = 10
    trl: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.steps < 0:
            raise FieldError("steps", f"must be >= 0 (0 = train for `epochs`), got {self.steps}")
        if self.steps == 0 and not self.epochs > 0:
            raise FieldError("epochs", f"must be > 0 when steps is 0, got {self.epochs}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise FieldError("learning_rate", f"must be a positive number, got {self.learning_rate}")
        for name in ("batch_size", "gradient_accumulation_steps", "hard_weight", "logging_steps"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if not (self.vision_lr_scale > 0 and math.isfinite(self.vision_lr_scale)):
            raise FieldError("vision_lr_scale", f"must be a positive number, got {self.vision_lr_scale}")
        if self.mode_mix is not None and not 0.0 <= self.mode_mix <= 1.0:
            raise FieldError("mode_mix", f"must be empty (both modes) or in [0, 1], got {self.mode_mix}")
        self.vision_pretrain.validate()
        self.text_pretrain.validate()
        if self.max_examples < 0:
            raise FieldError("max_examples", f"must be >= 0 (0 = all), got {self.max_examples}")
        for key in self.trl:
            if key in OWNED_TRL_KEYS:
                raise FieldError(f"trl.{key}", f"set by the stage; use warmup.{OWNED_TRL_KEYS[key]}")
        from trl import SFTConfig

        from rl.config import check_trl_kwargs

        check_trl_kwargs(SFTConfig, self.trl, "warmup.trl")


def sft_args(cfg: WarmupConfig, out: Path, seed: int, on_cpu: bool, world_size: int = 1):
    """The `trl.SFTConfig` of the stage: our fields, CPU-sensible defaults, then `cfg.trl`.
    `batch_size` is the global batch: each of `world_size` trainer workers takes its share."""
    from trl import SFTConfig

    kwargs: dict[str, Any] = {
        "output_dir": str(out / "warmup"),
        "learning_rate": cfg.learning_rate,
        "per_device_train_batch_size": cfg.batch_size // world_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "max_steps": cfg.steps if cfg.steps > 0 else -1,
        "num_train_epochs": cfg.epochs,
        "seed": seed,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,  # a float below 1 is a share of the total steps
        "weight_decay": 0.0,
        "logging_steps": cfg.logging_steps,
        "report_to": ["tensorboard"],
        "save_strategy": "no",  # the stage saves the final policy itself
        "dataloader_num_workers": 0,
        "disable_tqdm": False,
        "train_sampling_strategy": "group_by_length" if cfg.group_by_length else "random",
    }
    if on_cpu:
        # fp32 on CPU; recomputing activations only costs time for models this small.
        kwargs.update(use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False)
    kwargs.update(cfg.trl)
    return SFTConfig(**kwargs)


def load_for_training(ctx: Any, cfg: WarmupConfig, pretrain: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """(model, processor) from `ctx.model_path`, with the configured frozen parts and LoRA.

    With `pretrain` (a dict) and `cfg.vision_pretrain.steps` > 0, the vision tower is first
    pretrained on fresh scenes' cell labels, and with `cfg.text_pretrain.steps` > 0 the language
    model on text-only deep completions; their metrics are written into `pretrain` under
    "vision_pretrain" and "text_pretrain".
    """
    from policies.loading import PolicyConfig, apply_lora, freeze_vision, load_model, load_processor

    policy = getattr(ctx.cfg, "policy", PolicyConfig())
    pcfg = PolicyConfig(**{**vars(policy), "name_or_path": ctx.model_path})
    model = load_model(ctx.model_path, pcfg)
    processor = load_processor(ctx.model_path, pcfg.trust_remote_code)
    if pretrain is not None and cfg.vision_pretrain.steps:
        pretrain["vision_pretrain"] = pretrain_perception(ctx, cfg, model, processor)
    if pretrain is not None and cfg.text_pretrain.steps:
        pretrain["text_pretrain"] = pretrain_language(ctx, cfg, model, processor)
    if not cfg.train_vision:
        freeze_vision(model)
    if pcfg.lora.enabled:
        model = apply_lora(model, pcfg.lora)
    return model, processor


def _shapes_source(ctx: Any, knob: str) -> tuple[Any, set[tuple]]:
    """The run's Shapes config and the scene signatures a pretraining must not draw (held-out
    and RL); a FieldError naming `knob` when the data are not Shapes."""
    from rl.data.config import ShapesConfig
    from rl.vision_pretrain import excluded_signatures

    data_cfg = getattr(ctx.cfg, "data", None)
    if getattr(data_cfg, "source", "shapes") != "shapes":
        raise FieldError(knob, f"pretraining draws Shapes scenes; with data.source={data_cfg.source!r} set "
                         f"warmup.{knob}=0")
    shapes = getattr(data_cfg, "shapes", None) or ShapesConfig()
    return shapes, excluded_signatures(ctx.data.eval, getattr(ctx.data, "rl", None))


def pretrain_perception(ctx: Any, cfg: WarmupConfig, model: Any, processor: Any) -> dict[str, Any]:
    """`rl.vision_pretrain` on fresh Shapes scenes, keeping the held-out and RL scenes unseen."""
    from rl.vision_pretrain import pretrain_vision

    shapes, avoid = _shapes_source(ctx, "vision_pretrain.steps")
    return pretrain_vision(model, processor, cfg.vision_pretrain, ctx.data.eval, avoid,
                           image_size=shapes.image_size, seed=getattr(ctx.cfg, "seed", 0))


def pretrain_language(ctx: Any, cfg: WarmupConfig, model: Any, processor: Any) -> dict[str, Any]:
    """`rl.text_pretrain` on the warm-up's own question types of fresh Shapes scenes."""
    from rl.text_pretrain import pretrain_reading

    shapes, avoid = _shapes_source(ctx, "text_pretrain.steps")
    qtypes = [q for q in shapes.short_qtypes if q not in cfg.exclude_qtypes]
    return pretrain_reading(model, processor, cfg.text_pretrain, qtypes, ctx.data.eval, avoid,
                            image_size=shapes.image_size, reasoning=shapes.reasoning,
                            exists_reasoning=shapes.exists_reasoning, seed=getattr(ctx.cfg, "seed", 0))


def point_tensorboard(trainer: Any, log_dir: Path) -> None:
    """Send the trainer's TensorBoard scalars to `log_dir` (transformers defaults to output_dir/runs)."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(log_dir)


def train(ctx: Any, cfg: WarmupConfig, model: Any, processor: Any, dataset: Any, worker: Any = None,
          save_to: Path | None = None) -> dict[str, Any]:
    """Run `trl.SFTTrainer`; returns step count, losses and seconds. `model` is trained in place.
    With `worker` (`rl.trainer_group.WorkerContext`) this process is one rank of a trainer group;
    with `save_to` the trained policy (LoRA merged) is saved there in HF format."""
    from rl.sft_data import add_lengths
    from rl.sft_trainer import LENGTH_COLUMN, WarmupSFTTrainer
    from rl.trainer_group import check_distributed, group_callbacks

    on_cpu = str(getattr(model, "device", "cpu")).startswith("cpu")
    world = worker.world_size if worker is not None else 1
    args = sft_args(cfg, Path(ctx.out), getattr(ctx.cfg, "seed", 0), on_cpu, world)
    if cfg.group_by_length:
        dataset = add_lengths(processor, dataset, LENGTH_COLUMN)
    from rl.interrupt import StopOnRequest

    stop = StopOnRequest(ctx.out, save=False)  # the warm-up restarts on resume
    checks = group_callbacks(worker)
    trainer = WarmupSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                               vision_lr_scale=cfg.vision_lr_scale, callbacks=[stop, *checks])
    check_distributed(trainer, world, "warm-up")
    point_tensorboard(trainer, Path(ctx.out) / "tb" / "warmup")
    t0 = time.perf_counter()
    result = trainer.train()
    stop.raise_if_stopped("warm-up")
    seconds = time.perf_counter() - t0
    if save_to is not None:
        from rl.trainer_group import save_trained

        save_trained(trainer, merge_lora(model), processor, save_to, worker)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        **({"rank_checks": checks[0].checks} if checks else {}),  # cross-rank weight checks passed
        "steps": int(trainer.state.global_step),
        "train_loss": float(result.training_loss),
        "final_train_loss": float(losses[-1]) if losses else float("nan"),
        "first_train_loss": float(losses[0]) if losses else float("nan"),
        "train_seconds": seconds,
        "epochs": float(trainer.state.epoch or 0.0),
    }


def merge_lora(model: Any) -> Any:
    """A peft model with its adapters merged into plain weights; any other model unchanged."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save_policy(model: Any, processor: Any, folder: Path) -> Path:
    """Write the policy in Hugging Face format, loadable by transformers and vLLM."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_eval_engine(ctx: Any, model: Any, processor: Any) -> Any:
    """The engine held-out evaluation generates with (the pipeline may swap in its rollout pool)."""
    from policies.hf_engine import HFEngine

    max_tokens = getattr(getattr(ctx.cfg, "rollout", None), "max_tokens", None)
    return HFEngine(model.eval(), processor, dict(max_tokens) if max_tokens else None)


def heldout_metrics(ctx: Any, model: Any, processor: Any) -> dict[str, Any]:
    """Greedy held-out evaluation in both modes, in the stage's metric names."""
    from rl.evaluate import EvalConfig, evaluate

    engine = make_eval_engine(ctx, model, processor)
    result = evaluate(engine, ctx.data.eval, getattr(ctx.cfg, "eval", EvalConfig()))
    metrics = {
        "heldout_accuracy": result["accuracy"],
        "accuracy_by_task": result["accuracy_by_task"],
        "mean_completion_tokens": result["mean_completion_tokens"],
        "eval_examples": result["n"],
    }
    if any(result.get("chair", {}).values()):  # empty until the CHAIR metrics are installed
        metrics["chair"] = result["chair"]
    return metrics


def sft_dataset(ctx: Any, cfg: WarmupConfig, processor: Any) -> Any:
    """The warm-up's SFT examples from `ctx.data.train` (also GRPO's SFT anchor, `rl.sft_anchor`)."""
    from rl.sft_data import build_sft_dataset

    train_rows = ctx.data.train
    if cfg.exclude_qtypes:
        train_rows = train_rows.filter(lambda q: q not in cfg.exclude_qtypes, input_columns="qtype")
    return build_sft_dataset(
        processor,
        train_rows,
        mode_mix=cfg.mode_mix,
        hard_qtypes=cfg.hard_qtypes,
        hard_weight=cfg.hard_weight,
        max_examples=cfg.max_examples,
        seed=getattr(ctx.cfg, "seed", 0),
    )


def run(ctx: Any) -> dict[str, Any]:
    """Train both modes with SFT, save `policy_warmup`, point `ctx.model_path` at it, evaluate."""
    cfg = getattr(ctx.cfg, "warmup", None) or WarmupConfig()
    cfg.validate()
    self_eval = not getattr(ctx, "runner_evaluates", False)  # the pipeline runner evaluates every stage
    if not cfg.enabled:  # the unchanged policy's numbers are the baseline for later stages
        if not self_eval:
            return {"enabled": False, "steps": 0}
        model, processor = load_for_training(ctx, cfg)
        return {"enabled": False, "steps": 0, **heldout_metrics(ctx, model, processor)}
    from rl.trainer_group import ctx_payload, group_spec, run_group

    spec = group_spec(ctx)
    if spec is not None:  # data-parallel on a Ray Train group; the runner evaluates the saved policy
        out = run_group(train_on_worker, (ctx_payload(ctx),), spec, ctx.out, "warmup")
        ctx.model_path = out["policy"]
        return out
    model, processor, out = train_and_save(ctx, cfg)
    if self_eval:
        out.update(heldout_metrics(ctx, model, processor))
    return out


def train_and_save(ctx: Any, cfg: WarmupConfig, worker: Any = None) -> tuple[Any, Any, dict[str, Any]]:
    """Pretrain (when configured), SFT, and save `policy_warmup` (rank 0 of a group); points
    `ctx.model_path` at it. Returns (model, processor, metrics)."""
    from rl.sft_data import summarize

    pretrain: dict[str, Any] = {}
    model, processor = load_for_training(ctx, cfg, pretrain)
    dataset = sft_dataset(ctx, cfg, processor)
    folder = Path(ctx.out) / "policy_warmup"
    stats = train(ctx, cfg, model, processor, dataset, worker, save_to=folder)
    model = merge_lora(model)  # rollout engines and later stages load plain weights
    ctx.model_path = str(folder)
    out = {**stats, "data": summarize(dataset), "policy": str(folder)}
    out.update(pretrain)
    return model, processor, out


def train_on_worker(worker: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """One rank of the warm-up's trainer group (`rl.trainer_group.run_group`)."""
    from rl.trainer_group import worker_ctx

    ctx = worker_ctx(payload)
    return train_and_save(ctx, ctx.cfg.warmup, worker)[2]

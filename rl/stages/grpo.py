"""Stage 2, hybrid GRPO: TRL GRPOTrainer + rollout pool + per-prompt modes + RLPR + std filter.

Defaults follow MiniCPM-V 4.5 where they fit a CPU: no KL (beta 0), no entropy loss,
temperature 1.0, 50% of prompts in deep mode, all samples of a prompt in one mode; DAPO loss
(TRL's default), clip-higher epsilon_high 0.28. Prompts come from the training split (task
types in `tasks`, question types in `qtypes`). With `sft_coef > 0` every step's loss also
carries the SFT anchor on the warm-up's examples (`rl.sft_anchor`). The policy ratio's old
log-probs are the sampler's (`old_logps`, one forward per step; see rl.grpo_trainer). With
`async.enabled` the pool samples the next step's groups while the trainer trains
(`rl.async_rollouts`, staleness bounded by `async.max_staleness`). After training the policy
is saved in HF format and evaluated on held-out data; the stage returns its metrics and the
per-step log.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rl.configlib import FieldError

if TYPE_CHECKING:
    from rl.context import RunContext


OLD_LOGPS = ("sampler", "trainer")  # grpo.old_logps
ONE_STEP_NEEDED = ("old_logps='sampler' needs one optimizer step per generation (num_iterations 1, "
                   "steps_per_generation = gradient_accumulation_steps); set grpo.old_logps=trainer to reuse a "
                   "generation for several steps")

ASYNC_ONE_STEP_NEEDED = ("grpo.async needs one optimizer step per generation (num_iterations 1, steps_per_generation "
                         "= gradient_accumulation_steps): its staleness bound counts optimizer steps per batch")


def one_step_per_generation(num_iterations: int, steps_per_generation: int | None, accumulation: int) -> bool:
    """Whether each generation is trained by exactly one optimizer step on the weights it was sampled
    with: the condition for using the sampler's log-probs as the old log-probs."""
    return num_iterations == 1 and (steps_per_generation or accumulation) == accumulation


@dataclass
class AsyncConfig:
    """`grpo.async`: rollouts that overlap training (`rl.async_rollouts`). While the trainer trains
    step t, the pool samples the groups of later steps from the newest weights pushed; a batch
    trained at step t comes from weights at most `max_staleness` optimizer steps old (checked on
    every batch). Off: generation and training take turns, every batch on the current weights."""

    enabled: bool = False
    # Batches sampled ahead of the trainer (1 = one-step-off). 0 runs the asynchronous code path
    # without overlap, every batch on the current weights: a diagnostic, not a speed-up.
    max_staleness: int = 1

    def validate(self) -> None:
        if self.max_staleness < 0:
            raise FieldError("max_staleness", f"must be >= 0 (1 = one-step-off; 0 = the async path without "
                                              f"overlap, a diagnostic), got {self.max_staleness}")


@dataclass
class GRPOStageConfig:
    steps: int = 60
    prompts_per_step: int = 8
    num_generations: int = 8
    learning_rate: float = 2e-4
    epsilon: float = 0.2
    epsilon_high: float = 0.28
    beta: float = 0.0
    tasks: list[str] = field(default_factory=lambda: ["short", "freeform"])
    qtypes: list[str] = field(default_factory=list)  # only these question types ([] = all of `tasks`)
    save_steps: int = 20  # checkpoint every K optimizer steps (0 = only at the end)
    # SFT anchor (`rl.sft_anchor`): each step adds sft_coef x the NLL of sft_batch_size warm-up
    # examples (the warm-up's rows and rendering) to the GRPO loss; 0 = off.
    sft_coef: float = 0.0
    sft_batch_size: int = 16
    # Where the policy ratio's old log-probs come from. "sampler": the log-probs the engines
    # returned with each sample, taken on the weights synced before the rollout (one optimizer
    # step per generation), so no extra forward pass; the ratio against them is also the
    # trainer-vs-sampler correction, and the gap is logged from the training forward itself.
    # "trainer": TRL's path, a no-grad forward for the old log-probs plus TRL's vLLM
    # importance-sampling correction between them and the sampler's (needed when several
    # optimizer steps share one generation: `trl.steps_per_generation`, `trl.num_iterations`).
    old_logps: str = "sampler"
    # Length-bucketed loss (`rl.length_buckets`): the batch's rows sorted by length and cut into at
    # most this many buckets, each trimmed to its own prompt and completion widths, so fast answers
    # do not pay for the padding to deep ones; exact for TRL's dapo loss (others: one bucket). A
    # bucket costs one more forward call: `bucket_overhead_tokens` is that cost in padded tokens,
    # which keeps the cut from making buckets that save less than they cost. 1 = off. Measured on
    # the demo's hybrid workload (README, "Faster than TRL"): the trainer's part of a sync step
    # 0.77 s with one padded batch, 0.51 s with 4 buckets.
    length_buckets: int = 4
    bucket_overhead_tokens: float = 512.0
    # Where each step's prompt rows come from in the synchronous loop: TRL's dataloader (false) or
    # the sampler's own shuffled stream of training rows (true), which `grpo.async` always uses
    # (its rows for step t + k must exist at step t): pairs a sync run with an async one on the
    # same kind of prompt order.
    prompt_stream: bool = False
    # Overlap of rollouts and training (`grpo.async`); off by default.
    async_: AsyncConfig = field(default_factory=AsyncConfig, metadata={"key": "async"})
    trl: dict[str, Any] = field(default_factory=dict)  # extra trl.GRPOConfig fields

    def validate(self) -> None:
        if self.steps < 1:
            raise FieldError("steps", "must be at least 1")
        if self.num_generations < 2:
            raise FieldError("num_generations", "GRPO needs at least 2 samples per prompt")
        if self.prompts_per_step < 1:
            raise FieldError("prompts_per_step", "must be at least 1")
        if not (self.sft_coef >= 0 and math.isfinite(self.sft_coef)):
            raise FieldError("sft_coef", f"must be a number >= 0 (0 = no SFT anchor), got {self.sft_coef}")
        if self.sft_batch_size < 1:
            raise FieldError("sft_batch_size", f"must be at least 1, got {self.sft_batch_size}")
        if self.length_buckets < 1:
            raise FieldError("length_buckets", f"must be at least 1 (1 = one batch), got {self.length_buckets}")
        if self.bucket_overhead_tokens < 0:
            raise FieldError("bucket_overhead_tokens", f"must be >= 0, got {self.bucket_overhead_tokens}")
        if self.old_logps not in OLD_LOGPS:
            raise FieldError("old_logps", f"must be one of {list(OLD_LOGPS)}, got {self.old_logps!r}")
        one_step = one_step_per_generation(self.trl.get("num_iterations", 1), self.trl.get("steps_per_generation"),
                                           self.trl.get("gradient_accumulation_steps", 1))
        if self.async_.enabled and not one_step:
            raise FieldError("async.enabled", ASYNC_ONE_STEP_NEEDED + " (grpo.trl)")
        if self.old_logps == "sampler" and not one_step:
            raise FieldError("old_logps", ONE_STEP_NEEDED + " (grpo.trl)")


def _cycle_rows(dataset: Any, seed: int):
    """Endless shuffled stream of rows (fresh prompts for refills)."""
    rng = random.Random(seed)
    order = list(range(len(dataset)))
    for _ in itertools.count():
        rng.shuffle(order)
        for i in order:
            yield dataset[i]


def rl_prompts(data: Any, gcfg: GRPOStageConfig) -> Any:
    """The stage's prompt rows: the data's `rl` split when it has one (fresh scenes the warm-up
    never saw), else the train split; filtered to `tasks` and, when given, `qtypes`."""
    rows = data.rl if getattr(data, "rl", None) is not None and len(data.rl) else data.train
    rows = rows.filter(lambda t: t in gcfg.tasks, input_columns="task")
    if gcfg.qtypes:
        rows = rows.filter(lambda q: q in gcfg.qtypes, input_columns="qtype")
    if not len(rows):
        raise ValueError(f"grpo: no prompt rows of tasks {gcfg.tasks} and qtypes {gcfg.qtypes or 'any'} in the data")
    return rows


def grpo_args(cfg: GRPOStageConfig, out_dir: str, max_tokens: int, temperature: float, seed: int,
              world_size: int = 1):
    """TRL's GRPOConfig of the stage; `prompts_per_step` is the global batch, split in whole prompt
    groups over `world_size` trainer workers."""
    from trl import GRPOConfig

    from rl.config import check_trl_kwargs

    check_trl_kwargs(GRPOConfig, cfg.trl, "grpo.trl")
    kwargs: dict[str, Any] = dict(
        output_dir=out_dir,
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.prompts_per_step // world_size * cfg.num_generations,
        gradient_accumulation_steps=1,
        num_generations=cfg.num_generations,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon_high,
        temperature=temperature,
        max_completion_length=max_tokens,
        use_cpu=True,
        bf16=False,
        # TRL's GRPO default is True: it recomputes the forward in the backward to save memory. The
        # CPU default trains small models whose activations fit, so the recompute is pure cost; the
        # GPU recipes turn it back on (`trl: {gradient_checkpointing: true}`).
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 1,
        save_only_model=False,
        report_to=["tensorboard"],
        seed=seed,
        remove_unused_columns=False,
        # TRL's correction runs on its own extra forward; with sampler old log-probs the policy
        # ratio itself is taken against the sampler (rl.grpo_trainer).
        vllm_importance_sampling_correction=cfg.old_logps == "trainer",
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    kwargs.update(cfg.trl)
    return GRPOConfig(**kwargs)


@dataclass
class GRPOSetup:
    """What the stage trains with: the policy, its processor, the training rows, the reward suite
    and the group sampler (built by `prepare`, also used by `rl.bench`)."""

    model: Any
    processor: Any
    train: Any
    suite: Any
    sampler: Any
    anchor: Any = None  # rl.sft_anchor.SFTAnchor when grpo.sft_coef > 0
    old_logps: str = "sampler"  # grpo.old_logps
    max_staleness: int | None = None  # grpo.async.max_staleness when grpo.async.enabled; None = synchronous
    length_buckets: int = 1  # grpo.length_buckets
    prompt_stream: bool = False  # grpo.prompt_stream
    bucket_overhead: float = 0.0  # grpo.bucket_overhead_tokens


def prepare(ctx: RunContext, worker: Any = None) -> GRPOSetup:
    """Load the policy (vision tower frozen unless configured otherwise), pick the training rows of
    `grpo.tasks`, build the reward suite and the group sampler on `ctx.engine`, and sync the engine
    to the policy so it holds exactly the weights the trainer starts from (from rank 0 in a trainer
    group, `worker`)."""
    from policies.loading import load_model, load_processor
    from rewards.breakdown import RewardSuite
    from rl.grpo_sampling import GroupSampler
    from rollouts.scheduler import ModeScheduler
    from rollouts.types import SamplingSettings

    cfg, gcfg = ctx.cfg, ctx.cfg.grpo
    processor = load_processor(ctx.model_path, cfg.policy.trust_remote_code)
    model = load_model(ctx.model_path, cfg.policy)
    if cfg.policy.freeze_vision:
        from policies.loading import freeze_vision

        freeze_vision(model)
    train = rl_prompts(ctx.data, gcfg)
    suite = RewardSuite.from_config(cfg.rewards, tokenizer=processor.tokenizer, scorer=ctx.engine)
    push_weights(ctx.engine, model, worker)  # the engine holds exactly the weights the trainer starts from
    scheduler = ModeScheduler(cfg.rollout.schedule)
    sampling = SamplingSettings(temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p)
    sampler = GroupSampler(ctx.engine, suite, scheduler, cfg.rewards.std_filter, _cycle_rows(train, cfg.seed + 1),
                           gcfg.num_generations, sampling)
    return GRPOSetup(model, processor, train, suite, sampler, make_anchor(ctx, processor), old_logps=gcfg.old_logps,
                     max_staleness=gcfg.async_.max_staleness if gcfg.async_.enabled else None,
                     length_buckets=gcfg.length_buckets, bucket_overhead=gcfg.bucket_overhead_tokens,
                     prompt_stream=gcfg.prompt_stream)


def push_weights(engine: Any, model: Any, worker: Any = None) -> Any:
    """Sync the engine to `model`: directly in one process; in a trainer group every rank takes part
    and rank 0 sends (`rollouts.sharded_sync`)."""
    if worker is None or not worker.distributed:
        return engine.sync_from_model(model)
    from rollouts.sharded_sync import push_from_ranks

    return push_from_ranks(model, engine, worker.is_main, worker.barrier)


def make_anchor(ctx: RunContext, processor: Any) -> Any:
    """The SFT anchor of `grpo.sft_coef` on the warm-up's examples, or None when it is 0."""
    gcfg = ctx.cfg.grpo
    if gcfg.sft_coef == 0:
        return None
    from rl.sft_anchor import SFTAnchor
    from rl.stages.warmup import WarmupConfig, sft_dataset

    dataset = sft_dataset(ctx, getattr(ctx.cfg, "warmup", None) or WarmupConfig(), processor)
    return SFTAnchor(dataset, processor, gcfg.sft_coef, gcfg.sft_batch_size, ctx.cfg.seed)


def sampler_contract(engine: Any) -> tuple[float, list[int]]:
    """What the trainer must know of how the engine samples: the parity monitor's bound for the
    dtype it samples in (the loosest of its actors) and the token ids it never samples (media
    markup; the trainer scores completions under the same ban, so both sides compute the log-probs
    of one policy)."""
    from policies.families import parity_bound

    health = engine.health()
    actors = health if isinstance(health, list) else [health]
    banned = sorted({int(t) for h in actors for t in h.get("banned", [])})
    return max(parity_bound(h.get("dtype", "float32")) for h in actors), banned


def make_trainer(setup: GRPOSetup, args: Any, engine: Any, callbacks: list[Any] | None = None) -> Any:
    """The HybridGRPOTrainer of `setup` (TRL args from `grpo_args`), sampling through `engine`."""
    from rl.grpo_trainer import HybridGRPOTrainer, precomputed_reward

    bound, banned = sampler_contract(engine)
    return HybridGRPOTrainer(
        model=setup.model,
        reward_funcs=[precomputed_reward],
        args=args,
        train_dataset=setup.train,
        processing_class=setup.processor,
        sampler=setup.sampler,
        pool=engine,
        anchor=setup.anchor,
        parity_bound=bound,
        banned_token_ids=banned,
        old_logps=setup.old_logps,
        max_staleness=setup.max_staleness,
        length_buckets=setup.length_buckets,
        bucket_overhead=setup.bucket_overhead,
        prompt_stream=setup.prompt_stream,
        callbacks=callbacks,
    )


def run(ctx: RunContext) -> dict[str, Any]:
    """Train (in this process, or on the run's trainer group), save `policy_grpo`, point the
    context and the engine at it."""
    from rl.trainer_group import ctx_payload, group_spec, run_group

    spec = group_spec(ctx)
    if spec is None:
        return train_and_save(ctx)
    out = run_group(train_on_worker, (ctx_payload(ctx),), spec, ctx.out, "grpo")
    ctx.engine.adopt_version(out.pop("pool_version"))  # rank 0's pushes moved the actors on
    ctx.model_path = ctx.engine_path = out.pop("policy")
    return out


def train_on_worker(worker: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """One rank of the GRPO trainer group (`rl.trainer_group.run_group`)."""
    from rl.trainer_group import worker_ctx

    ctx = worker_ctx(payload)
    out = train_and_save(ctx, worker)
    return {**out, "policy": ctx.model_path, "pool_version": ctx.engine.version}


def train_and_save(ctx: RunContext, worker: Any = None) -> dict[str, Any]:
    """The stage's training (resuming from the last complete checkpoint), the final push to the
    engine and the saved policy; `worker` makes this process one rank of a trainer group."""
    from rl.checkpoints import PipelineStateCallback, latest_complete, load_pipeline_state
    from rl.interrupt import StopOnRequest
    from rl.trainer_group import check_distributed, group_callbacks, save_trained

    cfg, gcfg = ctx.cfg, ctx.cfg.grpo
    main = worker is None or worker.is_main
    setup = prepare(ctx, worker)
    model, processor, train = setup.model, setup.processor, setup.train
    suite, sampler = setup.suite, setup.sampler
    out_dir = str(ctx.out / "grpo")
    args = grpo_args(gcfg, out_dir, max(cfg.rollout.max_tokens.values()), cfg.rollout.temperature, cfg.seed,
                     worker.world_size if worker else 1)
    resume = latest_complete(out_dir)
    if resume is not None:
        sampler.load_state_dict(load_pipeline_state(resume))
        print(f"[grpo] resuming from {resume}", flush=True)
    elif cfg.rewards.rlpr.precompute and suite.rlpr_rewards() and main:  # rank 0 computes every reward
        with ctx.timed("grpo/rlpr_precompute"):
            precompute_debias(suite, train, processor)
    stop = StopOnRequest(ctx.out, save=True)  # a stop saves a complete checkpoint to resume from
    # In async mode the state is taken after the batches in flight finished (HybridGRPOTrainer.sampler_state).
    state = PipelineStateCallback(lambda: trainer.sampler_state(), {"config_hash": ctx.config_hash})
    checks = group_callbacks(worker)
    trainer = make_trainer(setup, args, ctx.engine, [state, stop, *checks])
    check_distributed(trainer, worker.world_size if worker else 1, "GRPO")
    with ctx.timed("grpo/train"):
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    stop.raise_if_stopped("GRPO")
    push_weights(ctx.engine, model, worker)  # the last optimizer step, for evaluation and later stages
    final = ctx.out / "policy_grpo"
    save_trained(trainer, model, processor, final, worker)
    ctx.model_path = ctx.engine_path = str(final)
    out = {"steps": trainer.state.global_step, "resumed_from": str(resume) if resume else None,
           "log": trainer.state.log_history, "first_batch": trainer.first_batch}
    if checks:
        out["rank_checks"] = checks[0].checks
    return out


def precompute_debias(suite: Any, rows: Any, processor: Any) -> int:
    """Fill RLPR's r' cache from the initial policy for every (prompt, reference) of `rows`."""
    from policies.chat import encode_prompt
    from rewards.rlpr import DebiasRow
    from rl.data.rows import row_images, row_videos

    items = []
    for i in range(len(rows)):
        row = rows[i]
        if row["task"] == "short":
            continue
        images, videos = row_images(row), row_videos(row)
        ids = encode_prompt(processor, list(row["prompt"]), images, "deep", videos)
        items.append(DebiasRow(ids, row["answer"], images + videos, "deep"))
    return sum(r.precompute(items) for r in suite.rlpr_rewards())

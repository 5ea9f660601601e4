"""TRL glue for hybrid GRPO: GRPOTrainer whose generation is our rollout pool.

`HybridGRPOTrainer` subclasses TRL's `GRPOTrainer` (TRL computes advantages, the loss and the
optimizer step) and changes the following:
- before generating, it pushes the trainable weights to the rollout actors when the optimizer
  has stepped since the last push (TRL's own `vllm_generation.sync_weights()` hook, pointed at
  the pool), so every rollout comes from the current policy;
- `GroupSampler` decides the prompt groups actually trained on (per-prompt modes, rewards, std
  filter and refill); TRL then runs on exactly those rows; the `rollout_func` returns the cached
  prompt ids (as the engines expanded them) and sampler log-probs;
- the trainer owns the media: TRL sees the rows without their images and videos (its own VLM
  path re-templates prompts with one global thinking mode, knows no videos and no MiniCPM-V
  slices), and every forward (old, reference and policy log-probs) gets the media keyword
  arguments of its rows from `policies.media.forward_media`, built from the same images and
  videos the engines sampled with and mapped onto the exact prompt ids; a per-sample media list
  travels in the batch (`media`) so TRL's shuffle and split keep it aligned;
- completions are scored under the engines' ban on media markup tokens (`banned_logit_bias`), so
  trainer and sampler compute log-probs of one distribution;
- old log-probs (`grpo.old_logps`): "sampler" (default) hands TRL the sampler's log-probs as the
  old log-probs of the policy ratio, so a step runs one forward pass, not two (the samples come
  from the weights synced just before, one optimizer step per generation: the ratio against the
  sampler is then both PPO's ratio and the trainer-vs-sampler correction); tokens the sampler
  could not score (NaN) get the trainer's own value, a ratio of 1. "trainer" keeps TRL's path: a
  no-grad forward for the old log-probs plus TRL's vLLM importance-sampling correction;
- either way the trainer-vs-sampler gap is logged (`sampling/sampling_logp_difference/*`,
  `sampling/importance_sampling_ratio/*`; under "sampler" computed from the training forward's
  log-probs at no extra cost), and the parity monitor (`parity_gaps`) logs the largest per-token
  gap by kind of prompt (`parity/<kind>/max`: text, image, multi_image, video) on the weights
  just synced and warns when one exceeds the bound of the sampler's dtype
  (`policies.families.PARITY_BOUNDS`): the stale-weight alarm, which also shows known model
  differences (Qwen-VL video positions in vLLM vs transformers) by kind.
- with `max_staleness` set (`grpo.async`), batches come from `rl.async_rollouts.RolloutPipeline`:
  sampled on a worker thread from weights at most that many optimizer steps old while the trainer
  trains, weights pushed as snapshots at step boundaries; each completion carries its staleness
  (`staleness` in the batch), the parity monitor looks only at fresh (staleness 0) rows, and the
  sampler-gap metrics become the importance-sampling ratio against the behaviour policy.
- with `length_buckets` > 1 the loss runs on length buckets of the batch, each trimmed to its own
  widths (`rl.length_buckets`): fast rows no longer pay for the deep rows' padding.
- in a trainer group (`ray.trainer_workers`, several accelerate processes) rank 0 samples every
  rank's groups through the pool and broadcasts them, each rank trains its contiguous share of
  whole groups (`_sample_on_main`), weight pushes go through `rollouts.sharded_sync` (every rank
  walks the gathers, rank 0 sends), and the `*/max` / `*/min` metrics are taken over all ranks.
Rewards are computed once, by the sampler (which sees the raw text with think tags; TRL's decoded
completions drop special tokens), and reach TRL through the `precomputed_reward` function.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from trl import GRPOTrainer

from policies.media import forward_media
from policies.tokens import BANNED_LOGIT_BIAS
from rl.data.rows import row_images, row_videos
from rl.grpo_sampling import Group, GroupSampler
from rl.sft_anchor import add_anchor
from rl.stages.grpo import ASYNC_ONE_STEP_NEEDED, OLD_LOGPS, ONE_STEP_NEEDED, one_step_per_generation

MEDIA_COLUMNS = ("image", "images", "videos")  # what TRL must not see (the trainer feeds media itself)


def media_kind(row: dict[str, Any]) -> str:
    """The kind of prompt a row is, for per-kind metrics: text, image, multi_image or video."""
    return kind_of_media(row.get("images") or [], row.get("videos") or [])


def kind_of_media(images: list[Any], videos: list[Any]) -> str:
    """The kind of prompt with these media: text, image, multi_image or video."""
    if videos:
        return "video"
    return "text" if not images else "image" if len(images) == 1 else "multi_image"


def fill_unscored(old_logps: Any, trainer_logps: Any) -> int:
    """Where the sampler could not score a token (NaN or inf in `old_logps`), put the trainer's own
    log-prob in its place (in place): a policy ratio of 1 there, no correction, as TRL's
    importance-sampling path treats such tokens. Returns how many were filled."""
    import torch

    bad = ~torch.isfinite(old_logps)
    if bad.any():
        old_logps[bad] = trainer_logps[bad].to(old_logps.dtype)
    return int(bad.sum())


def sampler_gap_stats(trainer_logps: Any, sampler_logps: Any, mask: Any) -> dict[str, float]:
    """TRL's trainer-vs-sampler metrics from two log-prob tensors on the same weights: mean and max
    per-token |gap| and the min / mean / max token ratio exp(trainer − sampler), over the
    completion tokens the sampler scored (NaN entries skipped)."""
    import torch

    diff = (trainer_logps - sampler_logps)[mask.bool() & torch.isfinite(sampler_logps)]
    if not diff.numel():
        return {}
    ratio = diff.exp()
    return {"sampling/sampling_logp_difference/mean": float(diff.abs().mean()),
            "sampling/sampling_logp_difference/max": float(diff.abs().max()),
            "sampling/importance_sampling_ratio/min": float(ratio.min()),
            "sampling/importance_sampling_ratio/mean": float(ratio.mean()),
            "sampling/importance_sampling_ratio/max": float(ratio.max())}


def parity_gaps(old_logps: Any, sampler_logps: Any, mask: Any, kinds: list[str]) -> dict[str, float]:
    """Largest per-token |trainer − sampler| log-prob gap over the completion tokens, per kind of
    prompt (`kinds`: one per row) and over all rows (key "all"). NaN sampler entries are skipped."""
    import torch

    gap = (old_logps - sampler_logps).abs()
    gap = torch.where(mask.bool() & torch.isfinite(gap), gap, torch.zeros_like(gap)).amax(dim=1)
    out = {"all": float(gap.max())} if len(kinds) else {}
    for kind in sorted(set(kinds)):
        out[kind] = float(max(gap[i] for i, k in enumerate(kinds) if k == kind))
    return out


def merge_extremes(metrics: dict[str, list[float]], before: dict[str, int]) -> None:
    """After a step's loss ran in several length buckets, each appended its own value of every
    metric; TRL's logger would average them, which understates a maximum (`parity/all/max`,
    `clip_ratio/high_max`, ...). Keys ending in `max` / `min` keep one value per step: the max /
    min of the buckets' (means stay means)."""
    for key, values in metrics.items():
        start = before.get(key, 0)
        if len(values) - start > 1 and key.endswith(("max", "min")):
            tail = values[start:]
            del values[start:]
            values.append(max(tail) if key.endswith("max") else min(tail))


def _engine_version(engine: Any) -> int:
    """The weights version an engine (pool or in-process engine) holds now."""
    if hasattr(engine, "version"):
        return int(engine.version)
    health = engine.health()
    return int((health[0] if isinstance(health, list) else health)["version"])


def precomputed_reward(prompts: list[Any], completions: list[Any], reward_total: list[float], **_: Any) -> list[float]:
    """TRL reward function that returns the totals the GroupSampler already computed."""
    return [float(r) for r in reward_total]


class PoolWeightSync:
    """Stands in for TRL's `vllm_generation`: `sync_weights()` pushes to the rollout pool."""

    def __init__(self, trainer: HybridGRPOTrainer, pool: Any):
        self.trainer = trainer
        self.pool = pool
        self.history: list[Any] = []

    def sync_weights(self) -> None:
        acc = self.trainer.accelerator
        if acc.num_processes > 1:  # every rank walks the gathers, rank 0 sends (rollouts.sharded_sync)
            from rollouts.sharded_sync import push_from_ranks

            stats = push_from_ranks(acc.unwrap_model(self.trainer.model), self.pool, acc.is_main_process,
                                    acc.wait_for_everyone)
        else:
            stats = self.pool.sync_from_model(self.trainer.model)
        if stats is None:
            return
        self.history.append(stats)
        self.trainer._metrics["train"]["time/sync_s"].append(stats.seconds)

    def push(self, payload: Any) -> Any:
        """Apply a weight snapshot (asynchronous mode; runs on the pipeline's worker thread)."""
        stats = self.pool.sync(payload)
        self.history.append(stats)
        return stats


def groups_to_rollout_output(groups: list[Group]) -> dict[str, list[Any]]:
    """The `rollout_func` result for the chosen groups (one entry per completion, group order)."""
    out: dict[str, list[Any]] = {k: [] for k in ("prompt_ids", "completion_ids", "logprobs", "reward_total", "mode", "version")}
    for g in groups:
        for c, b in zip(g.rollout.completions, g.breakdowns, strict=True):
            out["prompt_ids"].append(list(g.rollout.prompt_ids))
            out["completion_ids"].append(list(c.completion_ids))
            out["logprobs"].append(list(c.logprobs))
            out["reward_total"].append(b.total)
            out["mode"].append(g.mode)
            out["version"].append(g.rollout.version)
    return out


def check_prompt_alignment(processor: Any, groups: list[Group]) -> None:
    """For every group, the prompt ids the actors sampled from must equal the processor's ids of
    the same prompt and media in the group's mode: the trainer's forward pairs those ids with the
    media tensors `forward_media` builds, so a template or expansion drift between the engines
    and the trainer would feed misaligned image features. Raises on a mismatch."""
    from policies.chat import encode_prompt

    for g in groups:
        ours = encode_prompt(processor, list(g.row["prompt"]), row_images(g.row), g.mode, row_videos(g.row))
        if ours != list(g.rollout.prompt_ids):
            raise RuntimeError(f"prompt {g.row['id']} ({g.mode}): actor prompt ids differ from the trainer's tokenization")


@functools.lru_cache(maxsize=4)
def _ban_vector(size: int, dtype: Any, device: Any, token_ids: tuple[int, ...]) -> Any:
    """The LM-head bias of the ban, built once per head shape (not on every forward)."""
    import torch

    bias = torch.zeros(size, dtype=dtype, device=device)
    bias[torch.tensor(token_ids, device=device)] = BANNED_LOGIT_BIAS
    return bias


@contextmanager
def banned_logit_bias(model: Any, token_ids: list[int]) -> Iterator[None]:
    """Score under the engines' ban: while inside, the LM head carries a frozen bias of
    `BANNED_LOGIT_BIAS` on `token_ids` (TRL's fused log-prob kernel adds the head's bias to every
    logit tile), so the trainer's log-probs are those of the distribution the engines sampled
    from. Without it every completion token differs from the sampler's by the banned tokens' mass
    (about 5e-3 per token on the tiny random models). A head with a bias of its own is left alone."""
    import torch

    head = model.get_output_embeddings() if token_ids else None
    if head is None or getattr(head, "bias", False) is not None:
        yield
        return
    bias = _ban_vector(head.weight.shape[0], head.weight.dtype, head.weight.device, tuple(token_ids))
    head.bias = torch.nn.Parameter(bias, requires_grad=False)
    try:
        yield
    finally:
        head.bias = None


class HybridGRPOTrainer(GRPOTrainer):
    def __init__(self, *args: Any, sampler: GroupSampler, pool: Any, anchor: Any = None, parity_bound: float = 1e-4,
                 banned_token_ids: list[int] | None = None, old_logps: str = "sampler", max_staleness: int | None = None,
                 length_buckets: int = 1, bucket_overhead: float = 0.0, prompt_stream: bool = False, **kwargs: Any):
        if old_logps not in OLD_LOGPS:
            raise ValueError(f"old_logps must be one of {OLD_LOGPS}, got {old_logps!r}")
        self.old_logps = old_logps
        self._train_logps: Any = None  # detached log-probs of the last training forward ("sampler")
        self._pending_old: Any = None  # the sampler old log-probs of the micro-batch being trained
        self.sampler = sampler
        self.banned_token_ids = list(banned_token_ids or [])  # never sampled: scored under the same ban
        self.anchor = anchor  # rl.sft_anchor.SFTAnchor or None
        self.parity_bound = parity_bound  # per-token gap the sampler's dtype allows (policies.families)
        self.parity_warned: set[str] = set()
        self._cached: dict[str, list[Any]] | None = None
        self._active_media: list[tuple[list[Any], list[Any]]] | None = None  # per row of the next forward
        self.last_groups: list[Group] = []
        self._alignment_checked = False
        self.max_staleness = max_staleness  # None = synchronous; else grpo.async.max_staleness
        self.length_buckets = length_buckets  # grpo.length_buckets (rl.length_buckets); 1 = one batch
        self.bucket_overhead = bucket_overhead  # grpo.bucket_overhead_tokens
        self.prompt_stream = prompt_stream  # grpo.prompt_stream: sync rows from the sampler's stream
        self.pipeline: Any = None  # rl.async_rollouts.RolloutPipeline, built at the first training batch
        self.first_batch: dict[str, list[float]] | None = None  # rewards and advantages of the first batch
        super().__init__(*args, rollout_func=self._rollout, **kwargs)
        # Route TRL's vLLM-only paths (weight-sync hook, importance-sampling correction and its
        # sampler-gap metrics) to the pool; "server" keeps TRL away from its colocated engine.
        self.use_vllm = True
        self.vllm_mode = "server"
        self.vllm_generation = PoolWeightSync(self, pool)
        self._last_loaded_step = -1
        one_step = one_step_per_generation(self.num_iterations, self.args.steps_per_generation,
                                           self.args.gradient_accumulation_steps)
        if max_staleness is not None and not one_step:
            raise ValueError(ASYNC_ONE_STEP_NEEDED)
        if old_logps == "sampler":
            if not one_step:
                raise ValueError(ONE_STEP_NEEDED)
            # No no-grad forward: TRL's old log-probs are None and ours fill them from the sampler.
            self.vllm_importance_sampling_correction = False

    def _rollout(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        if self._cached is None or len(self._cached["prompt_ids"]) != len(prompts):
            raise RuntimeError("rollout_func called without a sampled batch of the right size")
        out, self._cached = self._cached, None
        return out

    def _sample_groups(self, rows: list[dict[str, Any]]) -> tuple[list[Group], Any, list[int]]:
        """The groups to train on now, their sampling stats and each group's staleness (optimizer
        steps between the weights it was sampled with and the trainer's)."""
        if self.max_staleness is not None and self.model.training:
            # TRL's own weight-sync hook (in its generation path) must not push the live weights
            # behind the pipeline's back: pushes are the pipeline's, as snapshots, on its worker.
            self._last_loaded_step = self.state.global_step
            batch = self._rollout_pipeline(len(rows)).batch(self.state.global_step, self._snapshot)
            for key, value in batch.metrics().items():
                self._metrics["train"][key].append(value)
            return batch.groups, batch.stats, batch.staleness
        if self.pipeline is not None:  # TRL evaluation between training steps (our stages never run one)
            raise RuntimeError("grpo.async: TRL evaluation during training would push weights behind the rollout "
                               "pipeline; evaluate after training (the stage does) or set grpo.async.enabled=false")
        if self.model.training and self.state.global_step != self._last_loaded_step:
            self.vllm_generation.sync_weights()
            self._last_loaded_step = self.state.global_step
        stream = self.prompt_stream and self.model.training
        if self.accelerator.num_processes > 1:
            groups, stats = self._sample_on_main(rows, stream)
        else:
            groups, stats = self.sampler.sample([next(self.sampler.fresh_rows) for _ in rows] if stream else rows)
        return groups, stats, [0] * len(groups)

    def _sample_on_main(self, rows: list[dict[str, Any]], stream: bool) -> tuple[list[Group], Any]:
        """A trainer group's batch: rank 0 samples the groups of every rank's rows through the pool
        in one call (whole prompt groups, one mode each, the std filter over the whole batch), every
        rank receives them and keeps its own contiguous share. TRL then gathers the rewards of all
        ranks before normalising by group, so the advantages are those of one process."""
        from accelerate.utils import broadcast_object_list, gather_object

        acc = self.accelerator
        everyone = gather_object(list(rows))  # rank order
        box: list[Any] = [None]
        if acc.is_main_process:
            if stream:
                everyone = [next(self.sampler.fresh_rows) for _ in everyone]
            groups, stats = self.sampler.sample(everyone)
            if len(groups) != len(everyone):
                raise RuntimeError(f"the sampler returned {len(groups)} groups for {len(everyone)} prompts")
            box = [(groups, stats)]
        broadcast_object_list(box, from_process=0)
        groups, stats = box[0]
        k = len(rows)
        return groups[acc.process_index * k : (acc.process_index + 1) * k], stats

    def _rollout_pipeline(self, prompts_per_step: int) -> Any:
        if self.pipeline is None:
            from rl.async_rollouts import RolloutPipeline

            sampler, pool = self.sampler, self.vllm_generation.pool
            self.pipeline = RolloutPipeline(
                sampler.sample, lambda: [next(sampler.fresh_rows) for _ in range(prompts_per_step)],
                self.vllm_generation.push, self.max_staleness, engine_version=int(_engine_version(pool)))
        return self.pipeline

    def _snapshot(self, version: int) -> Any:
        return self.vllm_generation.pool.snapshot(self.accelerator.unwrap_model(self.model), version)

    def sampler_state(self) -> dict[str, Any]:
        """The sampler's state for a checkpoint; in async mode after the batches in flight finished
        (they are sampled again on resume, from this state)."""
        if self.pipeline is not None:
            self.pipeline.drain()
        return self.sampler.state_dict()

    def train(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().train(*args, **kwargs)
        finally:
            if self.pipeline is not None:  # batches sampled ahead for steps that never come are dropped
                self.pipeline.close()
                self.pipeline = None

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        G = self.num_generations
        rows = [inputs[i] for i in range(0, len(inputs), G)]
        groups, stats, staleness = self._sample_groups(rows)
        if not self._alignment_checked:  # once per run: cheap, and catches template drift early
            check_prompt_alignment(self.processing_class, groups)
            self._alignment_checked = True
        self.last_groups = groups
        for key, value in stats.flat().items():
            self._metrics["train"][key].append(float(value))
        self._cached = groups_to_rollout_output(groups)
        media = [(row_images(g.row), row_videos(g.row)) for g in groups for _ in range(G)]
        # One dict per completion: TRL writes each completion's extra fields into its input row.
        final_inputs = [{k: v for k, v in g.row.items() if k not in MEDIA_COLUMNS} for g in groups for _ in range(G)]
        self._active_media = media
        output = super()._generate_and_score_completions(final_inputs)
        if self.first_batch is None:  # the whole batch (all ranks): compares runs of any group size
            rewards = self.accelerator.gather(torch.tensor([b.total for g in groups for b in g.breakdowns]))
            self.first_batch = {"rewards": rewards.tolist(), "advantages": self.accelerator.gather(
                output["advantages"].detach().cpu()).tolist()}
        output["media"] = media
        output["staleness"] = [s for s in staleness for _ in range(G)]
        if self.old_logps == "sampler":
            sampled = output.get("sampling_per_token_logps")
            if sampled is None:
                raise RuntimeError("old_logps='sampler' but the rollout returned no sampler log-probs")
            output["old_per_token_logps"] = sampled.clone()  # NaN entries are filled in the training forward
        else:
            self._monitor_parity(output.get("old_per_token_logps"), output.get("sampling_per_token_logps"),
                                 output["completion_mask"], [media_kind(g.row) for g in groups for _ in range(G)],
                                 output["staleness"])
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.accelerator.num_processes > 1 and self.model.training:
            self._merge_rank_extremes()
        super().log(logs, start_time)

    def _merge_rank_extremes(self) -> None:
        """In a trainer group: `*/max` and `*/min` metrics (the parity monitor, the sampler gap) over
        every rank's rows, not only rank 0's, before TRL logs rank 0's metrics. Every rank calls
        this from `log` (one collective per log, whatever keys each rank holds)."""
        from accelerate.utils import gather_object

        metrics = self._metrics["train"]
        mine = {k: (max(v) if k.endswith("/max") else min(v)) for k, v in metrics.items()
                if v and k.endswith(("/max", "/min"))}
        merged: dict[str, float] = {}
        for ranks in gather_object([mine]):
            for k, v in ranks.items():
                merged[k] = v if k not in merged else (max(merged[k], v) if k.endswith("/max") else min(merged[k], v))
        for k, v in merged.items():
            metrics[k] = [v]

    def _monitor_parity(self, old: Any, sampled: Any, mask: Any, kinds: list[str], staleness: list[int]) -> None:
        """Log `parity/<kind>/max` (trainer vs sampler on the same weights: the rows of staleness 0)
        and warn once per kind when the gap exceeds `parity_bound`."""
        fresh = [i for i, s in enumerate(staleness) if s == 0]
        if old is None or sampled is None or not fresh:
            return
        if len(fresh) < len(kinds):
            old, sampled, mask, kinds = old[fresh], sampled[fresh], mask[fresh], [kinds[i] for i in fresh]
        for kind, gap in parity_gaps(old, sampled, mask, kinds).items():
            self._metrics["train"][f"parity/{kind}/max"].append(gap)
            if kind != "all" and gap > self.parity_bound and kind not in self.parity_warned:
                self.parity_warned.add(kind)
                print(f"[grpo] parity: {kind} prompts, trainer and sampler log-probs differ by up to {gap:.2e} per "
                      f"token (bound {self.parity_bound:.0e}); TRL's importance-sampling correction uses both "
                      "(README, model families)", flush=True)

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int,
                                           batch_size: int | None = None, compute_entropy: bool = False,
                                           compute_aux_loss: bool = False, **trl_media: Any) -> Any:
        """TRL's per-token log-probs (and entropies, aux loss) of the completions, computed the way
        TRL does (its fused LM head, chunks of `batch_size` rows), with the media of the rows
        (`self._active_media`) turned into forward arguments by `forward_media`. TRL's own media
        arguments are empty: it never sees the media columns."""
        import torch

        media = self._active_media
        if media is None or len(media) != input_ids.size(0):
            raise RuntimeError(f"no media for the {input_ids.size(0)} rows of this forward")
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[start : start + batch_size], attention_mask[start : start + batch_size]
            rows = media[start : start + batch_size]
            inputs = {"input_ids": ids, "attention_mask": mask,
                      **forward_media(self.processing_class, [m[0] for m in rows], [m[1] for m in rows], ids)}
            if compute_aux_loss:
                inputs["output_router_logits"] = True
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100  # only completion tokens are scored
            with self.accelerator.autocast(), banned_logit_bias(self.accelerator.unwrap_model(model), self.banned_token_ids):
                out = model(**inputs, labels=labels, fused_lm_head=True)
            logps.append(out.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(out.entropy[:, -logits_to_keep:])
            if compute_aux_loss:
                aux.append(out.aux_loss)
        logps = torch.cat(logps, dim=0)
        if torch.is_grad_enabled() and self._pending_old is not None:
            # The training forward of a micro-batch whose old log-probs are the sampler's: fill the
            # tokens it could not score with ours (ratio 1, as TRL's correction does) and keep ours
            # for the gap metrics.
            self._train_logps = logps.detach()
            old, self._pending_old = self._pending_old, None
            fill_unscored(old, self._train_logps)
        return (logps, torch.cat(entropies, dim=0) if compute_entropy else None,
                torch.stack(aux).mean() if compute_aux_loss else None)

    def _buckets(self, inputs: Any) -> list[list[int]] | None:
        """Row buckets of the length-bucketed loss, or None for one batch (`rl.length_buckets`)."""
        if self.length_buckets < 2 or self.loss_type != "dapo" or self.top_entropy_quantile < 1.0:
            return None
        if self.accelerator.num_processes > 1:
            # TRL's loss all-gathers per-row clip statistics on every call: in a trainer group each
            # call must carry the same number of rows on every rank, which buckets cannot promise
            # (a mismatch aborted gloo on the demo's GRPO). One batch per rank.
            return None
        from rl.length_buckets import last_filled, plan_buckets

        buckets = plan_buckets(last_filled(inputs["prompt_mask"].flip(1)).tolist(),
                               last_filled(inputs["completion_mask"]).tolist(), self.length_buckets,
                               self.bucket_overhead)
        return buckets if len(buckets) > 1 else None

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        buckets = self._buckets(inputs) if model.training and not return_outputs else None
        if buckets is None:
            loss = self._policy_loss(model, inputs, return_outputs, num_items_in_batch)
        else:  # exact for dapo: every bucket divides by the whole batch's token count
            from rl.length_buckets import take_rows

            metrics = self._metrics["train"]
            before = {k: len(v) for k, v in metrics.items()}
            loss = sum(self._policy_loss(model, take_rows(inputs, rows), False, num_items_in_batch) for rows in buckets)
            merge_extremes(metrics, before)
            metrics["length_buckets"].append(float(len(buckets)))
        if self.anchor is None or not model.training:
            return loss
        nll = self.anchor.loss(model, self.state.global_step)  # after the GRPO forward: not a policy forward
        self._metrics["train"]["sft_anchor/nll"].append(float(nll.detach()))
        return add_anchor(loss, nll, self.anchor.coef)

    def _policy_loss(self, model: Any, inputs: Any, return_outputs: bool, num_items_in_batch: Any) -> Any:
        """TRL's GRPO loss of `inputs`, with the media of its rows and, under sampler old
        log-probs, the unscored tokens filled and the gap logged from the same forward."""
        self._active_media = inputs.get("media")
        sampler_old = self.old_logps == "sampler" and model.training and "sampling_per_token_logps" in inputs
        self._pending_old = inputs.get("old_per_token_logps") if sampler_old else None
        self._train_logps = None
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._pending_old = None
        if sampler_old and self._train_logps is not None:
            self._log_sampler_gap(inputs)
        return loss

    def _log_sampler_gap(self, inputs: Any) -> None:
        """Under sampler old log-probs: the trainer-vs-sampler metrics and the parity monitor, from
        the training forward's log-probs (synchronous: the weights just synced, one optimizer step
        per generation; asynchronous: the ratio to the behaviour policy, parity on fresh rows), so
        the gap costs no forward pass of its own."""
        sampled, mask = inputs["sampling_per_token_logps"], inputs["completion_mask"]
        for key, value in sampler_gap_stats(self._train_logps, sampled, mask).items():
            self._metrics["train"][key].append(value)
        kinds = [kind_of_media(images, videos) for images, videos in inputs["media"]]
        self._monitor_parity(self._train_logps, sampled, mask, kinds, inputs["staleness"])

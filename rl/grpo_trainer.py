"""TRL glue for hybrid GRPO: GRPOTrainer whose generation is our rollout pool.

`HybridGRPOTrainer` subclasses TRL's `GRPOTrainer` (TRL computes advantages, the loss and the
optimizer step) and changes three things:
- before generating, it pushes the trainable weights to the rollout actors when the optimizer
  has stepped since the last push (TRL's own `vllm_generation.sync_weights()` hook, pointed at
  the pool), so every rollout comes from the current policy;
- `GroupSampler` decides the prompt groups actually trained on (per-prompt modes, rewards, std
  filter and refill); TRL then runs on exactly those rows, so its images and re-templated
  prompts match the rollouts; the `rollout_func` returns the cached ids and sampler log-probs;
- TRL's vLLM importance-sampling path is enabled on our sampler log-probs, which also logs the
  trainer-vs-sampler log-prob gap (`sampling/sampling_logp_difference/*`): the stale-weight alarm.
Rewards are computed once, by the sampler (which sees the raw text with think tags; TRL's decoded
completions drop special tokens), and reach TRL through the `precomputed_reward` function.
"""

from __future__ import annotations

from typing import Any

from trl import GRPOTrainer

from rl.grpo_sampling import Group, GroupSampler
from rl.sft_anchor import add_anchor


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
        stats = self.pool.sync_from_model(self.trainer.model)
        self.history.append(stats)
        self.trainer._metrics["train"]["time/sync_s"].append(stats.seconds)


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


def check_prompt_alignment(processor: Any, groups: list[Group], chat_template_kwargs: dict[str, Any]) -> None:
    """Guard against TRL's VLM re-templating: for every group, the prompt ids the actors sampled
    from must equal the processor's ids of the same prompt in the group's mode, and TRL's own
    re-templated prompt (global `chat_template_kwargs`, no per-sample mode) must carry the same
    image tokens, so the pixel values TRL computes line up with our prompt ids. Raises on a
    mismatch instead of training on misaligned image features."""
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    from policies.chat import encode_prompt
    from policies.tokens import ImageTokenLayout

    image_id = ImageTokenLayout.from_processor(processor).image_token_id
    for g in groups:
        images = [g.row["image"]]
        ours = encode_prompt(processor, list(g.row["prompt"]), images, g.mode)
        if ours != list(g.rollout.prompt_ids):
            raise RuntimeError(f"prompt {g.row['id']} ({g.mode}): actor prompt ids differ from the trainer's tokenization")
        msgs = prepare_multimodal_messages(list(g.row["prompt"]), images=images)
        text = apply_chat_template({"prompt": msgs}, processor, **chat_template_kwargs)["prompt"]
        trl_ids = processor(text=[text], images=[images])["input_ids"][0]
        if sum(t == image_id for t in trl_ids) != sum(t == image_id for t in ours):
            raise RuntimeError(f"prompt {g.row['id']} ({g.mode}): TRL's re-templated prompt has other image tokens")


class HybridGRPOTrainer(GRPOTrainer):
    def __init__(self, *args: Any, sampler: GroupSampler, pool: Any, anchor: Any = None, **kwargs: Any):
        self.sampler = sampler
        self.anchor = anchor  # rl.sft_anchor.SFTAnchor or None
        self._cached: dict[str, list[Any]] | None = None
        self.last_groups: list[Group] = []
        self._alignment_checked = False
        super().__init__(*args, rollout_func=self._rollout, **kwargs)
        # Route TRL's vLLM-only paths (weight-sync hook, importance-sampling correction and its
        # sampler-gap metrics) to the pool; "server" keeps TRL away from its colocated engine.
        self.use_vllm = True
        self.vllm_mode = "server"
        self.vllm_generation = PoolWeightSync(self, pool)
        self._last_loaded_step = -1

    def _rollout(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        if self._cached is None or len(self._cached["prompt_ids"]) != len(prompts):
            raise RuntimeError("rollout_func called without a sampled batch of the right size")
        out, self._cached = self._cached, None
        return out

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if self.model.training and self.state.global_step != self._last_loaded_step:
            self.vllm_generation.sync_weights()
            self._last_loaded_step = self.state.global_step
        G = self.num_generations
        rows = [inputs[i] for i in range(0, len(inputs), G)]
        groups, stats = self.sampler.sample(rows)
        if not self._alignment_checked:  # once per run: cheap, and catches template drift early
            check_prompt_alignment(self.processing_class, groups, self.chat_template_kwargs or {})
            self._alignment_checked = True
        self.last_groups = groups
        for key, value in stats.flat().items():
            self._metrics["train"][key].append(float(value))
        self._cached = groups_to_rollout_output(groups)
        # One dict per completion: TRL writes each completion's extra fields into its input row.
        final_inputs = [dict(g.row) for g in groups for _ in range(G)]
        return super()._generate_and_score_completions(final_inputs)

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.anchor is None or not model.training:
            return loss
        nll = self.anchor.loss(model, self.state.global_step)
        self._metrics["train"]["sft_anchor/nll"].append(float(nll.detach()))
        return add_anchor(loss, nll, self.anchor.coef)

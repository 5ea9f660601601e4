"""The real engine: one `vllm.LLM` in the calling process (a Ray actor in production).

Implements `rollouts.protocol.Engine` for every family the policy side knows (`policies.families`):
- `generate`: renders each request (images and videos) in its own thinking mode with the policy's chat template,
  samples `n` completions with per-mode token caps and stop rules, returns sampler log-probs
  (vLLM `processed_logprobs`, i.e. after temperature, as TRL's importance sampling expects);
- `score`: teacher-forced prompt log-probs of fixed sequences (RLPR, yes/no labels); the
  trainer's expanded media tokens are collapsed back to placeholders (`policies.tokens`);
- `update_weights` / `receive_bucket`: in-place `reload_weights` with Hugging Face names, then
  the prefix, multimodal and encoder caches are reset (a stale encoder cache fails the next
  request with an image already seen);
- `health`: version and liveness.
A request that cannot be served (prompt over the context, image the processor rejects) gets
`Rollout.error` and leaves the rest of the batch alone.
"""

from __future__ import annotations

import os
import time
from typing import Any

from policies.chat import render_prompt
from rollouts.config import RolloutConfig
from rollouts.types import Completion, Rollout, RolloutRequest, ScoreRequest, ScoreResult, WeightBucket


class VLLMEngine:
    def __init__(self, model_path: str, cfg: RolloutConfig, name: str = "engine-0", seed: int | None = None):
        # In-process engine: ~7 s start instead of ~50 s, and reload_weights can reach the model.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(cfg.kv_cache_gib))))
        from vllm import LLM

        from policies.families import device_normalize_ok, processor_kwargs, sampler_dtype, supports_video
        from policies.loading import load_processor
        from policies.tokens import BANNED_LOGIT_BIAS, banned_media_tokens

        self.cfg = cfg
        self.name = name
        self.model_path = model_path
        self.version = 0
        self._staged: list[tuple[str, Any]] = []
        self._staged_version: int | None = None
        self.last_apply_s = 0.0
        self.processor = load_processor(model_path)
        self.video = supports_video(self.processor, model_path) and cfg.max_videos_per_prompt > 0
        self.dtype = sampler_dtype(model_path, cfg.dtype, on_gpu=cfg.num_gpus_per_actor > 0)
        kwargs: dict[str, Any] = {}
        if processor_kwargs(model_path):
            kwargs["mm_processor_kwargs"] = processor_kwargs(model_path)
        limits = {"image": cfg.max_images_per_prompt}
        if self.video:
            limits["video"] = cfg.max_videos_per_prompt
            if not device_normalize_ok(self.processor):  # the processor normalises each kind itself
                kwargs["mm_device_do_normalize"] = False
        if cfg.num_gpus_per_actor > 0:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        if cfg.sync.transport == "nccl":
            from vllm.config import WeightTransferConfig

            kwargs["weight_transfer_config"] = WeightTransferConfig(backend="nccl")
        self.llm = LLM(
            model=model_path,
            dtype=self.dtype,
            max_model_len=cfg.max_model_len,
            seed=cfg.seed if seed is None else seed,
            enforce_eager=cfg.enforce_eager,
            tensor_parallel_size=cfg.tensor_parallel_size,
            limit_mm_per_prompt=limits,
            logprobs_mode="processed_logprobs",
            **kwargs,
        )
        self.eos_text = self.processor.tokenizer.eos_token or ""
        # Never sample media markup (see policies.tokens.banned_media_tokens).
        self.banned = {t: BANNED_LOGIT_BIAS for t in banned_media_tokens(self.processor, self.video)}

    # ----------------------------------------------------------------- generation
    def _sampling(self, req: RolloutRequest):
        from vllm import SamplingParams

        sp = req.sampling
        return SamplingParams(
            n=req.n,
            temperature=sp.temperature,
            top_p=sp.top_p,
            top_k=sp.top_k if sp.top_k > 0 else -1,
            max_tokens=sp.max_tokens or self.cfg.max_tokens[req.mode],
            seed=sp.seed if self.cfg.per_request_seed else None,
            stop=list(sp.stop) + list(self.cfg.stop.get(req.mode, [])),
            logprobs=0 if sp.logprobs else None,
            skip_special_tokens=False,  # keep <think>/</think> in the text
            logit_bias=self.banned,
        )

    def _prepare(self, req: RolloutRequest) -> tuple[dict[str, Any] | None, str, str | None]:
        """Render and check one request; returns (vLLM prompt, prompt text, error)."""
        from policies.media import processor_inputs, vllm_media

        if req.videos and not self.video:
            return None, "", (f"request {req.request_id}: has {len(req.videos)} video(s) but this engine takes none "
                              "(the family has no video input, or rollout.max_videos_per_prompt is 0)")
        try:
            text = render_prompt(self.processor, req.messages, req.mode, len(req.images), len(req.videos))
            ids = self.processor(text=[text], **processor_inputs([req.images], [req.videos]))["input_ids"][0]
        except Exception as exc:
            return None, "", f"request {req.request_id}: cannot process prompt/media ({type(exc).__name__}: {exc})"
        budget = self.cfg.max_model_len - len(ids)
        if budget < 1:
            return None, text, (
                f"request {req.request_id}: prompt is {len(ids)} tokens, over the context "
                f"(rollout.max_model_len={self.cfg.max_model_len})"
            )
        prompt: dict[str, Any] = {"prompt": text}
        media = vllm_media(req.images, req.videos)
        if media:
            prompt["multi_modal_data"] = media
        return prompt, text, None

    def _to_rollout(self, req: RolloutRequest, text: str, out: Any, version: int, dt: float) -> Rollout:
        comps = []
        for c in out.outputs:
            lps = [d[t].logprob for d, t in zip(c.logprobs or [], c.token_ids, strict=False)]
            body = c.text[: -len(self.eos_text)] if self.eos_text and c.text.endswith(self.eos_text) else c.text
            comps.append(Completion(body, list(c.token_ids), lps, c.finish_reason or "stop"))
        return Rollout(req.request_id, req.mode, text, list(out.prompt_token_ids), comps, version, self.name, None, {"generate_s": dt})

    def generate(self, requests: list[RolloutRequest]) -> list[Rollout]:
        if self._staged_version is not None:
            raise RuntimeError(f"{self.name}: a weight update to v{self._staged_version} is half-applied")
        version = self.version
        results: dict[int, Rollout] = {}
        todo = []
        for i, req in enumerate(requests):
            prompt, text, err = self._prepare(req)
            if err:
                results[i] = Rollout(req.request_id, req.mode, text, [], [], version, self.name, err)
            else:
                todo.append((i, req, prompt, text))
        t0 = time.perf_counter()
        try:
            outs = self.llm.generate([p for _, _, p, _ in todo], [self._sampling(r) for _, r, _, _ in todo], use_tqdm=False)
            pairs = list(zip(todo, outs, strict=False))
        except Exception:
            pairs = self._one_by_one(todo, results, version)
        dt = time.perf_counter() - t0
        for (i, req, _, text), out in pairs:
            results[i] = self._to_rollout(req, text, out, version, dt)
        return [results[i] for i in range(len(requests))]

    def _one_by_one(self, todo: list, results: dict[int, Rollout], version: int) -> list:
        """After a batch failure, isolate the request(s) that cannot be served."""
        pairs = []
        for item in todo:
            i, req, prompt, text = item
            try:
                pairs.append((item, self.llm.generate([prompt], [self._sampling(req)], use_tqdm=False)[0]))
            except Exception as exc:
                results[i] = Rollout(req.request_id, req.mode, text, [], [], version, self.name, f"{type(exc).__name__}: {exc}")
        return pairs

    # ----------------------------------------------------------------- scoring
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Prompt log-probs of `token_ids[target_start:]` (expanded ids in, collapsed to vLLM)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from policies.media import vllm_media
        from policies.tokens import MediaExpansion

        prompts, index, results = [], [], [None] * len(requests)
        expansions: dict[tuple[int, ...], MediaExpansion] = {}  # requests of one call share media objects
        for i, req in enumerate(requests):
            if req.temperature != 1.0:
                results[i] = ScoreResult([], self.version, "vLLM prompt log-probs are computed at temperature 1.0; "
                                         "set the scoring temperature to 1.0 or use a transformers scorer")
                continue
            key = tuple(id(m) for m in (*req.images, *req.videos))
            try:
                if key not in expansions:
                    expansions[key] = MediaExpansion.probe(self.processor, list(req.images), list(req.videos))
                collapsed = expansions[key].collapse(list(req.token_ids))
            except Exception as exc:
                results[i] = ScoreResult([], self.version, f"cannot collapse media tokens ({type(exc).__name__}: {exc})")
                continue
            media = vllm_media(req.images, req.videos)
            prompts.append(TokensPrompt(prompt_token_ids=collapsed, **({"multi_modal_data": media} if media else {})))
            index.append(i)
        if prompts:
            outs = self.llm.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0), use_tqdm=False)
            for i, out in zip(index, outs, strict=False):
                req = requests[i]
                if list(out.prompt_token_ids) != list(req.token_ids):
                    results[i] = ScoreResult([], self.version, "media expansion differs from the trainer's token ids")
                    continue
                lps = [out.prompt_logprobs[p][req.token_ids[p]].logprob for p in range(req.target_start, len(req.token_ids))]
                results[i] = ScoreResult(lps, self.version)
        return results  # type: ignore[return-value]

    # ----------------------------------------------------------------- weights
    def _apply(self, named: list[tuple[str, Any]]) -> None:
        t0 = time.perf_counter()
        worker = self.llm.llm_engine.model_executor.driver_worker.worker
        worker.reload_weights(weights_iterator=iter(named))
        self.llm.reset_prefix_cache()
        self.llm.reset_mm_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.last_apply_s = time.perf_counter() - t0  # engine side of a sync (reload + repack)

    def update_weights(self, named_tensors: list[tuple[str, Any]], version: int) -> int:
        self._apply(list(named_tensors))
        self.version = version
        return version

    def receive_bucket(self, bucket: WeightBucket) -> int:
        """Stage one bucket; the last bucket of a version applies them all and bumps the version."""
        if self._staged_version not in (None, bucket.version):
            self._staged = []  # an abandoned earlier sync: drop it
        self._staged_version = bucket.version
        self._staged.extend(zip(bucket.names, bucket.torch_tensors(), strict=False))
        if not bucket.last:
            return self.version
        staged, self._staged, self._staged_version = self._staged, [], None
        return self.update_weights(staged, bucket.version)

    def health(self) -> dict[str, Any]:
        return {"ok": True, "version": self.version, "name": self.name, "pid": os.getpid(), "last_apply_s": self.last_apply_s,
                "dtype": self.dtype, "video": self.video, "banned": sorted(self.banned)}

    # ----------------------------------------------------------------- NCCL (GPU) weight transfer
    # Called by rollouts.weight_sync.ActorSyncClient; the engine must have been built with
    # weight_transfer_config=WeightTransferConfig(backend="nccl") (rollout.sync.transport: nccl).
    def wt_init(self, init_info: dict[str, Any]) -> None:
        self.llm.collective_rpc("init_weight_transfer_engine", args=(init_info,))

    def wt_start(self) -> None:
        self.llm.collective_rpc("start_weight_update")

    def wt_update(self, update_info: dict[str, Any]) -> None:
        self.llm.collective_rpc("update_weights", args=(update_info,))

    def wt_finish(self, version: int) -> int:
        self.llm.collective_rpc("finish_weight_update")
        self.llm.reset_prefix_cache()
        self.llm.reset_mm_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.version = version
        return version

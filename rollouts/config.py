"""Configuration of the rollout side: engines, actors and placement, per-mode caps, weight sync."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rl.configlib import FieldError
from rollouts.scheduler import ScheduleConfig


@dataclass
class SyncConfig:
    """How trainer weights reach the rollout actors.

    `ray`: buckets of tensors through Ray's object store into vLLM's in-place `reload_weights`
    (CPU default). `nccl`: vLLM's native weight-transfer engine (GPU clusters). LoRA policies
    always sync merged weights (base + B·A·scale under the base names), so actors need no LoRA
    support and serve exactly the trained function.
    """

    transport: Literal["ray", "nccl"] = "ray"
    bucket_mb: float = 64.0
    nccl_port: int = 0  # 0: pick a free port on the trainer's node
    timeout_s: float = 600.0

    def validate(self) -> None:
        if self.bucket_mb <= 0:
            raise FieldError("bucket_mb", "must be positive")


@dataclass
class RolloutConfig:
    backend: Literal["vllm", "hf"] = "vllm"
    num_actors: int = 1
    num_cpus_per_actor: float = 1.0
    # Threads of each engine (OMP_NUM_THREADS); 0 = num_cpus_per_actor (Ray's own default). More
    # threads speed generation alone (bench: 965 -> 1,532 tok/s on `small` with 2); before actors
    # ran with OMP_WAIT_POLICY=PASSIVE (ray_utils.ACTOR_ENV), an idle 2-thread engine's spinning
    # threads starved the trainer on a shared node (demo GRPO 154 s -> 354 s, measured). The
    # default stays 1 until a pipeline run with 2 passive threads is measured.
    threads_per_actor: int = 0
    num_gpus_per_actor: float = 0.0
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5
    kv_cache_gib: float = 1.0  # VLLM_CPU_KVCACHE_SPACE on CPU machines
    max_model_len: int = 1024
    # float32 gives exact parity with an fp32 trainer; families that vLLM-cpu serves only in bf16
    # (MiniCPM-V 4.6) run in bf16 on CPU whatever is set here (`policies.families.sampler_dtype`).
    dtype: str = "float32"
    enforce_eager: bool = True
    max_images_per_prompt: int = 1
    # Videos per prompt the engines accept (0 = no video input; only for families that have one).
    # vLLM profiles memory for the largest allowed prompt at start, so keep both limits tight.
    max_videos_per_prompt: int = 0
    max_tokens: dict[str, int] = field(default_factory=lambda: {"deep": 96, "fast": 24})
    stop: dict[str, list[str]] = field(default_factory=lambda: {"deep": [], "fast": []})
    temperature: float = 1.0
    top_p: float = 1.0
    max_restarts: int = 2  # Ray restarts of a dead actor
    max_failures: int = 3  # actor deaths tolerated in one pool call before it raises
    seed: int = 0
    # Per-request seeds make vLLM-cpu sample each request with its own generator: 24 prompts x
    # n=8 did not finish in 5 minutes vs 1.8 s unseeded (measured). Off by default: runs are
    # reproducible through the engine seed and the fixed request order.
    per_request_seed: bool = False
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)

    def validate(self) -> None:
        if self.num_actors < 1:
            raise FieldError("num_actors", "must be at least 1")
        if set(self.max_tokens) != {"deep", "fast"} or min(self.max_tokens.values()) <= 0:
            raise FieldError("max_tokens", "must give positive caps for both 'deep' and 'fast'")
        if set(self.stop) - {"deep", "fast"}:
            raise FieldError("stop", "keys must be 'deep' and/or 'fast'")
        if self.tensor_parallel_size < 1:
            raise FieldError("tensor_parallel_size", "must be at least 1")
        if self.temperature < 0:
            raise FieldError("temperature", "must be >= 0")
        if self.max_images_per_prompt < 0 or self.max_videos_per_prompt < 0:
            raise FieldError("max_images_per_prompt" if self.max_images_per_prompt < 0 else "max_videos_per_prompt",
                             "must be >= 0")

"""The top-level run config: composes every component's dataclass config.

YAML files in `configs/` merge onto these defaults, then `key=value` overrides from the command
line (`rl.configlib.load`). TRL's own GRPOConfig/DPOConfig/SFTConfig stay the source of truth
for trainer knobs: each stage carries a `trl:` mapping passed through to them and checked
against their fields at start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.loading import PolicyConfig
from rewards.config import RewardConfig
from rewards.rlaifv.config import RLAIFVConfig
from rl.configlib import ConfigError, FieldError, load
from rl.data.config import DataConfig
from rl.evaluate import EvalConfig
from rl.stages.grpo import GRPOStageConfig
from rl.stages.warmup import WarmupConfig
from rollouts.config import RolloutConfig

STAGES = ("smoke", "warmup", "grpo", "rlaifv")


@dataclass
class RayConfig:
    address: str = ""  # "" = start a local cluster (or join RAY_ADDRESS under `ray job submit`)
    num_cpus: int = 0  # 0 = all cores of this machine
    trainer_in_actor: bool = True  # run the stages in a Ray actor (cluster placement of the trainer)
    # Per trainer process: the stage runner's actor when trainer_workers is 1, each Ray Train
    # worker when it is larger (the runner then only coordinates and holds no CPU or GPU).
    trainer_num_cpus: float = 1.0
    trainer_num_gpus: float = 0.0
    # Data-parallel trainer workers (`rl.trainer_group`, Ray Train): 1 = the trainer runs in the
    # stage runner's process (the default); N > 1 = warm-up, GRPO and DPO train on N workers
    # (gloo + DDP on CPU, NCCL + FSDP2/ZeRO-3 on GPU through the stages' `trl:` settings). Batch
    # sizes we name (warmup.batch_size, grpo.prompts_per_step) stay global and are split over the
    # workers; TRL's per_device_* fields stay per worker.
    trainer_workers: int = 1
    trainer_group_timeout_s: float = 1800.0  # torch process-group timeout of the workers
    # torch threads of the trainer (0 = Ray's default, one per `trainer_num_cpus`). On a small
    # node the stages without a rollout pool (warm-up SFT) would otherwise leave cores idle, and
    # the pool's engines sleep (OMP passive wait) while the trainer steps.
    trainer_threads: int = 0

    def validate(self) -> None:
        if self.trainer_threads < 0:
            raise FieldError("trainer_threads", f"must be >= 0 (0 = one per trainer CPU), got {self.trainer_threads}")
        if self.trainer_workers < 1:
            raise FieldError("trainer_workers", f"must be >= 1 (1 = train in the stage runner), got {self.trainer_workers}")
        if self.trainer_group_timeout_s <= 0:
            raise FieldError("trainer_group_timeout_s", f"must be > 0 seconds, got {self.trainer_group_timeout_s}")


@dataclass
class TrainConfig:
    output_dir: str = "runs/demo"
    seed: int = 0
    stages: list[str] = field(default_factory=lambda: ["smoke"])
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    rlaifv: RLAIFVConfig = field(default_factory=RLAIFVConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self) -> None:
        if not self.stages:
            raise FieldError("stages", f"name at least one stage of {list(STAGES)}")
        for i, stage in enumerate(self.stages):
            if stage not in STAGES:
                raise FieldError(f"stages[{i}]", f"unknown stage {stage!r}; known stages: {list(STAGES)}")
        if not self.output_dir:
            raise FieldError("output_dir", "must be a folder path")
        if self.ray.trainer_workers > 1:
            check_trainer_workers(self)


def check_trainer_workers(cfg: TrainConfig) -> None:
    """What `ray.trainer_workers > 1` needs of the other sections, named by key."""
    n = cfg.ray.trainer_workers
    splits = (("warmup", "warmup.batch_size", cfg.warmup.batch_size),
              ("grpo", "grpo.prompts_per_step", cfg.grpo.prompts_per_step))
    for stage, key, value in splits:
        if stage in cfg.stages and value % n:
            raise ConfigError(f"{key} is {value}, not a multiple of ray.trainer_workers={n}: it is the global batch, "
                              f"split evenly over the workers (whole prompt groups per worker for GRPO)")
    if "grpo" in cfg.stages and cfg.grpo.async_.enabled:
        raise ConfigError("grpo.async.enabled is not supported with ray.trainer_workers > 1 yet (its rollout thread "
                          "lives in one trainer process); set grpo.async.enabled=false or ray.trainer_workers=1")
    if any(s in cfg.stages for s in ("grpo", "rlaifv")) and cfg.rollout.backend != "vllm":
        raise ConfigError(f"ray.trainer_workers={n} needs rollout.backend: vllm (the workers share the rollout "
                          f"actors; the in-process '{cfg.rollout.backend}' engine lives in one process)")


def load_train_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    return load(TrainConfig, path, list(overrides))


def check_trl_kwargs(cls: type, kwargs: dict[str, Any], key: str) -> None:
    """Fail at start when a `trl:` passthrough names a field the TRL config does not have."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    for name in kwargs:
        if name not in known:
            raise ConfigError(f"unknown config key '{key}.{name}': {cls.__name__} has no field {name!r}")

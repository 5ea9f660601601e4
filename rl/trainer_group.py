"""Trainer groups: a stage's training step run on N data-parallel Ray Train workers.

`ray.trainer_workers: N` (N > 1) runs the warm-up SFT, the GRPO trainer and every RLAIF-V DPO
round on N workers formed by Ray Train V2 (`TorchTrainer`): Ray Train starts the processes,
places them (`trainer_num_cpus` / `trainer_num_gpus` per worker) and forms the torch process group
(gloo on CPU, NCCL on GPU); inside each worker our TRL trainer subclass runs unchanged and
accelerate picks the group up (DDP on CPU; FSDP2 or DeepSpeed ZeRO-3 on GPU from the stage's
`trl:` settings). The stage runner stays a single controller: it calls `run_group(fn, ...)`,
which blocks until the workers finish and returns what rank 0's `fn` returned.

What a worker function may rely on (`WorkerContext`): its rank and the world size, a barrier and a
broadcast from rank 0. What it must do: build its trainer with `use_cpu` on CPU (transformers only
then hands accelerate the process group; without it every worker silently trains its own copy),
call `check_distributed` once the trainer exists, and write files from rank 0 only.

A worker that dies ends the run: Ray Train is told not to restart the group (a restarted group
would resume from an in-memory state no worker has), and `run_group` raises `TrainerGroupError`
naming the stage, the ranks and their pids (`<output_dir>/workers/<stage>-rank<r>.json`), and
telling the user to re-run: the stage resumes from its last complete checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"


class TrainerGroupError(RuntimeError):
    """A trainer group failed: a worker died or raised; the message says which and what to do."""


@dataclass
class GroupSpec:
    """How the group is formed (from `ray.*`)."""

    num_workers: int
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    threads: int = 0  # torch threads per worker (0 = one per CPU of the worker)
    timeout_s: float = 1800.0  # process-group timeout (Ray Train's default)

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @classmethod
    def from_ray_config(cls, ray_cfg: Any) -> GroupSpec:
        return cls(ray_cfg.trainer_workers, ray_cfg.trainer_num_cpus, ray_cfg.trainer_num_gpus, ray_cfg.trainer_threads,
                   ray_cfg.trainer_group_timeout_s)


@dataclass
class WorkerContext:
    """What a worker function knows of its group."""

    rank: int
    world_size: int
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.distributed:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def check_distributed(trainer: Any, world_size: int, stage: str) -> None:
    """Fail when the trainer did not join the process group: accelerate then trains one copy per
    worker with no gradient all-reduce, and nothing else would say so."""
    got = int(trainer.accelerator.num_processes)
    if got != world_size:
        raise TrainerGroupError(
            f"{stage}: the trainer sees {got} process(es) but the group has {world_size} workers: accelerate did not "
            f"join the process group (on CPU the TRL config needs use_cpu: true; on GPU each worker needs a GPU, "
            f"ray.trainer_num_gpus >= 1); training would run {world_size} separate copies")


def param_checksums(model: Any) -> Any:
    """One float64 sum per parameter (a cheap fingerprint of the weights, in parameter order)."""
    import torch

    with torch.no_grad():
        return torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()


def diverged_params(checksums_RP: Any, names: list[str]) -> list[str]:
    """Names of the parameters whose fingerprint differs between ranks (`checksums_RP`: one row per
    rank); data-parallel training keeps them bitwise equal, so any difference is a bug."""
    first = checksums_RP[0]
    differs = (checksums_RP != first).any(dim=0)
    return [n for n, d in zip(names, differs.tolist(), strict=True) if d]


def make_rank_check(every: int = 1) -> Any:
    """A TrainerCallback that, every `every` optimizer steps, compares the weights' fingerprints
    across ranks and raises `TrainerGroupError` when they differ (`checks` counts the comparisons)."""
    from transformers import TrainerCallback

    class RankConsistency(TrainerCallback):
        def __init__(self) -> None:
            self.checks = 0

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
            import torch
            import torch.distributed as dist

            if model is None or not dist.is_initialized() or state.global_step % every:
                return control
            mine = param_checksums(model)
            rows = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
            dist.all_gather(rows, mine)
            bad = diverged_params(torch.stack(rows), [n for n, _ in model.named_parameters()])
            if bad:
                raise TrainerGroupError(f"after step {state.global_step} the ranks hold different weights in "
                                        f"{len(bad)} parameter(s), e.g. {bad[:3]}: the data-parallel update is broken")
            self.checks += 1
            return control

    return RankConsistency()


def worker_env(spec: GroupSpec) -> dict[str, str]:
    """Environment of a worker process, set before accelerate reads it."""
    env = {"TRL_EXPERIMENTAL_SILENCE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if not spec.use_gpu:
        env["ACCELERATE_USE_CPU"] = "1"  # accelerate's CPU path: DDP over gloo (DISTRIBUTED.md §4)
    return env


def _group_dir(out: Path, name: str) -> Path:
    return Path(out) / "ray_train" / name


def _entry(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: set up the process, run the stage's function, let rank 0
    write its result."""
    import ray.train
    import torch

    spec: GroupSpec = config["spec"]
    os.environ.update(worker_env(spec))
    if os.path.isdir(config["cwd"]):  # relative paths of the config mean what they mean to the runner
        os.chdir(config["cwd"])
    threads = spec.threads or max(1, int(spec.cpus_per_worker))
    torch.set_num_threads(threads)
    ctx = ray.train.get_context()
    worker = WorkerContext(ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank())
    out, name = Path(config["out"]), config["name"]
    workers = out / "workers"
    workers.mkdir(parents=True, exist_ok=True)
    (workers / f"{name}-rank{worker.rank}.json").write_text(json.dumps(
        {"rank": worker.rank, "world_size": worker.world_size, "pid": os.getpid(), "started": time.time()}))
    from rl.interrupt import RunInterrupted

    try:
        result = config["fn"](worker, *config["args"])
    except RunInterrupted as exc:  # a requested stop, not a failure: the runner re-raises it
        result = {"interrupted": str(exc)}
    if worker.is_main:
        path = _group_dir(out, name) / RESULT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, default=float))
        tmp.replace(path)
    worker.barrier()  # no rank leaves while another may still need a collective


def worker_pids(out: Path, name: str) -> dict[int, int]:
    """rank -> pid of the workers of the last group `name` started in `out`."""
    pids = {}
    for path in sorted((Path(out) / "workers").glob(f"{name}-rank*.json")):
        info = json.loads(path.read_text())
        pids[int(info["rank"])] = int(info["pid"])
    return pids


def run_group(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...], spec: GroupSpec, out: str | Path,
              name: str) -> dict[str, Any]:
    """Run `fn(worker, *args)` on `spec.num_workers` Ray Train workers; rank 0's return value.

    `fn` must be a module-level function (workers import it) and `args` picklable. Raises
    `TrainerGroupError` when a worker dies or raises.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out = Path(out).resolve()
    result_path = _group_dir(out, name) / RESULT_FILE
    result_path.unlink(missing_ok=True)
    for stale in (out / "workers").glob(f"{name}-rank*.json"):
        stale.unlink()
    resources = {"CPU": spec.cpus_per_worker} | ({"GPU": spec.gpus_per_worker} if spec.use_gpu else {})
    trainer = TorchTrainer(
        _entry,
        train_loop_config={"fn": fn, "args": args, "spec": spec, "out": str(out), "name": name, "cwd": os.getcwd()},
        scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(timeout_s=int(spec.timeout_s)),
        # No automatic restart: the group's state lives in the workers' memory; the stage resumes
        # from its checkpoint when the user re-runs.
        run_config=RunConfig(name=name, storage_path=str(out / "ray_train"), failure_config=FailureConfig(max_failures=0)),
    )
    t0 = time.perf_counter()
    try:
        trainer.fit()
    except Exception as exc:  # Ray Train wraps worker deaths and worker exceptions
        raise TrainerGroupError(failure_message(name, out, exc)) from exc
    if not result_path.exists():
        raise TrainerGroupError(f"{name}: the trainer group ended without rank 0's result ({result_path}); "
                                "re-run the same command to resume from the last complete checkpoint")
    result = json.loads(result_path.read_text())
    if "interrupted" in result:
        from rl.interrupt import RunInterrupted

        raise RunInterrupted(result["interrupted"])
    result.setdefault("group", {}).update(workers=spec.num_workers, seconds=time.perf_counter() - t0)
    return result


def rank_errors(text: str) -> dict[int, str]:
    """Per rank, one line on what ended it, from Ray Train's worker-group error text (sections
    `[Rank N Error Snippet]:`): a dead process ("died: <Ray's exit detail>") or the last exception
    line of the traceback the rank raised."""
    parts = re.split(r"\[Rank (\d+) Error Snippet\]:", text)
    out: dict[int, str] = {}
    for rank, body in zip(parts[1::2], parts[2::2], strict=True):
        pid = re.search(r"\bpid[=:]\s*(\d+)", body)
        if "actor died" in body or "health check failed" in body:
            detail = re.search(r"Worker exit detail: ([^.]*)", body)
            out[int(rank)] = (f"died (pid {pid.group(1)})" if pid else "died") + (f": {detail.group(1)}" if detail else "")
            continue
        lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
        raised = next((ln for ln in reversed(lines) if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln)),
                      lines[-1] if lines else "failed")
        out[int(rank)] = raised[:300]
    return out


def failure_message(name: str, out: Path, exc: BaseException) -> str:
    """What went wrong in group `name`, in one line: each failed rank's reason (a dead worker is
    named first: the others then only lost their peer) and how to go on."""
    errors = rank_errors(str(exc))
    dead = [r for r, why in errors.items() if why.startswith("died")]
    order = dead + [r for r in errors if r not in dead]
    what = "; ".join(f"rank {r} {errors[r]}" if errors[r].startswith("died") else f"rank {r}: {errors[r]}"
                     for r in order) or str(exc).strip().splitlines()[-1][:300]
    return (f"trainer group '{name}' ({len(worker_pids(out, name)) or '?'} workers) failed: {what}. Re-run the same "
            f"command to resume from the last complete checkpoint (worker pids: {out / 'workers'})")


# ---------------------------------------------------------------------------- stages on a group
def group_spec(ctx: Any) -> GroupSpec | None:
    """The trainer group of the run, or None when the stage trains in the runner's process."""
    ray_cfg = getattr(getattr(ctx, "cfg", None), "ray", None)
    if ray_cfg is None or getattr(ray_cfg, "trainer_workers", 1) <= 1:
        return None
    return GroupSpec.from_ray_config(ray_cfg)


def ctx_payload(ctx: Any) -> dict[str, Any]:
    """What a worker needs of the run context to rebuild it (`worker_ctx`): config, folder, data,
    policy path and the rollout pool (its actor handles travel; rank 0 samples and pushes)."""
    from rl.configlib import to_dict

    return {"cfg": to_dict(ctx.cfg), "out": str(Path(ctx.out).resolve()), "data": ctx.data,
            "model_path": absolute_if_local(ctx.model_path), "engine": ctx.engine}


def absolute_if_local(path: str) -> str:
    """`path` made absolute when it names something on this machine (a hub name stays as it is):
    Ray Train workers do not start in the runner's working directory."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def worker_ctx(payload: dict[str, Any]) -> Any:
    """The run context inside a worker (the runner evaluates; workers never do)."""
    from rl.config import TrainConfig
    from rl.configlib import from_dict
    from rl.context import RunContext

    return RunContext(cfg=from_dict(TrainConfig, payload["cfg"]), out=Path(payload["out"]), data=payload["data"],
                      model_path=payload["model_path"], engine=payload["engine"], runner_evaluates=True,
                      engine_path=payload["model_path"])


def group_callbacks(worker: WorkerContext | None) -> list[Any]:
    """Callbacks every trainer of a group carries: the cross-rank weight check after each step."""
    return [make_rank_check()] if worker is not None and worker.distributed else []


def save_trained(trainer: Any, model: Any, processor: Any, folder: str | Path, worker: WorkerContext | None) -> None:
    """Save a trained policy in HF format, from any rank layout: in one process or under DDP rank 0
    writes `model` (its full weights); under FSDP2 / ZeRO-3 every rank takes part in the trainer's
    own gathering save (`Trainer.save_model`) and rank 0 writes. The processor is written by rank 0."""
    from rollouts.sharded_sync import PLAIN, gather_kind

    main = worker is None or worker.is_main
    if worker is not None and worker.distributed and gather_kind(model) != PLAIN:
        trainer.save_model(str(folder))
    elif main:
        model.save_pretrained(folder)
    if main:
        processor.save_pretrained(folder)
    if worker is not None:
        worker.barrier()  # the policy is on disk before any rank reads or returns it


"""The stage runner: runs the configured stages in order, inside a Ray actor (or in-process).

Per stage: (re)start the rollout pool on the current policy when the stage needs it, run the
stage, evaluate the resulting policy on held-out data through the pool (greedy, both modes),
and write a completion marker with the stage's metrics and the hash of the config that produced
them (`rl.provenance`). Re-running with the same output folder
skips completed stages (their metrics and policy are read back) and resumes an interrupted
GRPO stage from its last complete checkpoint.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any

from rl.config import TrainConfig
from rl.configlib import from_dict
from rl.context import RunContext
from rl.evaluate import evaluate
from rl.interrupt import check_stop

POOL_STAGES = ("grpo", "rlaifv")  # stages that sample through the rollout pool


def stage_marker(out: Path, stage: str) -> Path:
    return out / "stages" / f"{stage}.json"


class StageRunner:
    """Owns the run: data, policy path, rollout pool; `run()` returns the metrics of every stage."""

    def __init__(self, cfg_dict: dict[str, Any], data: Any, model_path: str):
        self.cfg: TrainConfig = from_dict(TrainConfig, cfg_dict)
        self.ctx = RunContext(cfg=self.cfg, out=Path(self.cfg.output_dir), data=data, model_path=model_path,
                              runner_evaluates=True)
        if self.cfg.ray.trainer_threads:
            import torch

            torch.set_num_threads(self.cfg.ray.trainer_threads)

    def _ensure_pool(self) -> None:
        """A pool on the current policy; restarted when a stage replaced the whole model."""
        if self.ctx.engine is not None and self.ctx.engine_path == self.ctx.model_path:
            return
        if self.ctx.engine is not None:
            self.ctx.engine.shutdown()
        if self.cfg.rollout.backend == "hf":
            from policies.hf_engine import HFEngine
            from policies.loading import load_model, load_processor

            model = load_model(self.ctx.model_path, self.cfg.policy).eval()
            self.ctx.engine = HFEngine(model, load_processor(self.ctx.model_path), dict(self.cfg.rollout.max_tokens))
        else:
            from rollouts.pool import RolloutPool

            with self.ctx.timed("pool/start"):
                self.ctx.engine = RolloutPool(self.ctx.model_path, self.cfg.rollout)
        self.ctx.engine_path = self.ctx.model_path

    def _evaluate(self, stage: str) -> dict[str, Any]:
        self._ensure_pool()
        with self.ctx.timed(f"{stage}/eval"):
            return evaluate(self.ctx.engine, self.ctx.data.eval, self.cfg.eval)

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        ctx = self.ctx
        for stage in self.cfg.stages:
            check_stop(ctx.out, f"before stage {stage}")
            marker = stage_marker(ctx.out, stage)
            if marker.exists():
                done = json.loads(marker.read_text())
                ctx.metrics[stage] = done["metrics"]
                ctx.model_path = done["model_path"]
                print(f"[{stage}] already complete in {ctx.out}; skipped", flush=True)
                continue
            if stage in POOL_STAGES:
                self._ensure_pool()
            module = importlib.import_module(f"rl.stages.{stage}")
            with ctx.timed(stage):
                metrics = module.run(ctx)
            if stage != "smoke":
                metrics["eval"] = self._evaluate(stage)
            ctx.metrics[stage] = metrics
            marker.parent.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"metrics": metrics, "model_path": ctx.model_path,
                                       "config_hash": ctx.config_hash}, default=float))
            tmp.replace(marker)  # atomic: a half-written marker is never read
            ctx.save_metrics()
        ctx.metrics["wall_seconds"] = ctx.metrics.get("wall_seconds", 0.0) + time.perf_counter() - t0
        ctx.metrics["stage_seconds"] = dict(ctx.timings)
        return ctx.metrics

    def shutdown(self) -> None:
        if self.ctx.engine is not None and hasattr(self.ctx.engine, "shutdown"):
            self.ctx.engine.shutdown()

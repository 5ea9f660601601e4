"""Entry point: `python -m rl.train --config configs/X.yaml [key=value ...]`.

The same command runs under `ray job submit --address http://127.0.0.1:8265 --working-dir . --
python -m rl.train ...`. A thin single controller: load and check the config, data and model
path (all before any actor starts), run the configured stages in order, write the report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rl.config import TrainConfig, load_train_config
from rl.configlib import ConfigError, to_dict
from rl.context import RunContext
from rl.runner import POOL_STAGES


def preflight(cfg: TrainConfig) -> RunContext:
    """Everything that can fail on bad input, done before any Ray actor or engine starts."""
    from policies.loading import resolve_model_path
    from rl.data.loader import load_data

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg.data)
    model_path = resolve_model_path(cfg.policy, out)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    return RunContext(cfg=cfg, out=out, data=data, model_path=model_path)


def needs_ray(cfg: TrainConfig) -> bool:
    return cfg.ray.trainer_in_actor or (cfg.rollout.backend == "vllm" and any(s in POOL_STAGES for s in cfg.stages))


def run(ctx: RunContext) -> dict:
    """Run the stages (in a Ray actor unless `ray.trainer_in_actor: false`), then write the report."""
    from rl.report import write_report
    from rl.runner import StageRunner

    cfg = ctx.cfg
    if needs_ray(cfg):
        from rollouts.ray_utils import init_ray

        init_ray(cfg.ray.address or None, cfg.ray.num_cpus or None, quiet=False)
    if cfg.ray.trainer_in_actor:
        import ray

        actor = ray.remote(StageRunner).options(num_cpus=cfg.ray.trainer_num_cpus, num_gpus=cfg.ray.trainer_num_gpus,
                                                runtime_env={"env_vars": {"TRL_EXPERIMENTAL_SILENCE": "1"}})
        runner = actor.remote(to_dict(cfg), ctx.data, ctx.model_path)
        try:
            ctx.metrics = ray.get(runner.run.remote())
        finally:
            ray.get(runner.shutdown.remote())
    else:
        runner = StageRunner(to_dict(cfg), ctx.data, ctx.model_path)
        try:
            ctx.metrics = runner.run()
        finally:
            runner.shutdown()
    path = write_report(ctx.out, ctx.metrics)
    print(f"report: {path}")
    return ctx.metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (configs/demo.yaml, configs/smoke.yaml, ...)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. grpo.steps=10")
    args = parser.parse_args(argv)
    try:
        cfg = load_train_config(args.config, args.overrides)
        ctx = preflight(cfg)
    except (ConfigError, ValueError) as exc:  # DataError and PolicyError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())

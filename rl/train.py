"""Entry point: `python -m rl.train --config configs/X.yaml [key=value ...]`.

The same command runs under `ray job submit --address http://127.0.0.1:8265 --working-dir . --
python -m rl.train ...`. A thin single controller: load and check the config, data and model
path (all before any actor starts), run the configured stages in order, write the report.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from rl.config import TrainConfig, load_train_config
from rl.configlib import ConfigError, to_dict
from rl.context import RunContext
from rl.runner import POOL_STAGES


def preflight(cfg: TrainConfig, resume_with_changes: bool = False) -> RunContext:
    """Everything that can fail on bad input, done before any Ray actor or engine starts: the run
    folder's provenance first (a folder with results of another config is refused), then data and
    model; the folder's record is written only when all passed."""
    from policies.loading import resolve_model_path
    from rl.data.loader import load_data
    from rl.provenance import check_run_folder, record_invocation

    out = Path(cfg.output_dir)
    resolved = to_dict(cfg)
    check = check_run_folder(out, resolved, allow_changes=resume_with_changes)
    if check.changed:
        print(f"[provenance] resuming {out} with changed keys: {', '.join(check.changed)}", flush=True)
    # A named model is checked (policies.preflight) before the folder and the data are made, so it
    # fails in a second; the embedded tiny model is built only once the data has passed.
    model_path = resolve_model_path(cfg.policy, out) if cfg.policy.name_or_path else None
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg.data)
    model_path = model_path or resolve_model_path(cfg.policy, out)
    check_media(cfg, data, model_path)
    if "rlaifv" in cfg.stages:
        check_rlaifv_models(cfg)
    record_invocation(out, resolved, check)
    return RunContext(cfg=cfg, out=out, data=data, model_path=model_path)


def check_media(cfg: TrainConfig, data: Any, model_path: str) -> None:
    """The rows' images and videos against what the policy and the rollout engines take: a video
    for a family without a video input, or more media in one row than `rollout.max_*_per_prompt`
    lets vLLM accept, would otherwise fail at the first batch that holds one."""
    from policies.families import supports_video
    from policies.loading import load_processor
    from rl.data.rows import media_counts

    splits = [("train", data.train), ("eval", data.eval)] + ([("rl", data.rl)] if data.rl is not None else [])
    counts = {name: media_counts(split) for name, split in splits}
    images, videos = max(c[0] for c in counts.values()), max(c[1] for c in counts.values())
    where = {kind: [n for n, c in counts.items() if c[i]] for i, kind in enumerate(("images", "videos"))}
    if videos and not supports_video(load_processor(model_path, cfg.policy.trust_remote_code), model_path):
        hint = "set data.shapes.motion_share: 0" if cfg.data.source == "shapes" else "drop the video column (data.columns.video)"
        raise ConfigError(f"data: the {', '.join(where['videos'])} rows carry videos but the policy ({model_path}) "
                          f"has no video input; {hint}, or train a family that takes video")
    if not any(s in POOL_STAGES for s in cfg.stages) or cfg.rollout.backend != "vllm":
        return
    for kind, most, key in (("images", images, "max_images_per_prompt"), ("videos", videos, "max_videos_per_prompt")):
        if most > getattr(cfg.rollout, key):
            raise ConfigError(f"rollout.{key} is {getattr(cfg.rollout, key)} but {', '.join(where[kind])} rows carry up "
                              f"to {most} {kind}: set rollout.{key}={most}")


def check_rlaifv_models(cfg: TrainConfig) -> None:
    """The RLAIF-V labeler and claim splitter, when they are models (`model:<path-or-name>`)."""
    from policies.preflight import check_loadable
    from rewards.rlaifv.config import parse_labeler_spec, parse_splitter_spec

    for key, parse in (("labeler", parse_labeler_spec), ("splitter", parse_splitter_spec)):
        kind, name = parse(getattr(cfg.rlaifv, key))
        if kind == "model":
            check_loadable(name, f"rlaifv.{key}", cfg.policy.trust_remote_code)


def needs_ray(cfg: TrainConfig) -> bool:
    return (cfg.ray.trainer_in_actor or cfg.ray.trainer_workers > 1
            or (cfg.rollout.backend == "vllm" and any(s in POOL_STAGES for s in cfg.stages)))


def run(ctx: RunContext) -> dict:
    """Run the stages (in a Ray actor unless `ray.trainer_in_actor: false`), then write the report."""
    from rl.interrupt import install_handlers
    from rl.report import write_report
    from rl.runner import StageRunner

    cfg = ctx.cfg
    if needs_ray(cfg):
        from rollouts.ray_utils import init_ray

        init_ray(cfg.ray.address or None, cfg.ray.num_cpus or None, quiet=False)
    install_handlers(ctx.out)  # after ray.init, which may install its own
    if cfg.ray.trainer_in_actor:
        import ray

        # With a trainer group the runner only coordinates: the workers hold the trainer's resources.
        group = cfg.ray.trainer_workers > 1
        actor = ray.remote(StageRunner).options(num_cpus=0 if group else cfg.ray.trainer_num_cpus,
                                                num_gpus=0 if group else cfg.ray.trainer_num_gpus,
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
    parser.add_argument("--resume-with-changes", action="store_true",
                        help="continue an output folder whose recorded config differs only in keys that are safe "
                             "on resume (rl.provenance.SAFE_ON_RESUME: stages, step counts, eval, ray)")
    args = parser.parse_args(argv)
    try:
        cfg = load_train_config(args.config, args.overrides)
        ctx = preflight(cfg, resume_with_changes=args.resume_with_changes)
    except (ConfigError, ValueError) as exc:  # DataError, PolicyError, ProvenanceError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from rl.interrupt import RunInterrupted, clear_stop, stop_file

    clear_stop(ctx.out)  # a stop request of an earlier run is not this run's
    from rl.trainer_group import TrainerGroupError

    try:
        run(ctx)
    except TrainerGroupError as exc:
        message = str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1]
        print(f"error: {message}", file=sys.stderr)
        return 1
    except RunInterrupted as exc:
        reason = stop_file(ctx.out).read_text().split()[0] if stop_file(ctx.out).exists() else "SIGTERM"
        message = str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1]
        print(f"interrupted: {message}", file=sys.stderr)
        return 128 + getattr(signal.Signals, reason, signal.SIGTERM).value
    return 0


if __name__ == "__main__":
    sys.exit(main())

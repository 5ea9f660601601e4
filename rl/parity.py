"""Learning parity: does our GRPO stage learn where TRL's own `GRPOTrainer` learns?

    python -m rl.parity --policy DIR --json PATH [--config configs/demo.yaml] [--seeds 0,1,2]
        [--steps 30] [--plot PATH] [key=value ...]

For every seed, two arms train the same policy folder on the same prompts (the config's GRPO
prompts: its `rl` split when it has one, `grpo.tasks` / `grpo.qtypes`), with the same reward suite,
learning rate, batch, temperature, token cap and seed, each in a fresh subprocess:
- `ours`: the GRPO stage's own code (`rl.stages.grpo.prepare` / `make_trainer`: rollout pool with
  a vLLM actor, weight sync every step, TRL's importance-sampling correction);
- `trl`: plain `trl.GRPOTrainer` generating with transformers (`use_vllm=False`).
TRL cannot give each prompt its own thinking mode, so both arms run deep mode only
(`rollout.schedule.kind=deep_only`, TRL's `chat_template_kwargs={"enable_thinking": True}`) and
the std filter is off (TRL has none); everything else is the config's. TRL's seeded sampler picks
the prompts of every step in both arms (ours trains on exactly the rows TRL hands it), so the two
arms see the same questions in the same order. Per step we keep the mean training reward and
the mean accuracy component of the sampled completions. Writes a JSON with every curve, a
Markdown table (first and last `--window` steps per arm, mean and spread over seeds) and a plot
of both arms (mean over seeds, min-max band).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rl.bench import CHILD_ENV  # the same child environment as the speed benchmark's arms

ARMS = ("ours", "trl")
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rl.parity", description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True, help="policy folder both arms start from (e.g. runs/demo/policy_warmup)")
    p.add_argument("--config", default="configs/demo.yaml", help="run config: data, rewards, GRPO settings")
    p.add_argument("--json", help="where to write the results (required unless --arm)")
    p.add_argument("--plot", help="PNG path (default: next to --json)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--window", type=int, default=5, help="steps averaged for the first/last columns")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the trainers (0 = all cores)")
    p.add_argument("--arm-timeout", type=int, default=1800)
    p.add_argument("overrides", nargs="*", help="config overrides for both arms (key=value)")
    p.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--arm-out", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    return p


def arm_config(args: argparse.Namespace, seed: int, workdir: str):
    """The shared run config of one seed: the user's config and overrides, then what parity needs."""
    from rl.config import load_train_config

    forced = [f"output_dir={workdir}", f"seed={seed}", "stages=[grpo]", f"policy.name_or_path={args.policy}",
              f"grpo.steps={args.steps}", "grpo.save_steps=0", "rollout.schedule.kind=deep_only",
              "rewards.std_filter.enabled=false", "rollout.num_actors=1",
              "grpo.sft_coef=0"]  # TRL's GRPOTrainer has no SFT anchor: both arms train GRPO's loss alone
    cfg = load_train_config(args.config, [*args.overrides, *forced])
    cfg.grpo.trl = {**cfg.grpo.trl, "report_to": [], "disable_tqdm": True}
    return cfg


def _curve(log: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in log if key in r and "step" in r and "train_runtime" not in r]


def _recording_reward(suite: Any, tokenizer: Any):
    """TRL reward function over our reward suite for the TRL arm (`rl.bench.SuiteReward`: completions
    re-decoded with special tokens kept, deep mode) that also records the mean accuracy component
    of every call (one call per step)."""
    from rl.bench import SuiteReward

    class RecordingReward(SuiteReward):
        def __init__(self):
            super().__init__(suite, tokenizer, num_generations=1)
            self.accuracy: list[float] = []

        def __call__(self, prompts, completions, completion_ids, **kw):
            parts = self.breakdowns(prompts, completion_ids, **kw)
            acc = [a for b in parts if (a := b.components.get("accuracy")) is not None]
            self.accuracy.append(sum(acc) / len(acc) if acc else 0.0)
            return [b.total for b in parts]

    return RecordingReward()


def run_ours(args: argparse.Namespace, cfg: Any, data: Any) -> dict[str, Any]:
    import ray

    from rl.context import RunContext
    from rl.stages import grpo
    from rollouts.pool import RolloutPool
    from rollouts.ray_utils import LOOPBACK_ENV

    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    ctx = RunContext(cfg=cfg, out=Path(args.workdir), data=data, model_path=args.policy)
    ctx.engine = pool = RolloutPool(args.policy, cfg.rollout)
    try:
        setup = grpo.prepare(ctx)
        gargs = grpo.grpo_args(cfg.grpo, str(Path(args.workdir) / "grpo"), max(cfg.rollout.max_tokens.values()),
                               cfg.rollout.temperature, cfg.seed)
        trainer = grpo.make_trainer(setup, gargs, pool)
        trainer.train()
        log = trainer.state.log_history
        return {"reward": _curve(log, "reward"), "accuracy": _curve(log, "sampled/deep/accuracy") or _curve(log, "deep/accuracy"),
                "mean_tokens": _curve(log, "deep/mean_tokens"),
                "sampler_gap": _curve(log, "sampling/sampling_logp_difference/mean")}
    finally:
        pool.shutdown()
        ray.shutdown()


def run_trl(args: argparse.Namespace, cfg: Any, data: Any) -> dict[str, Any]:
    from trl import GRPOTrainer

    from policies.loading import freeze_vision, load_model, load_processor
    from rewards.breakdown import RewardSuite
    from rl.stages import grpo

    gcfg = cfg.grpo
    gcfg.trl = {**gcfg.trl, "chat_template_kwargs": {"enable_thinking": True}}
    processor = load_processor(args.policy, cfg.policy.trust_remote_code)
    model = load_model(args.policy, cfg.policy)
    if cfg.policy.freeze_vision:
        freeze_vision(model)
    rows = grpo.rl_prompts(data, gcfg)
    reward = _recording_reward(RewardSuite.from_config(cfg.rewards, tokenizer=processor.tokenizer), processor.tokenizer)
    gargs = grpo.grpo_args(gcfg, str(Path(args.workdir) / "grpo"), max(cfg.rollout.max_tokens.values()),
                           cfg.rollout.temperature, cfg.seed)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=gargs, train_dataset=rows, processing_class=processor)
    trainer.train()
    log = trainer.state.log_history
    return {"reward": _curve(log, "reward"), "accuracy": reward.accuracy[: args.steps],
            "mean_tokens": _curve(log, "completions/mean_length")}


def run_arm(args: argparse.Namespace) -> int:
    import torch

    from rl.data.loader import load_data

    for key, value in CHILD_ENV.items():
        os.environ.setdefault(key, value)
    torch.set_num_threads(args.threads or os.cpu_count() or 2)
    cfg = arm_config(args, args.seed, args.workdir)
    data = load_data(cfg.data)
    t0 = time.perf_counter()
    result = run_ours(args, cfg, data) if args.arm == "ours" else run_trl(args, cfg, data)
    result.update(seconds=time.perf_counter() - t0, seed=args.seed, arm=args.arm)
    Path(args.arm_out).write_text(json.dumps(result) + "\n")
    return 0


# ----------------------------------------------------------------------------- parent
def launch(args: argparse.Namespace, arm: str, seed: int, root: Path) -> dict[str, Any]:
    tag = f"{arm}_s{seed}"
    out, log = root / f"{tag}.json", root / f"{tag}.log"
    cmd = [sys.executable, "-m", "rl.parity", "--arm", arm, "--seed", str(seed), "--arm-out", str(out),
           "--workdir", str(root / tag), "--policy", args.policy, "--config", args.config,
           "--steps", str(args.steps), "--threads", str(args.threads), *args.overrides]
    print(f"[parity] {tag} ... (log: {log})", flush=True)
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in CHILD_ENV.items()}}
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=args.arm_timeout)
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"[parity] arm {tag} failed (exit {proc.returncode}); log {log}:\n" + "\n".join(tail))
    res = json.loads(out.read_text())
    print(f"[parity] {tag} done in {res['seconds']:.0f} s", flush=True)
    return res


def summarise(runs: list[dict[str, Any]], window: int) -> dict[str, Any]:
    """Per arm and metric: first/last-window means per seed, and their mean/std/range over seeds."""
    from rl.stats import summarise_seeds

    out: dict[str, Any] = {}
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        for key in ("reward", "accuracy"):
            first = [sum(r[key][:window]) / max(len(r[key][:window]), 1) for r in mine]
            last = [sum(r[key][-window:]) / max(len(r[key][-window:]), 1) for r in mine]
            gain = [b - a for a, b in zip(first, last, strict=True)]
            out.setdefault(arm, {})[key] = {
                "first": first, "last": last, "gain": gain,
                **{f"{name}_summary": vars(summarise_seeds(v)) for name, v in
                   (("first", first), ("last", last), ("gain", gain))},
            }
    return out


def table(summary: dict[str, Any], window: int) -> str:
    from rl.stats import SeedSummary

    lines = [f"| arm | reward first {window} | reward last {window} | reward gain | accuracy first {window} | "
             f"accuracy last {window} | accuracy gain |", "|---|---|---|---|---|---|---|"]
    for arm, m in summary.items():
        cells = [SeedSummary(**m[k][f"{c}_summary"]).text() for k in ("reward", "accuracy") for c in ("first", "last", "gain")]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key in zip(axes, ("reward", "accuracy"), strict=True):
        for arm, colour in zip(ARMS, ("tab:blue", "tab:orange"), strict=True):
            curves = [r[key] for r in runs if r["arm"] == arm and r[key]]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            arr = np.array([c[:n] for c in curves])
            x = np.arange(1, n + 1)
            ax.plot(x, arr.mean(0), color=colour, label=f"{arm} (mean of {len(curves)} seeds)")
            ax.fill_between(x, arr.min(0), arr.max(0), color=colour, alpha=0.2)
        ax.set_title(f"GRPO training {key} per step (deep mode)")
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.arm:
        return run_arm(args)
    if not args.json:
        parser.error("--json is required")
    if not Path(args.policy, "config.json").exists():
        parser.error(f"--policy {args.policy}: no config.json there; give a trained policy folder "
                     "(e.g. runs/demo/policy_warmup from `make demo`)")
    if args.steps < args.window:
        parser.error("--steps must be at least --window")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    root = Path(tempfile.mkdtemp(prefix="rl_parity_"))
    runs = [launch(args, arm, seed, root) for seed in seeds for arm in ARMS]
    summary = summarise(runs, args.window)
    res = {"policy": args.policy, "config": args.config, "overrides": args.overrides, "seeds": seeds,
           "steps": args.steps, "window": args.window, "mode": "deep", "std_filter": False,
           "summary": summary, "runs": runs}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    png = Path(args.plot) if args.plot else out.with_suffix(".png")
    plot(runs, png)
    md = table(summary, args.window)
    out.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"[parity] wrote {out}, {out.with_suffix('.md')}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

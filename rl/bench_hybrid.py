"""The recipe's own GRPO workload in `rl.bench` (`--workload hybrid`): sync vs async vs TRL.

    python -m rl.bench --workload hybrid --json runs/bench/hybrid.json [--policy DIR] [--steps N]
        [--placements 2:2,1:1,2:1,1:2] [--sync-placement 2:2] [--compile] [--plot runs/bench/hybrid.png]

The workload is `configs/demo.yaml`'s GRPO stage: its trained warm-up policy (`--policy`, e.g. an
`rl.ablate` setup's `policy_warmup`; without it the demo's warm-up is trained first), its prompts
(every short question type of the fresh `rl` scenes), its P x G, its per-mode token caps and its
fixed 0.5 schedule, so fast answers stop after a few tokens and deep ones after their reasoning.
Three changes, all for like-for-like speed: no SFT anchor (an extra forward TRL's arm would not
have), no std filter (its refills sample extra groups TRL never samples), and the sync arms draw
their prompts from the sampler's stream (`grpo.prompt_stream`), as the async arms must, so all of
ours sample the same prompts in the same order (`same_prompts_ours` in the JSON).

Arms, each in a fresh subprocess (`rl.bench`'s child entry; peak RSS per arm):
- `ours_sync_tTeE`: the synchronous loop, trainer T threads, engine E threads;
- `ours_async_tTeE`: `grpo.async` with max_staleness 1, one arm per `--placements` entry (the
  thread split of the 2 cores between trainer and engine, measured, not assumed);
- `trl_deep` / `trl_fast`: TRL's `GRPOTrainer` generating with transformers, every prompt in one mode
  (TRL cannot mix modes in a batch: one `chat_template_kwargs` per trainer), trainer on all cores.
  Two stand-ins for TRL on a hybrid batch: deep-only speed, what a mixed batch costs TRL (its
  `generate` runs every row until the longest finishes and its loss pads every row to the longest,
  a deep one); and `trl_split_bound_samples_per_s`, half the batch at deep-only and half at
  fast-only speed (harmonic mean), as if TRL could run the modes as separate batches at no cost:
  a bound in TRL's favour that no TRL configuration reaches.
The JSON carries every arm's samples/s, tokens/s, per-phase seconds (for async arms what the trainer
waited and what the engine did meanwhile: rollout, reward, push, idle), peak RSS, the reward of
every step against wall-clock seconds, and the ratios: best ours / each TRL stand-in, best async
/ best sync.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rl.bench_stats import WARMUP_STEPS, available_cores, ratio, versions

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
ARM_KEYS = ("samples_per_s", "tokens_per_s", "mean_completion_tokens", "median_step_seconds", "cpu_seconds_per_step",
            "peak_rss_mb", "peak_rss_tree_mb", "breakdown", "overlapped", "step_seconds", "reward_curve", "threads",
            "engine_threads", "max_staleness", "modes", "load_average")


def hybrid_config(args: argparse.Namespace, workdir: str) -> Any:
    """The demo's config, made into one arm's GRPO run (see the module docstring)."""
    from rl.config import TrainConfig
    from rl.configlib import deep_merge, from_dict, read_yaml

    staleness = getattr(args, "max_staleness", 0)
    return from_dict(TrainConfig, deep_merge(read_yaml(DEMO_CONFIG), {
        "output_dir": workdir, "seed": args.seed, "stages": ["grpo"],
        "policy": {"name_or_path": args.model_dir},
        "grpo": {"steps": args.steps + WARMUP_STEPS, "prompts_per_step": args.prompts_per_step,
                 "num_generations": args.num_generations, "save_steps": 0, "sft_coef": 0.0, "old_logps": args.old_logps,
                 "length_buckets": args.length_buckets,
                 # sync arms draw their prompts from the sampler's stream as async must, so every
                 # arm of ours samples the same prompts in the same order (no std filter, no refills)
                 "prompt_stream": True,
                 "async": {"enabled": staleness > 0, "max_staleness": max(staleness, 1)},
                 "trl": {"report_to": [], "disable_tqdm": True}},
        "rewards": {"std_filter": {"enabled": False}},
        "rollout": {"num_actors": 1, "num_cpus_per_actor": 1.0, "threads_per_actor": args.engine_threads,
                    "enforce_eager": not args.compile},
    }))


def parse_placement(text: str) -> tuple[int, int]:
    """'T:E' -> (trainer threads, engine threads), both >= 1."""
    try:
        t, e = (int(x) for x in text.split(":"))
    except ValueError:
        raise SystemExit(f"--placements/--sync-placement: {text!r} is not TRAINER:ENGINE thread counts, e.g. 1:1") from None
    if t < 1 or e < 1:
        raise SystemExit(f"--placements/--sync-placement: {text!r}: thread counts must be at least 1")
    return t, e


def train_warmup(args: argparse.Namespace, root: Path) -> str:
    """The demo's warm-up policy, trained into `root` (when no --policy is given)."""
    out = root / "warmup_run"
    cmd = [sys.executable, "-m", "rl.train", "--config", str(DEMO_CONFIG), "stages=[warmup]", f"output_dir={out}",
           f"seed={args.seed}"]
    print(f"[bench] training the demo's warm-up policy: {' '.join(cmd)}", flush=True)
    with open(root / "warmup.log", "w") as fh:
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return str(out / "policy_warmup")


def trl_hybrid_rate(deep: float | None, fast: float | None) -> float | None:
    """Samples/s of a batch half deep, half fast, each half at its mode-only rate."""
    if not deep or not fast:
        return None
    return 2.0 / (1.0 / deep + 1.0 / fast)


def hybrid_result(settings: dict[str, Any], arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON of the hybrid bench: per-arm entries and the acceptance ratios (pure)."""
    res: dict[str, Any] = dict(settings)
    res["arms"] = {name: ({k: arm[k] for k in ARM_KEYS if k in arm} if arm.get("ran", True) else arm)
                   for name, arm in arms.items()}
    rate = {name: arm.get("samples_per_s") for name, arm in arms.items() if arm.get("samples_per_s")}
    sync = {n: r for n, r in rate.items() if n.startswith("ours_sync")}
    asyn = {n: r for n, r in rate.items() if n.startswith("ours_async")}
    ours = {**sync, **asyn}
    best = max(ours, key=ours.get) if ours else None
    best_sync = max(sync, key=sync.get) if sync else None
    best_async = max(asyn, key=asyn.get) if asyn else None
    ids = [arm.get("prompt_ids") for name, arm in arms.items() if name.startswith("ours") and arm.get("prompt_ids")]
    res["same_prompts_ours"] = bool(ids) and all(i == ids[0] for i in ids)
    bound = trl_hybrid_rate(rate.get("trl_deep"), rate.get("trl_fast"))
    res.update(
        best_ours=best, best_sync=best_sync, best_async=best_async, trl_split_bound_samples_per_s=bound,
        speedup_best_ours_vs_trl_mixed=ratio(ours.get(best), rate.get("trl_deep")),
        speedup_best_ours_vs_trl_split_bound=ratio(ours.get(best), bound),
        speedup_best_sync_vs_trl_mixed=ratio(sync.get(best_sync), rate.get("trl_deep")),
        speedup_async_vs_sync=ratio(asyn.get(best_async), sync.get(best_sync)),
        peak_rss_mb={name: arm.get("peak_rss_mb") for name, arm in arms.items()},
    )
    res["acceptance"] = {
        "ours_vs_trl_mixed_batch_at_least_1.5x": (res["speedup_best_ours_vs_trl_mixed"] or 0) >= 1.5,
        "ours_vs_trl_split_bound_at_least_1.5x": (res["speedup_best_ours_vs_trl_split_bound"] or 0) >= 1.5,
        "async_vs_sync_at_least_1.25x": (res["speedup_async_vs_sync"] or 0) >= 1.25,
    }
    return res


def format_hybrid(res: dict[str, Any]) -> str:
    head = (f"Hybrid GRPO workload ({res.get('policy')}): {res.get('steps')} timed steps (+{WARMUP_STEPS} warm-up) of "
            f"{res.get('prompts_per_step')} prompts x {res.get('num_generations')}, caps {res.get('max_tokens')}, "
            f"schedule {res.get('schedule')}")
    lines = [head, "", f"{'arm':<18} {'samples/s':>9} {'tok/s':>7} {'tok/smp':>7} {'step s':>7} {'wait':>6} "
                       f"{'train':>6} {'eng idle':>8} {'RSS MB':>7}"]
    for name, arm in res["arms"].items():
        if "samples_per_s" not in arm:
            lines.append(f"{name:<18} did not run: {arm.get('error')}")
            continue
        b, o = arm.get("breakdown") or {}, arm.get("overlapped") or {}
        wait = (b.get("rollout", 0) + b.get("reward", 0)) if b else None
        lines.append(f"{name:<18} {arm['samples_per_s']:>9.2f} {arm['tokens_per_s']:>7.0f} "
                     f"{arm['mean_completion_tokens']:>7.1f} {b.get('step', 0):>7.2f} {wait or 0:>6.2f} "
                     f"{b.get('train', 0):>6.2f} {o.get('engine_idle', 0):>8.2f} {arm.get('peak_rss_mb', 0):>7.0f}")
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines += ["", f"best ours ({res.get('best_ours')}) / TRL on a mixed batch (deep-only speed): "
                  f"{f(res.get('speedup_best_ours_vs_trl_mixed'))}x; / TRL split-by-mode bound "
                  f"({f(res.get('trl_split_bound_samples_per_s'))} samples/s): "
                  f"{f(res.get('speedup_best_ours_vs_trl_split_bound'))}x",
              f"best async ({res.get('best_async')}) / best sync ({res.get('best_sync')}): "
              f"{f(res.get('speedup_async_vs_sync'))}x"]
    return "\n".join(lines)


def plot_reward_curves(res: dict[str, Any], path: str) -> None:
    """Reward of every step against wall-clock seconds, one line per arm (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, arm in res["arms"].items():
        curve = arm.get("reward_curve") or []
        if curve:
            ax.plot([c["seconds"] for c in curve], [c["reward"] for c in curve], marker="o", label=name)
    ax.set_xlabel("wall-clock seconds since training began")
    ax.set_ylabel("mean training reward of the step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_hybrid(args: argparse.Namespace) -> int:
    from rl.bench import launch
    from rl.configlib import read_yaml

    demo = read_yaml(DEMO_CONFIG)
    args.prompts_per_step = int(demo["grpo"]["prompts_per_step"])
    args.num_generations = int(demo["grpo"]["num_generations"])
    caps = dict(demo["rollout"]["max_tokens"])
    args.max_tokens = max(caps.values())
    sync_placement = parse_placement(args.sync_placement)
    placements = [parse_placement(p) for p in args.placements.split(",") if p.strip()]
    root = Path(tempfile.mkdtemp(prefix="rl_bench_hybrid_"))
    load = {"start": os.getloadavg()}
    policy = args.policy or train_warmup(args, root)
    if not Path(policy, "config.json").exists():
        raise SystemExit(f"--policy {policy}: no config.json there; give a saved policy folder (e.g. policy_warmup)")
    arms: dict[str, dict[str, Any]] = {}

    def arm(name: str, kind: str, extra: tuple[str, ...], required: bool = False) -> None:
        result, error = launch(args, kind, policy, root, args.size, args.prompts_per_step, extra=extra, tag=name)
        if result is None and required:
            raise SystemExit(f"[bench] arm {name} failed: {error}\n(logs kept in {root})")
        arms[name] = result if result is not None else {"ran": False, "error": error}

    t, e = sync_placement
    arm(f"ours_sync_t{t}e{e}", "ours", ("--threads", str(t), "--engine-threads", str(e), "--max-staleness", "0"), True)
    if args.length_buckets > 1:  # what the buckets alone buy: the same sync arm on one padded batch
        arm(f"ours_sync_t{t}e{e}_one_batch", "ours", ("--threads", str(t), "--engine-threads", str(e),
                                                       "--max-staleness", "0", "--length-buckets", "1"))
    for t, e in placements:
        arm(f"ours_async_t{t}e{e}", "ours", ("--threads", str(t), "--engine-threads", str(e), "--max-staleness", "1"))
    cores = str(available_cores())
    arm("trl_deep", "trl", ("--trl-mode", "deep", "--threads", cores), True)
    arm("trl_fast", "trl", ("--trl-mode", "fast", "--threads", cores), True)
    load["end"] = os.getloadavg()
    settings = {"workload": "hybrid", "policy": policy, "config": str(DEMO_CONFIG.relative_to(DEMO_CONFIG.parents[1])),
                "steps": args.steps, "warmup_steps": WARMUP_STEPS, "prompts_per_step": args.prompts_per_step,
                "num_generations": args.num_generations, "max_tokens": caps, "schedule": demo["rollout"]["schedule"],
                "sft_anchor": False, "std_filter": False, "old_logps": args.old_logps,
                "length_buckets": args.length_buckets, "max_staleness_async": 1,
                "ours_compiled_engine": bool(args.compile), "cores": available_cores(), "seed": args.seed,
                "load_average": load, "versions": versions()}
    res = hybrid_result(settings, arms)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if args.plot:
        plot_reward_curves(res, args.plot)
    print(format_hybrid(res))
    print(json.dumps({k: v for k, v in res.items() if k != "arms"}, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    return 0

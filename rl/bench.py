"""GRPO step benchmark: our hybrid pipeline vs TRL's own `GRPOTrainer`, same model, prompts and budget.

    python -m rl.bench --json runs/bench/rl_small.json [--size tiny|small] [--steps N]
        [--prompts-per-step P] [--num-generations G] [--max-tokens T] [--sweep]
        [--old-logps sampler|trainer] [--compare-old-logps] [--length-buckets K]
    python -m rl.bench --workload hybrid --json PATH [--policy DIR] ...   (the recipe's own
        workload: sync vs async vs TRL deep-only / fast-only, see rl/bench_hybrid.py)

The arms below are the uniform workload's (the default).

Arms, each in its own fresh subprocess (so peak RSS is per arm):
- `ours`: `HybridGRPOTrainer` + `GroupSampler` + a one-actor `RolloutPool` (in-process vLLM in a Ray
  actor), weight sync every step, built by the GRPO stage's own code (`rl.stages.grpo.prepare` /
  `make_trainer`); std filter off, every prompt in deep mode (`deep_only`);
- `trl`: plain `trl.GRPOTrainer` generating with transformers (`use_vllm=False`), deep mode through
  `chat_template_kwargs={"enable_thinking": True}`;
- `trl_vllm_colocate`: TRL's own vLLM colocate mode, attempted; a failure is recorded, not raised;
- with `--compare-old-logps`, `ours` once more with the other `grpo.old_logps` setting (sampler
  log-probs as the old log-probs, one forward per step, against TRL's extra no-grad forward plus
  its importance-sampling correction), in the same run: `ours_other_old_logps` in the JSON.
Both main arms: the tiny-model factory's model (fixed seed, fp32, vision tower frozen), the same
Shapes `short` rows in the same order (TRL's seeded sampler; checked, `same_prompts`), P prompts x G
samples per step, the same max completion tokens, temperature 1.0, the same GRPO hyper-parameters
(`grpo_args`) and the same reward suite (rule accuracy + format + repetition, on the raw completion
text with think tags), trainer `torch.set_num_threads(cores)`; our engine keeps the pipeline's
default of 1 thread (`rollout.threads_per_actor`, see rollouts/config.py; `--engine-threads`). One
untimed warm-up step, then N timed steps: samples/s and tokens/s over the timed window, per-step
means of rollout / reward / sync / train (= step − the others), the median step, and the CPU seconds
the arm's processes used per step (far less disturbed than wall-clock time when other jobs share
the cores). Peak RSS is sampled every 0.2 s and summed over the arm's processes: for `ours` the
trainer process plus the engine actor process(es); `*_peak_rss_tree_mb` adds Ray's own processes
(GCS, raylet, idle workers). RSS sums count pages shared between processes (libraries, Ray's object
store) once per process. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rl.bench_stats import (
    WARMUP_STEPS,
    RssMonitor,
    assemble,
    async_records,
    available_cores,
    colocate_entry,
    first_line,
    format_table,
    old_logps_entry,
    overlapped_means,
    reward_curve,
    summarise_steps,
    versions,
)

ARMS = ("ours", "trl", "trl_vllm_colocate")
WORKLOADS = ("uniform", "hybrid")
ENGINE_PREFIXES = ("ray::VLLMEngine",)  # Ray's process title of the rollout actors
CHILD_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "token",
    "TOKENIZERS_PARALLELISM": "false",
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}
SWEEP_MULTIPLIERS = (1, 2, 4)
SWEEP_SIZES = ("tiny", "small")
TASKS = ["short"]  # rule-verified answers: the reward costs the same in both arms (no RLPR scoring)



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rl.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="where to write the results (required unless --arm)")
    parser.add_argument("--size", choices=["tiny", "small"], default="small")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after 1 untimed warm-up step)")
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--sweep", action="store_true", help="also prompts-per-step x1, x2, x4 on tiny and small")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the trainers (0 = all cores)")
    parser.add_argument("--engine-threads", type=int, default=0,
                        help="threads of our vLLM actor (0 = the pipeline's default, rollout.threads_per_actor: "
                             "num_cpus_per_actor = 1)")
    parser.add_argument("--no-colocate", action="store_true", help="skip the TRL vLLM colocate attempt")
    parser.add_argument("--old-logps", choices=["sampler", "trainer"], default="sampler",
                        help="ours: the policy ratio's old log-probs from the sampler (grpo.old_logps default: one "
                             "forward per step) or from TRL's extra no-grad forward with its IS correction")
    parser.add_argument("--compare-old-logps", action="store_true",
                        help="also run ours with the other --old-logps setting, in the same run (ratio in the JSON)")
    parser.add_argument("--no-is-correction", action="store_true",
                        help="ours with TRL's trainer old log-probs and no importance-sampling correction at all")
    parser.add_argument("--compile", action="store_true",
                        help="our engine compiles the model (rollout.enforce_eager=false): slower start, faster rollouts")
    parser.add_argument("--workload", choices=WORKLOADS, default="uniform",
                        help="uniform: the untrained tiny model, deep mode only (above); hybrid: the recipe's own "
                             "workload (rl.bench_hybrid): the demo's warm-up policy, prompts, per-mode caps and fixed "
                             "0.5 schedule; arms ours sync, ours async (per thread placement), TRL deep-only and "
                             "fast-only")
    parser.add_argument("--policy", help="hybrid: the trained warm-up policy to start from (default: train the demo's "
                                         "warm-up first, a few minutes)")
    parser.add_argument("--placements", default="2:2,1:1,2:1,1:2",
                        help="hybrid: trainer:engine thread counts of the async arms (comma-separated)")
    parser.add_argument("--sync-placement", default="2:2", help="hybrid: trainer:engine threads of the sync arm")
    parser.add_argument("--plot", help="hybrid: also write the reward-vs-wall-clock plot of every arm to this PNG")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arm-timeout", type=int, default=1800, help="seconds per arm subprocess")
    # internal: one arm in this process
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--arm-out", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--length-buckets", type=int, default=4,
                        help="ours: grpo.length_buckets (the pipeline's default 4: the loss on length buckets of the "
                             "batch, no compute on padding; 1 = one padded batch as TRL)")
    parser.add_argument("--max-staleness", type=int, default=0, help=argparse.SUPPRESS)  # ours: 0 = sync
    parser.add_argument("--trl-mode", choices=["deep", "fast"], default="deep", help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.arm is None and not args.json:
        parser.error("--json is required")
    if args.arm is not None and not (args.arm_out and args.model_dir):
        parser.error("--arm needs --arm-out and --model-dir")
    for name in ("steps", "prompts_per_step", "max_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.num_generations < 2:
        parser.error("--num-generations must be at least 2 (GRPO compares samples of a prompt)")
    if args.threads < 0 or args.engine_threads < 0:
        parser.error("--threads/--engine-threads must be >= 0")
    args.threads = args.threads or available_cores()
    if args.arm is not None and not args.workdir:
        args.workdir = tempfile.mkdtemp(prefix=f"rl_bench_{args.arm}_")
    return args


# ============================================================================ one arm (child process)
def bench_config(args: argparse.Namespace, workdir: str):
    """The run config both arms share (TrainConfig, validated): ours runs it through the GRPO
    stage's code; the TRL arm takes its GRPO hyper-parameters, rewards and seed from it."""
    from rl.config import TrainConfig
    from rl.configlib import from_dict

    if args.workload == "hybrid":
        from rl.bench_hybrid import hybrid_config

        return hybrid_config(args, workdir)

    return from_dict(TrainConfig, {
        "output_dir": workdir,
        "seed": args.seed,
        "stages": ["grpo"],
        "policy": {"name_or_path": args.model_dir},
        "grpo": {"steps": args.steps + WARMUP_STEPS, "prompts_per_step": args.prompts_per_step,
                 "num_generations": args.num_generations, "tasks": TASKS, "save_steps": 0,
                 "old_logps": "trainer" if args.no_is_correction else args.old_logps,
                 "length_buckets": args.length_buckets,
                 "trl": {"report_to": [], "disable_tqdm": True,
                         **({"vllm_importance_sampling_correction": False} if args.no_is_correction else {})}},
        "rollout": {"max_tokens": {"deep": args.max_tokens, "fast": args.max_tokens},
                    "schedule": {"kind": "deep_only"}, "temperature": 1.0, "num_actors": 1,
                    "num_cpus_per_actor": 1.0, "threads_per_actor": args.engine_threads,
                    "enforce_eager": not args.compile},
        "rewards": {"std_filter": {"enabled": False}},
    })


def shapes_data(args: argparse.Namespace):
    """Shapes rows (train split) for `steps + warm-up` batches of distinct prompts and then some
    (uniform workload); the demo's data with its `rl` scenes (hybrid)."""
    from rl.data.loader import LoadedData
    from rl.data.shapes import empty_dataset, make_shapes

    if args.workload == "hybrid":
        from rl.data.loader import load_data

        return load_data(bench_config(args, args.workdir).data)

    need = (args.steps + WARMUP_STEPS) * args.prompts_per_step
    images = max(64, need)  # ~60% of the questions are `short`
    dd = make_shapes(num_train_images=images, num_heldout_images=0, questions_per_image=2, seed=args.seed + 11)
    return LoadedData(train=dd["train"], eval=empty_dataset())


def _step_clock(monitor: RssMonitor | None):
    """A trainer callback that keeps the wall-clock time, and the arm's CPU seconds when a monitor
    is given, at the end of every optimizer step."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.start = time.perf_counter()
            self.ends: list[float] = []
            self.cpu: list[float] | None = [] if monitor is not None else None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            if monitor is not None:
                self.cpu.append(monitor.cpu_seconds())

    return StepClock()


def run_ours(args: argparse.Namespace, monitor: RssMonitor) -> dict[str, Any]:
    import ray
    import torch

    from rl.context import RunContext
    from rl.stages import grpo
    from rollouts.pool import RolloutPool
    from rollouts.ray_utils import LOOPBACK_ENV

    torch.set_num_threads(args.threads)
    cfg = bench_config(args, args.workdir)
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)
    # A fresh local cluster owned by this process (never someone's `ray start` cluster on this
    # machine): its actors are this process's descendants, so the RSS monitor sees them.
    ray.init(address="local", num_cpus=available_cores(), include_dashboard=False, log_to_driver=False)
    ctx = RunContext(cfg=cfg, out=Path(args.workdir), data=shapes_data(args), model_path=args.model_dir)
    ctx.engine = pool = RolloutPool(args.model_dir, cfg.rollout)
    try:
        monitor.add_pids(h["pid"] for h in pool.health())
        setup = grpo.prepare(ctx)
        samples: list[dict[str, Any]] = []
        sample = setup.sampler.sample

        def recording_sample(rows):
            groups, stats = sample(rows)
            samples.append({"rollout": stats.rollout_s, "reward": stats.reward_s, "tokens": sum(stats.tokens.values()),
                            "ids": [str(g.row["id"]) for g in groups], "modes": sorted({g.mode for g in groups})})
            return groups, stats

        setup.sampler.sample = recording_sample
        gargs = grpo.grpo_args(cfg.grpo, str(Path(args.workdir) / "grpo"), args.max_tokens,
                               cfg.rollout.temperature, cfg.seed)
        clock = _step_clock(monitor)
        trainer = grpo.make_trainer(setup, gargs, pool, [clock])
        trainer.train()
        syncs = trainer.vllm_generation.history  # one per step (TRL's weight-sync hook, or the async pushes)
        records = [{**s, "sync": syncs[i].seconds if i < len(syncs) else 0.0} for i, s in enumerate(samples)]
        step_logs = [h for h in trainer.state.log_history if "reward" in h and "train_runtime" not in h]
        if setup.max_staleness is not None:
            records = async_records(step_logs, records)
        out = summarise_steps(clock.ends, records, args.prompts_per_step * args.num_generations, cpu_at_ends=clock.cpu)
        if setup.max_staleness is not None:
            out["overlapped"] = overlapped_means(records[WARMUP_STEPS:len(clock.ends)])
            out["max_staleness"] = setup.max_staleness
        out.update(prompt_ids=[r["ids"] for r in records[WARMUP_STEPS:len(clock.ends)]],
                   modes=sorted({m for r in records for m in r["modes"]}),
                   num_params=sum(p.numel() for p in setup.model.parameters()),
                   trainable_params=sum(p.numel() for p in setup.model.parameters() if p.requires_grad),
                   sync_bytes=syncs[-1].num_bytes if syncs else 0, threads=torch.get_num_threads(),
                   engine_threads=cfg.rollout.threads_per_actor or max(1, int(cfg.rollout.num_cpus_per_actor)),
                   std_filter=cfg.rewards.std_filter.enabled,
                   reward_curve=reward_curve(clock.start, clock.ends, step_logs))
        return out
    finally:
        pool.shutdown()
        ray.shutdown()


class SuiteReward:
    """TRL reward function over our reward suite, timed per call. Completions are re-decoded from
    their ids with special tokens kept (TRL's own text drops `<think>`), end-of-text stripped, so
    the suite sees what it sees in our pipeline; the prompt ids of each call are recorded."""

    def __init__(self, suite: Any, tokenizer: Any, num_generations: int, mode: str = "deep"):
        self.suite, self.tokenizer, self.G, self.mode = suite, tokenizer, num_generations, mode
        self.eos = tokenizer.eos_token or ""
        self.calls: list[dict[str, Any]] = []
        self.__name__ = "reward_suite"

    def _text(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        return text[: -len(self.eos)] if self.eos and text.endswith(self.eos) else text

    def breakdowns(self, prompts: list[Any], completion_ids: list[list[int]], **kw: Any) -> list[Any]:
        """The suite's per-completion `RewardBreakdown`s for TRL's reward-function arguments."""
        texts = [self._text(ids) for ids in completion_ids]
        cols = {k: kw[k] for k in ("answer", "task", "qtype", "objects", "images") if k in kw}
        cols["mode"] = [self.mode] * len(texts)
        return self.suite.compute(prompts, texts, **cols)

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **kw: Any):
        t0 = time.perf_counter()
        out = [b.total for b in self.breakdowns(prompts, completion_ids, **kw)]
        self.calls.append({"seconds": time.perf_counter() - t0, "ids": [str(i) for i in kw.get("id", [])][:: self.G]})
        return out


def _timed_trainer_class():
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer that times its generation (`_generate`: tokenize, generate, decode) and, in
        vLLM mode, its weight syncs (excluded from the generation time)."""

        def __init__(self, *a: Any, **kw: Any):
            self.gen_calls: list[dict[str, float]] = []
            self._sync_s = 0.0
            super().__init__(*a, **kw)
            if self.use_vllm:
                inner = self.vllm_generation.sync_weights

                def timed_sync():
                    t0 = time.perf_counter()
                    inner()
                    self._sync_s += time.perf_counter() - t0

                self.vllm_generation.sync_weights = timed_sync

        def _generate(self, prompts):
            t0, s0 = time.perf_counter(), self._sync_s
            out = super()._generate(prompts)
            sync = self._sync_s - s0
            self.gen_calls.append({"rollout": time.perf_counter() - t0 - sync, "sync": sync,
                                   "tokens": sum(len(c) for c in out[1])})
            return out

    return TimedGRPOTrainer


def run_trl(args: argparse.Namespace, monitor: RssMonitor, vllm_colocate: bool = False) -> dict[str, Any]:
    import torch

    from policies.loading import freeze_vision, load_model, load_processor
    from rewards.breakdown import RewardSuite
    from rl.stages import grpo

    torch.set_num_threads(args.threads)
    cfg = bench_config(args, args.workdir)
    gcfg = cfg.grpo
    mode = args.trl_mode  # TRL cannot mix modes in a batch: one run per mode
    extra: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": mode == "deep"}}
    if vllm_colocate:
        extra.update(use_vllm=True, vllm_mode="colocate", vllm_max_model_length=cfg.rollout.max_model_len)
    gcfg.trl = {**gcfg.trl, **extra}
    processor = load_processor(args.model_dir, cfg.policy.trust_remote_code)
    model = load_model(args.model_dir, cfg.policy)
    if cfg.policy.freeze_vision:
        freeze_vision(model)
    train = grpo.rl_prompts(shapes_data(args), gcfg)  # the rows ours samples from
    suite = RewardSuite.from_config(cfg.rewards, tokenizer=processor.tokenizer)
    reward = SuiteReward(suite, processor.tokenizer, args.num_generations, mode)
    gargs = grpo.grpo_args(gcfg, str(Path(args.workdir) / "grpo"), cfg.rollout.max_tokens[mode],
                           cfg.rollout.temperature, cfg.seed)
    clock = _step_clock(monitor)
    trainer = _timed_trainer_class()(model=model, reward_funcs=[reward], args=gargs, train_dataset=train,
                                     processing_class=processor, callbacks=[clock])
    trainer.train()
    records = [{**g, "reward": r["seconds"]} for g, r in zip(trainer.gen_calls, reward.calls, strict=True)]
    out = summarise_steps(clock.ends, records, args.prompts_per_step * args.num_generations, cpu_at_ends=clock.cpu)
    step_logs = [h for h in trainer.state.log_history if "reward" in h and "train_runtime" not in h]
    out.update(prompt_ids=[r["ids"] for r in reward.calls[WARMUP_STEPS:len(clock.ends)]], modes=[mode],
               reward_curve=reward_curve(clock.start, clock.ends, step_logs),
               num_params=sum(p.numel() for p in model.parameters()),
               trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
               threads=torch.get_num_threads())
    return out


def run_arm(args: argparse.Namespace) -> int:
    """Child entry: run one arm, write its result (with peak RSS) to `--arm-out`."""
    for key, value in CHILD_ENV.items():
        os.environ.setdefault(key, value)
    monitor = RssMonitor(engine_prefixes=ENGINE_PREFIXES if args.arm == "ours" else None).start()
    load_start = os.getloadavg()
    result: dict[str, Any]
    try:
        if args.arm == "ours":
            result = run_ours(args, monitor)
        else:
            result = run_trl(args, monitor, vllm_colocate=args.arm == "trl_vllm_colocate")
        result["ran"] = True
    except Exception as exc:
        if args.arm != "trl_vllm_colocate":
            raise
        import traceback

        traceback.print_exc()
        result = {"ran": False, "error": f"{type(exc).__name__}: {first_line(str(exc))}"}
    finally:
        monitor.stop()
    result.update(peak_rss_mb=monitor.peak / 2**20, peak_rss_tree_mb=monitor.peak_tree / 2**20,
                  rss_samples=monitor.samples, load_average={"start": load_start, "end": os.getloadavg()})
    Path(args.arm_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


# ============================================================================ orchestration (parent)
def _child_args(args: argparse.Namespace, arm: str, model_dir: str, workdir: Path, out: Path,
                size: str, prompts_per_step: int, old_logps: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "rl.bench", "--arm", arm, "--arm-out", str(out), "--model-dir", model_dir,
            "--workdir", str(workdir), "--size", size, "--steps", str(args.steps),
            "--prompts-per-step", str(prompts_per_step), "--num-generations", str(args.num_generations),
            "--max-tokens", str(args.max_tokens), "--threads", str(args.threads),
            "--engine-threads", str(args.engine_threads), "--seed", str(args.seed),
            "--old-logps", old_logps or args.old_logps, "--workload", args.workload,
            "--length-buckets", str(args.length_buckets),
            *(["--compile"] if args.compile else []), *(["--no-is-correction"] if args.no_is_correction else []),
            *extra]  # later flags override earlier ones (per-arm threads, staleness, TRL mode)


def launch(args: argparse.Namespace, arm: str, model_dir: str, root: Path, size: str,
           prompts_per_step: int, old_logps: str | None = None, extra: tuple[str, ...] = (),
           tag: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Run one arm in a fresh subprocess; (result, None) or (None, error text). `extra`: child
    flags of this arm; `tag`: its name (files and log lines)."""
    tag = tag or f"{arm}_{size}_p{prompts_per_step}" + (f"_{old_logps}_logps" if old_logps else "")
    workdir, out, log = root / tag, root / f"{tag}.json", root / f"{tag}.log"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in CHILD_ENV.items()}}
    print(f"[bench] {tag} ... (log: {log})", flush=True)
    t0 = time.perf_counter()
    try:
        with open(log, "w") as fh:
            proc = subprocess.run(_child_args(args, arm, model_dir, workdir, out, size, prompts_per_step, old_logps, extra),
                                  stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=args.arm_timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {args.arm_timeout} s"
    print(f"[bench] {tag} done in {time.perf_counter() - t0:.0f} s (rc {proc.returncode})", flush=True)
    if proc.returncode == 0 and out.exists():
        return json.loads(out.read_text()), None
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-40:]
    errors = [ln for ln in tail if "Error" in ln or "error" in ln]
    return None, (errors[-1] if errors else (tail[-1] if tail else f"exit code {proc.returncode}"))


def _require(result: dict[str, Any] | None, error: str | None, tag: str, root: Path) -> dict[str, Any]:
    if result is None:
        raise SystemExit(f"[bench] arm {tag} failed: {error}\n(logs kept in {root})")
    return result


def build_model(size: str, seed: int, root: Path) -> tuple[str, int]:
    from policies.tiny import build_tiny_model

    path = build_tiny_model(root / f"model_{size}", seed=seed, size=size)
    return str(path), int(json.loads((path / "tiny_spec.json").read_text())["num_params"])


def run_sweep(args: argparse.Namespace, root: Path, models: dict[str, str],
              main: dict[tuple[str, int, str], dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for size in SWEEP_SIZES:
        if size not in models:
            models[size] = build_model(size, args.seed, root)[0]
        for mult in SWEEP_MULTIPLIERS:
            p = args.prompts_per_step * mult
            for arm in ("ours", "trl"):
                res = main.get((size, p, arm))
                error = None
                if res is None:
                    res, error = launch(args, arm, models[size], root, size, p)
                rows.append({"size": size, "prompts_per_step": p, "arm": arm,
                             "step_seconds": (res or {}).get("breakdown", {}).get("step"),
                             "samples_per_s": (res or {}).get("samples_per_s"),
                             **({"error": first_line(error)} if error else {})})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.arm:
        return run_arm(args)
    for key, value in CHILD_ENV.items():
        os.environ.setdefault(key, value)
    if args.workload == "hybrid":
        from rl.bench_hybrid import run_hybrid

        return run_hybrid(args)
    root = Path(tempfile.mkdtemp(prefix="rl_bench_"))
    load = {"start": os.getloadavg()}
    model_dir, num_params = build_model(args.size, args.seed, root)
    ours = _require(*launch(args, "ours", model_dir, root, args.size, args.prompts_per_step), "ours", root)
    trl = _require(*launch(args, "trl", model_dir, root, args.size, args.prompts_per_step), "trl", root)
    other = None
    if args.compare_old_logps:
        other_setting = "trainer" if args.old_logps == "sampler" else "sampler"
        other = _require(*launch(args, "ours", model_dir, root, args.size, args.prompts_per_step, other_setting),
                         f"ours ({other_setting} old log-probs)", root)
        other["old_logps"] = other_setting
    if args.no_colocate:
        colocate = {"ran": False, "error": "skipped (--no-colocate)"}
    else:
        colocate = colocate_entry(*launch(args, "trl_vllm_colocate", model_dir, root, args.size, args.prompts_per_step))
    sweep = None
    if args.sweep:
        main_runs = {(args.size, args.prompts_per_step, "ours"): ours, (args.size, args.prompts_per_step, "trl"): trl}
        sweep = run_sweep(args, root, {args.size: model_dir}, main_runs)
    load["end"] = os.getloadavg()
    settings = {
        "size": args.size, "num_params": num_params, "trainable_params": ours.get("trainable_params"),
        "steps": args.steps, "warmup_steps": WARMUP_STEPS, "prompts_per_step": args.prompts_per_step,
        "num_generations": args.num_generations, "samples_per_step": args.prompts_per_step * args.num_generations,
        "max_tokens": args.max_tokens, "temperature": 1.0, "thinking_mode": "deep", "tasks": TASKS,
        "reward": "reward suite: accuracy (rule verifier on short tasks) 0.9 + format 0.1 + repetition 1.0",
        "std_filter": False, "dtype": "float32", "ours_compiled_engine": bool(args.compile),
        "ours_is_correction": not args.no_is_correction,
        "ours_old_logps": "trainer" if args.no_is_correction else args.old_logps,
        "seed": args.seed, "cores": available_cores(),
        "ours_modes": ours.get("modes"), "ours_sync_bytes": ours.get("sync_bytes"),
        "load_average": load,
    }
    res = assemble(settings, ours, trl, colocate, versions(), sweep)
    if other is not None:
        res["ours_other_old_logps"] = old_logps_entry(ours, other, trl)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(format_table(res))
    print(json.dumps(res, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

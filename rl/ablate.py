"""Ablation runner: `python -m rl.ablate --grid configs/ablations/NAME.yaml [--submit]`.

A grid file names a base run config, overrides shared by every run, an optional shared `setup`
run (e.g. the warm-up) whose final policy every cell starts from, and axes: each axis maps a
value name to the `key=value` overrides that set it. The runner expands the product of the
axes (times `seeds`) into cells, runs each cell with `python -m rl.train` (sequentially here,
or as `ray job submit` jobs with `--submit`), skips cells whose `report/metrics.json` already
exists, and writes `results.csv`, `results.md` and `comparison.png` into the grid's output
folder. A failed cell is recorded as failed (with its log) and does not stop the others. A cell
that starts from a setup run is read with the setup's stages in front of its own
(`with_setup`), so `heldout_deltas.stages.warmup->grpo.*` columns compare the setup's warm-up
with the cell's GRPO on the same held-out questions, with their bootstrap intervals.

    name: thinking_schedules
    config: ../demo.yaml                  # relative to this file
    output_dir: runs/ablations/thinking_schedules
    overrides: [grpo.steps=30]            # every run, setup included
    setup: {overrides: [stages=[warmup]]} # shared; cached by content hash next to output_dir
                                          # (per_seed: true -> one setup run per seed)
    cell_overrides: [stages=[grpo]]       # every cell
    seeds: [0]
    axes:
      schedule:
        deep_only: [rollout.schedule.kind=deep_only]
        fixed_0.5: [rollout.schedule.kind=fixed]
    columns:                              # header -> dotted key of metrics.json or a DERIVED name
      acc_deep: grpo.heldout_accuracy.deep
      total_tokens: grpo_total_tokens
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl.ablate_curves import add_reference, plot_curves, reach_columns
from rl.configlib import ConfigError, FieldError, deep_merge, from_dict, parse_overrides, read_yaml

RESULT = Path("report") / "metrics.json"


@dataclass
class SetupSpec:
    overrides: list[str] = field(default_factory=list)
    # One setup run per seed (the cells of seed k start from setup k), so that a seed grid of GRPO
    # variants varies the warm-up with the seed as full runs do, yet trains it once per seed.
    per_seed: bool = False


@dataclass
class GridSpec:
    """One ablation grid (see the module docstring for the file format)."""

    name: str = ""
    config: str = ""
    output_dir: str = ""
    overrides: list[str] = field(default_factory=list)
    setup: SetupSpec | None = None
    cell_overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    axes: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    baseline_columns: dict[str, str] = field(default_factory=dict)  # columns of the setup row
    curves: list[str] = field(default_factory=list)  # GRPO log keys plotted vs cumulative sampled tokens
    curve_window: int = 10  # rolling-mean window (steps) of the curves
    curve_x: str = "tokens"  # x axis of the curves: cumulative sampled "tokens" or training "seconds"
    # A reference cell ("axis=value"): every cell is compared with the reference cell of its seed.
    # `reach_s`: the training seconds its rolling mean of `reach_metric` (curve_window steps) takes
    # to first reach the reference's final rolling value (None: never), with `final_<metric>`;
    # `vs_ref_deep` / `vs_ref_mean` (+ `_lo`, `_hi`): its held-out accuracy after `reference_stage`
    # minus the reference's, paired over the same questions, with a 95% bootstrap interval.
    reference: str = ""
    reach_metric: str = "reward"
    reference_stage: str = "grpo"
    reach_levels: list[float] = field(default_factory=list)  # also `reach_<level>_s`: seconds to fixed levels
    timeout_s: int = 3600  # per run

    def validate(self) -> None:
        if not self.name:
            raise FieldError("name", "give the grid a name")
        if not self.config:
            raise FieldError("config", "name the base run config (e.g. ../demo.yaml)")
        if not self.output_dir:
            raise FieldError("output_dir", "name a folder for the grid's runs and tables")
        if not self.axes:
            raise FieldError("axes", "needs at least one axis with at least one value")
        for axis, values in self.axes.items():
            if not values:
                raise FieldError(f"axes.{axis}", "needs at least one value")
        if not self.seeds:
            raise FieldError("seeds", "needs at least one seed")
        if not self.columns:
            raise FieldError("columns", "name at least one result column")
        if self.curve_x not in ("tokens", "seconds"):
            raise FieldError("curve_x", f"must be tokens or seconds, got {self.curve_x!r}")
        if self.reference:
            axis, _, value = self.reference.partition("=")
            if value not in self.axes.get(axis, {}):
                raise FieldError("reference", f"{self.reference!r} is not axis=value of this grid's axes")


@dataclass
class Cell:
    """One run of the grid: its axis values, seed, overrides and output folder."""

    name: str
    settings: dict[str, str]
    seed: int
    overrides: list[str]
    out: Path

    @property
    def result_path(self) -> Path:
        return self.out / RESULT


def load_grid(path: str | Path) -> GridSpec:
    """Read and check a grid file; `config` is resolved relative to the grid file."""
    path = Path(path)
    data = read_yaml(path)
    try:
        grid = from_dict(GridSpec, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    config = (path.parent / grid.config).resolve()
    if not config.is_file():
        raise ConfigError(f"{path}: config {grid.config!r} does not exist (looked for {config})")
    grid.config = str(config)
    for i, item in enumerate([*grid.overrides, *grid.cell_overrides]):
        parse_overrides([item])  # fail now on a malformed override, naming it
        if item.split("=", 1)[0].strip() in ("output_dir", "seed"):
            raise ConfigError(f"{path}: override #{i} {item!r}: the runner sets output_dir and seed per cell")
    return grid


def restrict_axis(grid: GridSpec, item: str) -> None:
    """Apply `--only AXIS=V1,V2`: keep those values of one axis (ConfigError naming what is unknown)."""
    axis, _, values = item.partition("=")
    if axis not in grid.axes:
        raise ConfigError(f"--only {item!r}: grid {grid.name} has no axis {axis!r}; axes: {list(grid.axes)}")
    keep = [v for v in values.split(",") if v]
    unknown = [v for v in keep if v not in grid.axes[axis]]
    if unknown or not keep:
        raise ConfigError(f"--only {item!r}: unknown value(s) {unknown}; values of {axis}: {list(grid.axes[axis])}")
    grid.axes[axis] = {v: o for v, o in grid.axes[axis].items() if v in keep}  # file order


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def expand(grid: GridSpec) -> list[Cell]:
    """The cells of the grid: product of the axes in file order, then seeds."""
    out = Path(grid.output_dir).resolve()
    axes = list(grid.axes.items())
    cells = []
    for combo in itertools.product(*[list(values.items()) for _, values in axes]):
        settings = {axis: value for (axis, _), (value, _) in zip(axes, combo, strict=True)}
        extra = [o for _, overrides in combo for o in overrides]
        for seed in grid.seeds:
            name = "__".join(f"{_slug(a)}-{_slug(v)}" for a, v in settings.items())
            name += f"__seed-{seed}" if seed != 0 else ""  # stable: adding seeds later reuses seed 0
            cells.append(Cell(name, settings, seed, [*grid.overrides, *grid.cell_overrides, *extra], out / "cells" / name))
    names = [c.name for c in cells]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"grid {grid.name}: value names collide after slugging: {sorted(dupes)}")
    return cells


def setup_dir(grid: GridSpec, seed: int | None = None) -> Path | None:
    """Where the shared setup run lives: keyed by the content of its config, so grids with the same
    base config and setup overrides share one run; with `setup.per_seed`, one folder per seed."""
    if grid.setup is None:
        return None
    merged = deep_merge(read_yaml(grid.config), parse_overrides([*grid.overrides, *grid.setup.overrides]))
    merged.pop("output_dir", None)
    digest = hashlib.sha256(json.dumps(merged, sort_keys=True, default=str).encode()).hexdigest()[:10]
    name = f"setup-{digest}"
    if grid.setup.per_seed:
        if seed is None:
            raise ValueError("a per-seed setup needs the seed")
        name += f"-seed{seed}"
    return Path(grid.output_dir).resolve().parent / name


def setup_dirs(grid: GridSpec) -> dict[int, Path]:
    """The setup folder of each seed of the grid (all the same folder unless `setup.per_seed`)."""
    if grid.setup is None:
        return {}
    return {seed: setup_dir(grid, seed) for seed in grid.seeds}


def final_policy(run_dir: Path) -> str:
    """The model path a finished run ended with (from its last stage marker)."""
    from rl.provenance import latest_config

    cfg = latest_config(run_dir)
    marker = run_dir / "stages" / f"{cfg['stages'][-1]}.json"
    if not marker.exists():
        raise RuntimeError(f"setup run {run_dir} has no completed stage marker {marker.name}; rerun the grid")
    return str(Path(json.loads(marker.read_text())["model_path"]).resolve())


# ------------------------------------------------------------------ running


def train_command(config: str, overrides: list[str], out: Path, seed: int | None, submit: bool, address: str) -> list[str]:
    """`python -m rl.train ...`, or the same wrapped in `ray job submit` (working dir = here)."""
    if submit and os.path.relpath(config).startswith(".."):
        raise ConfigError(f"--submit uploads the current folder as the job's working dir, but the base config "
                          f"{config} lies outside it; run rl.ablate from the folder that holds the config")
    args = ["--config", os.path.relpath(config) if submit else config, *overrides, f"output_dir={out}"]
    if seed is not None:
        args.append(f"seed={seed}")
    if not submit:
        return [sys.executable, "-m", "rl.train", *args]
    ray = str(Path(sys.executable).parent / "ray")
    return [ray, "job", "submit", "--address", address, "--working-dir", ".", "--", "python", "-m", "rl.train", *args]


def stale_cells(grid: GridSpec, cells: list[Cell], start_overrides: dict[int, list[str]]) -> list[tuple[Cell, str]]:
    """Cells whose existing result came from another config than the grid now gives them (an
    edited grid file): reusing them would put another config's numbers in the table."""
    from rl.config import load_train_config
    from rl.configlib import to_dict
    from rl.provenance import describe_changes, recorded_changes

    out = []
    for cell in cells:
        if cell.result_path.exists() and (cell.out / "config.json").exists():
            want = to_dict(load_train_config(grid.config, [*cell.overrides, *start_overrides.get(cell.seed, []),
                                                           f"output_dir={cell.out}",
                                                           f"seed={cell.seed}"]))
            changed = recorded_changes(cell.out, want)
            if changed:
                out.append((cell, describe_changes(changed)))
    return out


Runner = Callable[[list[str], Path, int], int]


def subprocess_runner(cmd: list[str], log: Path, timeout_s: int) -> int:
    """Run one command, its output going to `log`; returns the exit code (124 on timeout)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    with log.open("w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        try:
            return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            fh.write(f"\n[ablate] timed out after {timeout_s} s\n")
            return 124


@dataclass
class Outcome:
    cell: Cell
    status: str  # "done" | "skipped" (result existed) | "failed"
    seconds: float = 0.0
    returncode: int = 0


def run_grid(grid: GridSpec, *, submit: bool = False, address: str = "http://127.0.0.1:8265",
             runner: Runner = subprocess_runner, dry_run: bool = False) -> list[Outcome]:
    """Run the setup (once) and every cell whose result is missing; write the tables."""
    cells = expand(grid)
    out = Path(grid.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start_overrides: dict[int, list[str]] = {seed: [] for seed in grid.seeds}
    sdirs = setup_dirs(grid)
    for sdir in dict.fromkeys(sdirs.values()):  # each distinct setup folder once, seed order
        seed = next(k for k, d in sdirs.items() if d == sdir)
        label = f"setup (seed {seed})" if grid.setup.per_seed else "setup"
        if (sdir / RESULT).exists():
            print(f"[ablate] {label}: result exists in {sdir}; skipped", flush=True)
        else:
            cmd = train_command(grid.config, [*grid.overrides, *grid.setup.overrides], sdir,
                                seed if grid.setup.per_seed else None, submit, address)
            print(f"[ablate] {label} -> {sdir}\n  $ {' '.join(cmd)}", flush=True)
            if not dry_run:
                code = runner(cmd, sdir / "ablate.log", grid.timeout_s)
                if code != 0 or not (sdir / RESULT).exists():
                    raise RuntimeError(f"{label} run failed (exit {code}); see {sdir / 'ablate.log'}")
        policy = "<final policy of the setup run>" if dry_run and not (sdir / RESULT).exists() else final_policy(sdir)
        for k, d in sdirs.items():
            if d == sdir:
                start_overrides[k] = [f"policy.name_or_path={policy}"]
    stale = stale_cells(grid, cells, start_overrides)
    if stale:
        raise ConfigError("results of a different config in " + " | ".join(f"{c.out}: {why}" for c, why in stale)
                          + "; delete those cell folders to rerun them, or give the grid a new output_dir")
    outcomes = []
    for i, cell in enumerate(cells, 1):
        if cell.result_path.exists():
            print(f"[ablate] {i}/{len(cells)} {cell.name}: result exists; skipped", flush=True)
            outcomes.append(Outcome(cell, "skipped"))
            continue
        cmd = train_command(grid.config, [*cell.overrides, *start_overrides[cell.seed]], cell.out, cell.seed, submit,
                            address)
        print(f"[ablate] {i}/{len(cells)} {cell.name}\n  $ {' '.join(cmd)}", flush=True)
        if dry_run:
            continue
        t0 = time.perf_counter()
        code = runner(cmd, cell.out / "ablate.log", grid.timeout_s)
        ok = code == 0 and cell.result_path.exists()
        outcomes.append(Outcome(cell, "done" if ok else "failed", time.perf_counter() - t0, code))
        print(f"[ablate] {cell.name}: {'done' if ok else f'FAILED (exit {code}), see ' + str(cell.out / 'ablate.log')} "
              f"in {outcomes[-1].seconds:.0f} s", flush=True)
    if not dry_run:
        write_results(grid, cells, outcomes)
    return outcomes


# ------------------------------------------------------------------ results


def _grpo_tokens(metrics: dict[str, Any], modes: tuple[str, ...]) -> float | None:
    vals = [v for m in modes if (v := _grpo_sum(metrics, f"tokens/{m}")) is not None]
    return sum(vals) if vals else None


def _grpo_sum(metrics: dict[str, Any], key: str) -> float | None:
    vals = [float(r[key]) for r in (metrics.get("grpo") or {}).get("log") or [] if key in r]
    return sum(vals) if vals else None


# Derived columns: computed from a run's metrics.json (names usable in a grid's `columns`).
DERIVED: dict[str, Callable[[dict[str, Any]], Any]] = {
    "grpo_total_tokens": lambda m: _grpo_tokens(m, ("deep", "fast")),
    "grpo_deep_tokens": lambda m: _grpo_tokens(m, ("deep",)),
    "grpo_fast_tokens": lambda m: _grpo_tokens(m, ("fast",)),
    "grpo_seconds": lambda m: (m.get("stage_seconds") or {}).get("grpo"),
    "rlaifv_seconds": lambda m: (m.get("stage_seconds") or {}).get("rlaifv"),
    "rlaifv_pairs": lambda m: sum(r.get("pairs", 0) for r in (m.get("rlaifv") or {}).get("rounds", [])) or 0,
    "rlaifv_labeler_agreement": lambda m: _mean([r.get("labeler_agreement", r.get("self_labeler_agreement"))
                                                  for r in (m.get("rlaifv") or {}).get("rounds", [])]),
    "rlaifv_false_claims_first_round": lambda m: _false_claim_rate(m, 0),
    "rlaifv_false_claims_last_round": lambda m: _false_claim_rate(m, -1),
    "grpo_dropped_groups": lambda m: _grpo_sum(m, "groups/dropped"),
    "grpo_padded_groups": lambda m: _grpo_sum(m, "groups/padded"),
}


def _false_claim_rate(metrics: dict[str, Any], index: int) -> float | None:
    """Ground-truth share of false claims among one round's sampled responses (T > 0): the oracle's
    rejection rate, from the labeler-agreement record or, for the oracle labeler, its own counts."""
    rl = metrics.get("rlaifv") or {}
    rounds = rl.get("rounds") or []
    if not rounds:
        return None
    r = rounds[index]
    agreement = r.get("labeler_agreement")
    if isinstance(agreement, dict) and agreement.get("oracle_rejection_rate") is not None:
        return float(agreement["oracle_rejection_rate"])
    if rl.get("labeler") == "oracle" and r.get("claims"):
        return r["rejected"] / r["claims"]
    return None


def _mean(values: list[Any]) -> float | None:
    nums = [_agreement_value(v) for v in values]
    nums = [v for v in nums if v is not None]
    return sum(nums) / len(nums) if nums else None


def _agreement_value(v: Any) -> float | None:
    if isinstance(v, dict):  # labeler_agreement returns a mapping; its headline is `accuracy`
        v = v.get("accuracy", v.get("agreement"))
    return float(v) if isinstance(v, (int, float)) else None


def lookup(metrics: Any, key: str) -> Any:
    """Value at dotted `key` (list indices allowed), a DERIVED name, or None when absent."""
    if key in DERIVED:
        try:
            return DERIVED[key](metrics)
        except (KeyError, TypeError, ValueError):
            return None
    node = metrics
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def with_setup(metrics: dict[str, Any], setup: dict[str, Any] | None) -> dict[str, Any]:
    """A cell's metrics with the stages of the setup run it started from put in front of its own
    (the cell's stages win), and the headline keys and held-out deltas recomputed: the warm-up ->
    GRPO delta of a GRPO-only cell is then the setup's warm-up against the cell's GRPO."""
    if not setup:
        return metrics
    from rl.report import STAGE_ORDER, headline

    merged = {k: v for k, v in setup.items() if k in STAGE_ORDER and k not in metrics}
    if not merged:
        return metrics
    merged.update(metrics)
    return headline(merged)


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def result_rows(grid: GridSpec, cells: list[Cell], outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One row per cell (axis values, seed, status, columns); a `baseline` row for each setup run;
    a mean row per setting when the grid has several seeds."""
    status = {o.cell.name: o.status for o in outcomes}
    rows: list[dict[str, Any]] = []
    sdirs = setup_dirs(grid)
    setups = {sdir: _read(sdir / RESULT) for sdir in dict.fromkeys(sdirs.values())}
    for sdir, metrics in setups.items():
        if grid.baseline_columns and metrics is not None:
            seed = next(k for k, d in sdirs.items() if d == sdir) if grid.setup.per_seed else ""
            name = f"baseline (setup, seed {seed})" if grid.setup.per_seed else "baseline (setup)"
            row = {"cell": name, **{a: "" for a in grid.axes}, "seed": seed, "status": "done"}
            row.update({col: lookup(metrics, key) for col, key in grid.baseline_columns.items()})
            rows.append(row)
    for cell in cells:
        row: dict[str, Any] = {"cell": cell.name, **cell.settings, "seed": cell.seed}
        if cell.result_path.exists():
            metrics = with_setup(json.loads(cell.result_path.read_text()), setups.get(sdirs.get(cell.seed)))
            row["status"] = status.get(cell.name, "done")
            row.update({col: lookup(metrics, key) for col, key in grid.columns.items()})
        else:
            row["status"] = status.get(cell.name, "missing")
            row.update({col: None for col in grid.columns})
        rows.append(row)
    if grid.reference:
        add_reference(grid, cells, rows)
    if len(grid.seeds) > 1:
        by_setting: dict[tuple, list[dict[str, Any]]] = {}
        for row, cell in zip(rows[-len(cells):], cells, strict=True):
            by_setting.setdefault(tuple(cell.settings.items()), []).append(row)
        for setting, group in by_setting.items():
            done = f"{sum(r['status'] != 'failed' for r in group)}/{len(group)}"
            mean = {"cell": "mean of seeds", **dict(setting), "seed": "all", "status": done}
            spread = {"cell": "std [min, max] of seeds", **dict(setting), "seed": "all", "status": done}
            for col in reach_columns(grid) + list(grid.columns):
                vals = [r.get(col) for r in group]
                vals = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
                mean[col] = sum(vals) / len(vals) if vals else None
                spread[col] = _spread_text(vals)
            rows += [mean, spread]
    return rows


def _spread_text(vals: list[float]) -> str | None:
    """"std [min, max]" of one column over seeds (sample std), or None without numbers."""
    if not vals:
        return None
    from rl.stats import summarise_seeds

    s = summarise_seeds(vals)
    return f"{s.std:.3f} [{s.min:.3f}, {s.max:.3f}]"


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3f}"
    return str(v)


def write_table(rows: list[dict[str, Any]], columns: list[str], folder: Path) -> tuple[Path, Path]:
    """`results.csv` (raw values) and `results.md` (formatted) with the given column order."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = folder / "results.csv", folder / "results.md"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def plot_results(rows: list[dict[str, Any]], columns: list[str], path: Path) -> Path | None:
    """One bar chart per numeric column, cells on the x axis; None when nothing is numeric."""
    numeric = [c for c in columns if any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows)]
    if not numeric:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, len(numeric))
    nrows = math.ceil(len(numeric) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    labels = [str(r["cell"]).replace("__", "\n") for r in rows]
    for ax, col in zip(axes.flat, numeric, strict=False):
        vals = [r.get(col) if isinstance(r.get(col), (int, float)) else 0.0 for r in rows]
        ax.bar(range(len(rows)), vals, color="tab:blue")
        ax.set_title(col, fontsize=9)
        ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=6)
    for ax in list(axes.flat)[len(numeric):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_results(grid: GridSpec, cells: list[Cell], outcomes: list[Outcome]) -> Path:
    rows = result_rows(grid, cells, outcomes)
    columns = ["cell", *grid.axes, "seed", "status", *grid.columns, *reach_columns(grid)]
    columns += [c for c in grid.baseline_columns if c not in columns]
    folder = Path(grid.output_dir).resolve()
    _, md = write_table(rows, columns, folder)
    plot_results(rows, [c for c in columns if c in grid.columns or c in grid.baseline_columns], folder / "comparison.png")
    plot_curves(grid, cells, folder / "curves.png")
    print(f"[ablate] table: {md}\n" + md.read_text(), flush=True)
    return md


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl.ablate", description=__doc__.splitlines()[0])
    parser.add_argument("--grid", required=True, help="grid file, e.g. configs/ablations/thinking_schedules.yaml")
    parser.add_argument("--submit", action="store_true", help="run every run as a `ray job submit` job")
    parser.add_argument("--address", default=os.environ.get("RAY_DASHBOARD_ADDRESS", "http://127.0.0.1:8265"),
                        help="Ray dashboard address for --submit")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--tables-only", action="store_true", help="rewrite the tables from existing results")
    parser.add_argument("--seeds", help="comma-separated seeds replacing the grid's (e.g. 0,1,2)")
    parser.add_argument("--only", action="append", default=[], metavar="AXIS=V1,V2",
                        help="keep only these values of an axis (repeatable)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides added to every run (after the grid's)")
    args = parser.parse_args(argv)
    try:
        grid = load_grid(args.grid)
        grid.overrides = [*grid.overrides, *args.overrides]
        if args.seeds:
            grid.seeds = [int(s) for s in args.seeds.split(",")]
        for item in args.only:
            restrict_axis(grid, item)
        cells = expand(grid)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.tables_only:
        write_results(grid, cells, [])
        return 0
    outcomes = run_grid(grid, submit=args.submit, address=args.address, dry_run=args.dry_run)
    failed = [o.cell.name for o in outcomes if o.status == "failed"]
    if failed:
        print(f"[ablate] {len(failed)} cell(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

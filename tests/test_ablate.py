"""Ablation runner: grid expansion, setup sharing, result skipping, tables; a real two-cell grid."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rl.ablate import (
    expand,
    load_grid,
    lookup,
    restrict_axis,
    run_grid,
    setup_dir,
    write_table,
)
from rl.configlib import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _grid_file(tmp_path: Path, body: str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body.replace("OUT", str(tmp_path / "out")).replace("CONFIG", str(ROOT / "configs" / "smoke.yaml")))
    return path


GRID = """
name: g
config: CONFIG
output_dir: OUT
overrides: [grpo.steps=1]
setup: {overrides: ["stages=[warmup]"]}
cell_overrides: ["stages=[grpo]"]
seeds: [0, 1]
axes:
  schedule:
    deep: [rollout.schedule.kind=deep_only]
    fast: [rollout.schedule.kind=fast_only]
  lr:
    low: [grpo.learning_rate=1e-5]
    high: [grpo.learning_rate=1e-4]
    mid: []
columns:
  acc: grpo.heldout_accuracy.deep
  tokens: grpo_total_tokens
"""


def _fake_result(run_dir: Path, acc: float, tokens: list[int]) -> None:
    (run_dir / "report").mkdir(parents=True, exist_ok=True)
    metrics = {"grpo": {"heldout_accuracy": {"deep": acc}, "log": [{"step": i, "tokens/deep": t, "tokens/fast": 1} for i, t in enumerate(tokens)]}}
    (run_dir / "report" / "metrics.json").write_text(json.dumps(metrics))


def _fake_setup(sdir: Path) -> None:
    (sdir / "stages").mkdir(parents=True, exist_ok=True)
    (sdir / "config.json").write_text(json.dumps({"stages": ["warmup"]}))
    (sdir / "stages" / "warmup.json").write_text(json.dumps({"metrics": {}, "model_path": str(sdir / "policy_warmup")}))
    _fake_result(sdir, 0.1, [1])


def test_grid_expands_to_the_product_of_axes_times_seeds(tmp_path):
    grid = load_grid(_grid_file(tmp_path, GRID))
    cells = expand(grid)
    assert len(cells) == 2 * 3 * 2
    names = [c.name for c in cells]
    assert len(set(names)) == len(names)
    first = cells[0]
    assert first.settings == {"schedule": "deep", "lr": "low"} and first.seed == 0
    assert first.overrides == ["grpo.steps=1", "stages=[grpo]", "rollout.schedule.kind=deep_only", "grpo.learning_rate=1e-5"]
    assert cells[1].seed == 1 and cells[1].settings == first.settings
    assert first.name == "schedule-deep__lr-low" and cells[1].name == "schedule-deep__lr-low__seed-1"
    assert all(c.out.parent == (tmp_path / "out" / "cells") for c in cells)


def test_only_and_seeds_restrict_the_grid_and_reuse_seed_zero_names(tmp_path):
    grid = load_grid(_grid_file(tmp_path, GRID))
    restrict_axis(grid, "lr=mid,high")
    grid.seeds = [0, 2]
    names = [c.name for c in expand(grid)]
    assert names == ["schedule-deep__lr-high", "schedule-deep__lr-high__seed-2", "schedule-deep__lr-mid",
                     "schedule-deep__lr-mid__seed-2", "schedule-fast__lr-high", "schedule-fast__lr-high__seed-2",
                     "schedule-fast__lr-mid", "schedule-fast__lr-mid__seed-2"]
    with pytest.raises(ConfigError, match="no axis 'nope'"):
        restrict_axis(grid, "nope=a")
    with pytest.raises(ConfigError, match="unknown value"):
        restrict_axis(grid, "lr=low")


def test_grids_with_the_same_setup_share_one_setup_run_and_a_changed_setup_does_not(tmp_path):
    a = load_grid(_grid_file(tmp_path, GRID, "a.yaml"))
    b = load_grid(_grid_file(tmp_path, GRID.replace("name: g", "name: other").replace("seeds: [0, 1]", "seeds: [3]"), "b.yaml"))
    c = load_grid(_grid_file(tmp_path, GRID.replace("overrides: [grpo.steps=1]", "overrides: [grpo.steps=2]"), "c.yaml"))
    assert setup_dir(a) == setup_dir(b)
    assert setup_dir(a) != setup_dir(c)


@pytest.mark.parametrize("body, needle", [
    (GRID.replace("name: g", "name: g\nbogus: 1"), "bogus"),
    (GRID.replace("CONFIG", "/nonexistent/base.yaml"), "does not exist"),
    (GRID.replace("cell_overrides: [\"stages=[grpo]\"]", "cell_overrides: [seed=3]"), "sets output_dir and seed"),
    (GRID.replace("cell_overrides: [\"stages=[grpo]\"]", "cell_overrides: [nonsense]"), "key=value"),
])
def test_bad_grid_files_name_the_problem(tmp_path, body, needle):
    with pytest.raises(ConfigError, match=needle):
        load_grid(_grid_file(tmp_path, body))


def test_runner_skips_existing_results_runs_the_rest_and_records_failures(tmp_path):
    grid = load_grid(_grid_file(tmp_path, GRID.replace("seeds: [0, 1]", "seeds: [0]")))
    cells = expand(grid)
    _fake_setup(setup_dir(grid))
    _fake_result(cells[0].out, 0.5, [10, 20])  # already done: must not run again
    calls: list[list[str]] = []

    def fake_runner(cmd: list[str], log: Path, timeout_s: int) -> int:
        calls.append(cmd)
        out = Path(next(a for a in cmd if a.startswith("output_dir=")).split("=", 1)[1])
        if "grpo.learning_rate=1e-4" in cmd:
            return 1  # these cells fail without a result
        _fake_result(out, 0.25, [5])
        return 0

    outcomes = run_grid(grid, runner=fake_runner)
    status = {o.cell.name: o.status for o in outcomes}
    assert status[cells[0].name] == "skipped"
    assert len(calls) == len(cells) - 1
    assert all(f"policy.name_or_path={setup_dir(grid) / 'policy_warmup'}" in cmd for cmd in calls)
    assert sorted(status.values()).count("failed") == 2
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    by_cell = {r["cell"]: r for r in rows}
    assert float(by_cell[cells[0].name]["acc"]) == 0.5 and float(by_cell[cells[0].name]["tokens"]) == 32
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and all(r["acc"] == "" for r in failed)
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 0
    # A second invocation runs only what failed before.
    calls.clear()
    run_grid(grid, runner=fake_runner)
    assert len(calls) == 2


def _eval(scores: dict[str, float]) -> dict:
    """A stage's held-out eval of short `count` questions, both modes scoring the same."""
    return {"scores": {m: dict(scores) for m in ("deep", "fast")}, "questions": {q: ["short", "count"] for q in scores}}


def test_per_seed_setup_trains_one_start_per_seed_and_deltas_use_that_seeds_warmup(tmp_path):
    """Seed k's cells start from setup k, and a GRPO-only cell's warm-up -> GRPO delta pairs its own
    GRPO scores with its seed's warm-up scores on the same questions."""
    body = (GRID.replace('setup: {overrides: ["stages=[warmup]"]}', 'setup: {overrides: ["stages=[warmup]"], per_seed: true}')
            .replace("  tokens: grpo_total_tokens", "  delta: heldout_deltas.stages.warmup->grpo.all.deep.delta")
            + "baseline_columns:\n  warm: warmup.heldout_accuracy.deep\n")
    grid = load_grid(_grid_file(tmp_path, body))
    restrict_axis(grid, "schedule=deep")
    restrict_axis(grid, "lr=mid")
    assert setup_dir(grid, 0) != setup_dir(grid, 1) and setup_dir(grid, 0).parent == setup_dir(grid, 1).parent
    questions = [f"q{i}" for i in range(10)]
    calls: list[list[str]] = []

    def fake_runner(cmd: list[str], log: Path, timeout_s: int) -> int:
        calls.append(cmd)
        out = Path(next(a for a in cmd if a.startswith("output_dir=")).split("=", 1)[1])
        seed = int(next(a for a in cmd if a.startswith("seed=")).split("=", 1)[1])
        if "stages=[warmup]" in cmd:  # setup: seed 0's warm-up gets 2 of 10 right, seed 1's gets 6
            _fake_setup(out)
            right = 2 if seed == 0 else 6
            metrics = {"warmup": {"heldout_accuracy": {"deep": right / 10},
                                  "eval": _eval({q: float(i < right) for i, q in enumerate(questions)})}}
        else:  # every cell's GRPO gets 7 of 10 right
            metrics = {"grpo": {"heldout_accuracy": {"deep": 0.7}, "log": [],
                                "eval": _eval({q: float(i < 7) for i, q in enumerate(questions)})}}
        (out / "report").mkdir(parents=True, exist_ok=True)
        (out / "report" / "metrics.json").write_text(json.dumps(metrics))
        return 0

    run_grid(grid, runner=fake_runner)
    setups = [c for c in calls if "stages=[warmup]" in c]
    assert [c[-1] for c in setups] == ["seed=0", "seed=1"]  # one setup per seed, seeded
    cells = [c for c in calls if "stages=[warmup]" not in c]
    for cmd in cells:
        seed = int(cmd[-1].split("=")[1])
        assert f"policy.name_or_path={setup_dir(grid, seed) / 'policy_warmup'}" in cmd
    rows = {r["cell"]: r for r in csv.DictReader((tmp_path / "out" / "results.csv").open())}
    assert float(rows["baseline (setup, seed 0)"]["warm"]) == 0.2 and float(rows["baseline (setup, seed 1)"]["warm"]) == 0.6
    assert float(rows["schedule-deep__lr-mid"]["delta"]) == pytest.approx(0.5)
    assert float(rows["schedule-deep__lr-mid__seed-1"]["delta"]) == pytest.approx(0.1)
    # A rerun finds every setup and cell.
    calls.clear()
    run_grid(grid, runner=fake_runner)
    assert calls == []


def test_with_setup_keeps_the_cells_own_stages_and_leaves_setup_free_runs_alone():
    from rl.ablate import with_setup

    cell = {"grpo": {"eval": _eval({"a": 1.0, "b": 1.0})}}
    assert with_setup(cell, None) is cell
    assert "heldout_deltas" not in with_setup(cell, {"wall_seconds": 3})  # nothing stage-like to add
    merged = with_setup(cell, {"warmup": {"eval": _eval({"a": 0.0, "b": 1.0})}, "grpo": {"eval": _eval({"a": 0.0})}})
    assert merged["grpo"] is cell["grpo"]  # the cell's GRPO, not the setup's
    assert merged["heldout_deltas"]["stages"]["warmup->grpo"]["all"]["deep"]["delta"] == pytest.approx(0.5)


def test_a_cell_whose_result_came_from_another_config_is_refused_not_reused(tmp_path):
    """An edited grid must not put the old config's numbers in the new table."""
    from rl.config import load_train_config
    from rl.configlib import ConfigError, to_dict
    from rl.provenance import check_run_folder, record_invocation

    grid = load_grid(_grid_file(tmp_path, GRID.replace("seeds: [0, 1]", "seeds: [0]")))
    cell = expand(grid)[0]
    _fake_setup(setup_dir(grid))
    start = [f"policy.name_or_path={setup_dir(grid) / 'policy_warmup'}"]

    def record(*extra: str) -> None:
        cfg = to_dict(load_train_config(grid.config, [*cell.overrides, *start, *extra, f"output_dir={cell.out}",
                                                      f"seed={cell.seed}"]))
        record_invocation(cell.out, cfg, check_run_folder(cell.out, cfg))
        _fake_result(cell.out, 0.5, [10])

    record("grpo.steps=77")  # the result of a grid file that said 77 steps
    with pytest.raises(ConfigError, match=rf"{cell.name}: grpo\.steps: 77 -> "):
        run_grid(grid, runner=lambda cmd, log, t: 1)
    record()  # the same config the grid gives the cell now: reused
    outcomes = run_grid(grid, runner=lambda cmd, log, t: 1)
    assert {o.cell.name: o.status for o in outcomes}[cell.name] == "skipped"


def test_submit_refuses_a_base_config_outside_the_uploaded_folder(tmp_path):
    from rl.ablate import train_command

    outside = tmp_path / "base.yaml"
    with pytest.raises(ConfigError, match="outside it"):
        train_command(str(outside), [], tmp_path / "run", 0, submit=True, address="http://127.0.0.1:8265")
    cmd = train_command(str(ROOT / "configs" / "smoke.yaml"), [], tmp_path / "run", 0, submit=False, address="")
    assert cmd[1:3] == ["-m", "rl.train"]


def test_table_writer_formats_numbers_and_missing_values(tmp_path):
    rows = [{"cell": "a", "x": 0.123456, "y": None, "z": 12345.6}, {"cell": "b", "x": 1, "y": "text", "z": float("nan")}]
    csv_path, md_path = write_table(rows, ["cell", "x", "y", "z"], tmp_path)
    md = md_path.read_text().splitlines()
    assert md[0] == "| cell | x | y | z |"
    assert md[2] == "| a | 0.123 | – | 12346 |"
    assert md[3] == "| b | 1 | text | nan |"
    assert list(csv.DictReader(csv_path.open()))[0] == {"cell": "a", "x": "0.123456", "y": "", "z": "12345.6"}


def test_curve_accumulates_tokens_and_smooths_only_steps_with_the_key():
    from rl.ablate_curves import curve

    log = [{"tokens/deep": 10, "tokens/fast": 2, "deep/accuracy": 0.0, "deep/count": 4},
           {"tokens/deep": 0, "tokens/fast": 5, "deep/count": 0},
           {"tokens/deep": 20, "tokens/fast": 0, "deep/accuracy": 1.0, "deep/count": 8},
           {"loss": 1.0}]
    xs, ys = curve({"grpo": {"log": log}}, "deep/accuracy", window=2)
    assert xs == [12.0, 37.0] and ys == [0.0, 0.5]


def test_lookup_reads_dotted_keys_list_indices_and_derived_columns():
    m = {"rlaifv": {"chair_i": {"per_round": [0.5, 0.4]}}, "grpo": {"log": [{"tokens/deep": 3, "tokens/fast": 2}, {"tokens/deep": 1}]}}
    assert lookup(m, "rlaifv.chair_i.per_round.1") == 0.4
    assert lookup(m, "rlaifv.chair_i.per_round.5") is None
    assert lookup(m, "grpo_total_tokens") == 6
    assert lookup(m, "grpo_fast_tokens") == 2
    assert lookup(m, "missing.key") is None
    oracle = {"rlaifv": {"labeler": "oracle", "rounds": [{"claims": 10, "rejected": 4}, {"claims": 10, "rejected": 2}]}}
    assert lookup(oracle, "rlaifv_false_claims_first_round") == 0.4 and lookup(oracle, "rlaifv_false_claims_last_round") == 0.2
    judged = {"rlaifv": {"labeler": "self", "rounds": [{"claims": 10, "rejected": 9, "labeler_agreement": {"oracle_rejection_rate": 0.3}}]}}
    assert lookup(judged, "rlaifv_false_claims_first_round") == 0.3


# Two cells of the smoke config from a shared 2-step warm-up (the real-run tests below).
SMOKE_GRID = """
name: smoke2
config: CONFIG
output_dir: OUT
overrides: [grpo.steps=1, warmup.steps=2, eval.max_examples=4{extra}]
setup: {{overrides: ["stages=[warmup]"]}}
cell_overrides: ["stages=[grpo]"]
axes:
  schedule:
    deep_only: [rollout.schedule.kind=deep_only]
    fast_only: [rollout.schedule.kind=fast_only]
baseline_columns:
  acc_deep: warmup.heldout_accuracy.deep
columns:
  acc_deep: grpo.heldout_accuracy.deep
  train_tokens_deep: grpo_deep_tokens
  train_tokens_fast: grpo_fast_tokens
"""


def _env() -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    return dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token", TRL_EXPERIMENTAL_SILENCE="1",
                PATH=f"{bin_dir}:{os.environ.get('PATH', '')}")


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.vllm
def test_submitted_grid_runs_every_cell_as_a_ray_job_writes_the_table_and_a_rerun_skips_it(tmp_path):
    from tests.test_pipeline import _free_port

    grid = _grid_file(tmp_path, SMOKE_GRID.format(extra=""))
    bin_dir = Path(sys.executable).parent
    env = _env()
    port, dash = _free_port(), _free_port()
    start = subprocess.run([str(bin_dir / "ray"), "start", "--head", "--num-cpus", "2", "--port", str(port),
                            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true"],
                           env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        proc = subprocess.run([sys.executable, "-m", "rl.ablate", "--grid", str(grid), "--submit", "--address",
                               f"http://127.0.0.1:{dash}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run([str(bin_dir / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("ray job submit") == 3  # the setup and both cells went through the job API
    logs = [(tmp_path / "out" / "cells" / c / "ablate.log").read_text() for c in ("schedule-deep_only", "schedule-fast_only")]
    assert all("succeeded" in log.lower() for log in logs)
    rows = {r["cell"]: r for r in csv.DictReader((tmp_path / "out" / "results.csv").open())}
    assert set(rows) == {"baseline (setup)", "schedule-deep_only", "schedule-fast_only"}
    assert all(rows[c]["status"] == "done" for c in ("schedule-deep_only", "schedule-fast_only"))
    # The schedule reached the actors: each cell sampled only its own mode.
    assert float(rows["schedule-deep_only"]["train_tokens_deep"]) > 0 and rows["schedule-deep_only"]["train_tokens_fast"] in ("", "0.0")
    assert float(rows["schedule-fast_only"]["train_tokens_fast"]) > 0 and rows["schedule-fast_only"]["train_tokens_deep"] in ("", "0.0")
    # A plain (local) rerun of the same grid finds every result and runs nothing.
    again = subprocess.run([sys.executable, "-m", "rl.ablate", "--grid", str(grid)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("result exists") == 3


def test_curve_over_seconds_and_time_to_reach_the_reference_cells_final_value(tmp_path):
    """curve_x=seconds accumulates TRL's step_time; reach_s is when a cell's rolling reward first
    reaches the final rolling reward of the reference cell of the same seed."""
    from rl.ablate import result_rows
    from rl.ablate_curves import curve, time_to_reach

    log = [{"tokens/deep": 1, "step_time": 2.0, "reward": 0.1}, {"tokens/deep": 1, "step_time": 3.0, "reward": 0.3}]
    assert curve({"grpo": {"log": log}}, "reward", window=1, x="seconds") == ([2.0, 5.0], [0.1, 0.3])
    assert time_to_reach([1.0, 2.0, 3.0], [0.1, 0.5, 0.9], 0.5) == 2.0
    assert time_to_reach([1.0], [0.1], 0.5) is None
    assert curve({"grpo": {"log": log}}, "reward", window=2, x="seconds", full_window=True) == ([5.0], [pytest.approx(0.2)])
    body = (GRID.replace("seeds: [0, 1]", "seeds: [0]").replace("  lr:\n    low: [grpo.learning_rate=1e-5]\n"
                                                              "    high: [grpo.learning_rate=1e-4]\n    mid: []\n", "")
            + "curve_window: 1\nreference: schedule=deep\nreach_levels: [0.45]\n")
    grid = load_grid(_grid_file(tmp_path, body))
    cells = {c.settings["schedule"]: c for c in expand(grid)}
    right = {"deep": [1.0] * 6 + [0.0] * 4, "fast": [1.0] * 10}  # per question, 10 questions
    for name, times, rewards in (("deep", [4.0, 4.0], [0.2, 0.4]), ("fast", [1.0, 1.0, 1.0], [0.1, 0.4, 0.5])):
        (cells[name].out / "report").mkdir(parents=True, exist_ok=True)
        steps = [{"tokens/deep": 1, "step_time": t, "reward": r} for t, r in zip(times, rewards, strict=True)]
        scores = {m: {f"q{i}": v for i, v in enumerate(right[name] if m == "deep" else [0.0] * 10)}
                  for m in ("deep", "fast")}
        (cells[name].out / "report" / "metrics.json").write_text(json.dumps({"grpo": {"log": steps, "eval": {"scores": scores}}}))
    rows = {r["cell"]: r for r in result_rows(grid, list(cells.values()), [])}
    assert rows[cells["deep"].name]["reach_s"] == 8.0 and rows[cells["deep"].name]["final_reward"] == 0.4
    assert rows[cells["fast"].name]["reach_s"] == 2.0  # reached the reference's 0.4 at its second step
    assert rows[cells["fast"].name]["reach_0.45_s"] == 3.0 and rows[cells["deep"].name]["reach_0.45_s"] is None
    fast = rows[cells["fast"].name]
    assert fast["vs_ref_deep"] == pytest.approx(0.4) and fast["vs_ref_mean"] == pytest.approx(0.2)  # paired deltas
    assert fast["vs_ref_deep_lo"] <= 0.4 <= fast["vs_ref_deep_hi"] and rows[cells["deep"].name]["vs_ref_deep"] == 0.0

    rec = {"sampled/deep/accuracy": 0.5, "sampled/deep/count": 30, "sampled/fast/accuracy": 0.2, "sampled/fast/count": 10}
    from rl.ablate_curves import sampled_all
    assert sampled_all(rec, "sampled/all/accuracy") == pytest.approx(0.425) and sampled_all({}, "sampled/all/accuracy") is None
    with pytest.raises(ConfigError, match="reference"):
        load_grid(_grid_file(tmp_path, GRID + "reference: schedule=nope\n", "bad.yaml"))

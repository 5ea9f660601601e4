"""GRPO step benchmark (`rl.bench`): the pure parts (process-tree RSS sums, step summaries, speedup,
JSON assembly, table, arguments, the shared run config) without engines, plus the TRL arm on the tiny
model in-process."""

from __future__ import annotations

import json

import pytest

from rl import bench
from rl import bench_stats as stats

# A fake machine: the bench driver (1) started Ray (GCS 2, raylet 3); the raylet runs the engine
# actor (4, with a helper child 6) and an idle worker (5); 7 is an unrelated process.
CHILDREN = {1: [2, 3], 2: [], 3: [4, 5], 4: [6], 5: [], 6: [], 7: []}
CMDLINE = {1: "python -m rl.bench --arm ours", 2: "/ray/gcs_server", 3: "/ray/raylet", 4: "ray::VLLMEngine.generate",
           5: "ray::IDLE", 6: "helper", 7: "other"}
MB = 2**20
RSS = {1: 800 * MB, 2: 50 * MB, 3: 30 * MB, 4: 2000 * MB, 5: 80 * MB, 6: 10 * MB, 7: 999 * MB}


def children_of(pid):
    return CHILDREN.get(pid, [])


def cmdline_of(pid):
    return CMDLINE.get(pid, "")


def rss_of(pid):
    return RSS.get(pid)


def test_descendants_walks_the_tree_once_per_pid():
    assert stats.descendants([1], children_of) == [1, 2, 3, 4, 5, 6]
    assert stats.descendants([3, 4], children_of) == [3, 4, 5, 6]
    assert stats.descendants([9], children_of) == [9]  # unknown pid: itself only


def test_arm_pids_keeps_driver_and_engine_subtrees_only():
    assert stats.arm_pids(1, children_of, cmdline_of, ("ray::VLLMEngine",)) == [1, 4, 6]
    assert sorted(stats.arm_pids(1, children_of, cmdline_of, None)) == [1, 2, 3, 4, 5, 6]  # TRL: whole tree
    # An actor pid reported by the actor itself counts even before its title is set.
    untitled = {**CMDLINE, 4: "python worker"}
    assert stats.arm_pids(1, children_of, untitled.get, ("ray::VLLMEngine",)) == [1]
    assert stats.arm_pids(1, children_of, untitled.get, ("ray::VLLMEngine",), extra_roots=[4]) == [1, 4, 6]


def test_sum_rss_counts_each_pid_once_and_skips_gone_processes():
    assert stats.sum_rss([1, 4, 6], rss_of) == 2810 * MB
    assert stats.sum_rss([1, 1, 4], rss_of) == 2800 * MB
    assert stats.sum_rss([1, 42], rss_of) == 800 * MB  # 42 exited between listing and reading


def test_rss_monitor_keeps_the_peak_of_the_sum():
    rss = dict(RSS)
    mon = stats.RssMonitor(root=1, engine_prefixes=("ray::VLLMEngine",), children_of=children_of,
                           cmdline_of=cmdline_of, rss_of=lambda p: rss.get(p))
    assert mon.sample() == (2810 * MB, 2970 * MB)
    rss[1], rss[4] = 1000 * MB, 1000 * MB  # trainer grows while the engine shrinks: the sum drops
    assert mon.sample() == (2010 * MB, 2170 * MB)
    assert (mon.peak, mon.peak_tree, mon.samples) == (2810 * MB, 2970 * MB, 2)
    mon.add_pids([7])  # an extra root counts in both sums
    assert mon.sample() == (3009 * MB, 3169 * MB)


def test_rss_monitor_reads_each_process_once_per_sample():
    """A process that grows between readings must not make the tree's sum smaller than the arm's
    (that race failed `peak_rss_tree_mb >= peak_rss_mb` now and then)."""
    reads = []

    def growing(pid):
        reads.append(pid)
        return RSS.get(pid, 0) + len(reads) * MB

    mon = stats.RssMonitor(root=1, engine_prefixes=("ray::VLLMEngine",), children_of=children_of,
                           cmdline_of=cmdline_of, rss_of=growing)
    arm, tree = mon.sample()
    assert sorted(reads) == [1, 2, 3, 4, 5, 6] and tree >= arm


def test_rss_monitor_cpu_seconds_of_the_arm():
    cpu = {1: 10.0, 2: 100.0, 4: 5.0, 6: 0.5, 5: 100.0}  # Ray's GCS (2) and idle worker (5) left out
    mon = stats.RssMonitor(root=1, engine_prefixes=("ray::VLLMEngine",), children_of=children_of,
                           cmdline_of=cmdline_of, rss_of=rss_of, cpu_of=cpu.get)
    assert mon.pids() == [1, 4, 6] and mon.cpu_seconds() == pytest.approx(15.5)


def test_rss_monitor_thread_samples_this_process():
    mon = stats.RssMonitor(interval_s=0.01).start()
    mon.stop()
    assert mon.samples >= 1 and mon.peak > 10 * MB and mon.peak_tree >= mon.peak


def test_speedup():
    assert stats.speedup(6.0, 3.0) == 2.0 and stats.ratio(6.0, 3.0) == 2.0
    assert stats.speedup(1.0, 4.0) == 0.25
    assert stats.speedup(None, 3.0) is None and stats.speedup(2.0, 0.0) is None and stats.speedup(2.0, None) is None


def test_summarise_steps_times_the_steps_after_warmup():
    ends = [100.0, 110.0, 112.0, 115.0]  # warm-up step ends at 100 s, then 3 timed steps: 10 + 2 + 3 s
    records = [{"rollout": 50.0, "reward": 5.0, "sync": 5.0, "tokens": 999},  # warm-up: left out
               {"rollout": 6.0, "reward": 0.5, "sync": 1.0, "tokens": 100},
               {"rollout": 1.0, "reward": 0.5, "sync": 0.0, "tokens": 100},
               {"rollout": 2.0, "reward": 0.5, "sync": 0.5, "tokens": 100}]
    s = stats.summarise_steps(ends, records, samples_per_step=8, cpu_at_ends=[50.0, 60.0, 63.0, 68.0])
    assert s["timed_steps"] == 3 and s["timed_seconds"] == pytest.approx(15.0)
    assert s["step_seconds"] == pytest.approx([10.0, 2.0, 3.0]) and s["median_step_seconds"] == pytest.approx(3.0)
    assert s["cpu_seconds_per_step"] == pytest.approx(6.0)
    assert [r["cpu"] for r in s["per_step"]] == pytest.approx([10.0, 3.0, 5.0])
    assert s["per_step"][0] == pytest.approx({"wall": 10.0, "rollout": 6.0, "reward": 0.5, "sync": 1.0, "cpu": 10.0})
    assert stats.summarise_steps(ends, records, 8)["cpu_seconds_per_step"] is None
    assert s["samples"] == 24 and s["samples_per_s"] == pytest.approx(24 / 15)
    assert s["completion_tokens"] == 300 and s["tokens_per_s"] == pytest.approx(20.0)
    assert s["mean_completion_tokens"] == pytest.approx(12.5)
    b = s["breakdown"]
    assert b["step"] == pytest.approx(5.0) and b["rollout"] == pytest.approx(3.0)
    assert b["reward"] == pytest.approx(0.5) and b["sync"] == pytest.approx(0.5)
    assert b["train"] == pytest.approx(1.0)  # step - rollout - reward - sync
    assert stats.summarise_steps(ends, [{k: v for k, v in r.items() if k != "sync"} for r in records], 8)[
        "breakdown"]["sync"] == 0.0  # TRL without vLLM has no sync
    with pytest.raises(ValueError):
        stats.summarise_steps([100.0], records[:1], 8)  # warm-up only
    with pytest.raises(ValueError):
        stats.summarise_steps(ends, records[:2], 8)  # a step without its record


def test_colocate_entry():
    ran = {"ran": True, "samples_per_s": 3.0, "tokens_per_s": 90.0, "peak_rss_mb": 2000.0, "breakdown": {"step": 1.0},
           "prompt_ids": [["a"]]}
    assert stats.colocate_entry(ran) == {"ran": True, "samples_per_s": 3.0, "tokens_per_s": 90.0,
                                         "peak_rss_mb": 2000.0, "breakdown": {"step": 1.0}}
    failed = {"ran": False, "error": "\nAttributeError: 'Parameter' object has no attribute 'weight_loader'\n  at x"}
    assert stats.colocate_entry(failed) == {"ran": False,
                                            "error": "AttributeError: 'Parameter' object has no attribute 'weight_loader'"}
    assert stats.colocate_entry(None, "timed out after 600 s") == {"ran": False, "error": "timed out after 600 s"}


def _arm(sps, prompts):
    return {"samples_per_s": sps, "tokens_per_s": sps * 60, "peak_rss_mb": 1000.0, "peak_rss_tree_mb": 1500.0,
            "mean_completion_tokens": 60.0, "step_seconds": [1.0, 1.1], "median_step_seconds": 32 / sps,
            "cpu_seconds_per_step": 64 / sps, "load_average": {"start": [1.0, 1.0, 1.0], "end": [2.0, 1.0, 1.0]},
            "breakdown": {"rollout": 0.5, "reward": 0.01, "sync": 0.1, "train": 0.4, "step": 1.01},
            "prompt_ids": prompts, "threads": 2, "engine_threads": 1}


def test_assemble_has_the_keys_and_the_speedup():
    settings = {"size": "small", "num_params": 22_000_000, "steps": 3, "prompts_per_step": 4,
                "num_generations": 8, "max_tokens": 64, "std_filter": False}
    versions = {"torch": "2.13.0", "trl": "1.16.0", "vllm": "0.32.0"}
    col = {"ran": False, "error": "boom"}
    res = stats.assemble(settings, _arm(8.0, [["a", "b"]]), _arm(2.0, [["a", "b"]]), col, versions,
                         sweep=[{"size": "tiny", "prompts_per_step": 4, "arm": "ours", "step_seconds": 1.0,
                                 "samples_per_s": 32.0}])
    for key in ("ours_samples_per_s", "trl_samples_per_s", "speedup_vs_trl", "ours_tokens_per_s", "trl_tokens_per_s",
                "ours_peak_rss_mb", "trl_peak_rss_mb", "breakdown_seconds", "size", "num_params", "steps",
                "prompts_per_step", "num_generations", "max_tokens", "trl_vllm_colocate", "torch_version",
                "trl_version", "vllm_version", "sweep", "std_filter", "same_prompts"):
        assert key in res, key
    assert res["speedup_vs_trl"] == pytest.approx(4.0)
    assert res["speedup_vs_trl_median_step"] == pytest.approx(4.0) and res["cpu_speedup_vs_trl"] == pytest.approx(4.0)
    assert res["ours_cpu_seconds_per_step"] == pytest.approx(8.0) and res["trl_median_step_seconds"] == 16.0
    assert set(res["breakdown_seconds"]) == {"ours", "trl"}
    assert set(res["breakdown_seconds"]["trl"]) == {"rollout", "reward", "sync", "train", "step"}
    assert res["same_prompts"] is True and res["trl_vllm_colocate"] == col and res["std_filter"] is False
    assert stats.assemble(settings, _arm(8.0, [["a"]]), _arm(2.0, [["b"]]), col, versions)["same_prompts"] is False
    json.dumps(res)  # serialisable as is
    table = stats.format_table(res)
    assert "ours (pool + vLLM actor)" in table and "TRL (transformers gen.)" in table
    assert "4.00x" in table and "did not run (boom)" in table and "sweep" in table and "ours 1.0/2.0" in table


def test_parse_args_defaults_and_checks():
    args = bench.parse_args(["--json", "x.json"])
    assert (args.size, args.steps, args.prompts_per_step, args.num_generations, args.max_tokens) == ("small", 3, 4, 8, 64)
    assert args.threads == stats.available_cores() and args.engine_threads == 0 and not args.sweep
    args = bench.parse_args(["--json", "x.json", "--size", "tiny", "--steps", "1", "--prompts-per-step", "2",
                             "--num-generations", "2", "--max-tokens", "8", "--sweep", "--threads", "1"])
    assert (args.size, args.steps, args.prompts_per_step, args.num_generations, args.max_tokens, args.threads) == (
        "tiny", 1, 2, 2, 8, 1) and args.sweep
    for bad in ([], ["--json", "x", "--num-generations", "1"], ["--json", "x", "--steps", "0"],
                ["--json", "x", "--size", "huge"], ["--arm", "ours"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_bench_config_is_the_fair_setup(tmp_path):
    args = bench.parse_args(["--json", "x.json", "--steps", "2", "--prompts-per-step", "3", "--num-generations", "4",
                             "--max-tokens", "16"])
    args.model_dir = "/models/m"
    cfg = bench.bench_config(args, str(tmp_path))
    assert cfg.grpo.steps == 3  # + the warm-up step
    assert (cfg.grpo.prompts_per_step, cfg.grpo.num_generations, cfg.grpo.tasks) == (3, 4, ["short"])
    assert cfg.rollout.schedule.kind == "deep_only" and cfg.rollout.max_tokens == {"deep": 16, "fast": 16}
    assert cfg.rollout.temperature == 1.0 and cfg.rollout.dtype == "float32" and cfg.policy.dtype == "float32"
    assert cfg.rewards.std_filter.enabled is False and cfg.policy.name_or_path == "/models/m"
    assert cfg.grpo.save_steps == 0 and cfg.grpo.trl["report_to"] == []
    assert cfg.grpo.old_logps == "sampler"  # the pipeline's default: one forward per step
    args.no_is_correction = True
    cfg = bench.bench_config(args, str(tmp_path))
    assert cfg.grpo.old_logps == "trainer" and cfg.grpo.trl["vllm_importance_sampling_correction"] is False


def test_versions_names_the_three_stacks():
    v = stats.versions()
    assert set(v) >= {"torch", "trl", "vllm"} and all(isinstance(x, str) for x in v.values())


def test_trl_arm_in_process(tiny_model_dir, tmp_path):
    """The TRL arm on the tiny model, in this process (a full two-arm run through the command line
    takes 90-145 s on the shared 2 cores, measured: too slow for the suite). Checks the arm's
    result file: throughput, breakdown, prompts, peak RSS."""
    out = tmp_path / "trl.json"
    args = bench.parse_args(["--arm", "trl", "--arm-out", str(out), "--model-dir", tiny_model_dir,
                             "--workdir", str(tmp_path / "work"), "--size", "tiny", "--steps", "1",
                             "--prompts-per-step", "2", "--num-generations", "2", "--max-tokens", "8"])
    assert bench.run_arm(args) == 0
    res = json.loads(out.read_text())
    assert res["ran"] is True and res["timed_steps"] == 1 and res["samples"] == 4
    assert res["cpu_seconds_per_step"] > 0 and set(res["load_average"]) == {"start", "end"}
    assert res["samples_per_s"] > 0 and res["tokens_per_s"] > 0 and 0 < res["mean_completion_tokens"] <= 8
    b = res["breakdown"]
    assert set(b) == {"rollout", "reward", "sync", "train", "step"}
    assert b["rollout"] > 0 and b["reward"] >= 0 and b["sync"] == 0 and b["step"] >= b["rollout"] + b["reward"]
    assert b["train"] == pytest.approx(b["step"] - b["rollout"] - b["reward"])
    assert len(res["prompt_ids"]) == 1 and len(res["prompt_ids"][0]) == 2  # one timed step of 2 prompts
    assert res["modes"] == ["deep"] and res["threads"] == args.threads
    assert res["trainable_params"] < res["num_params"]  # vision tower frozen, as in our arm
    assert res["peak_rss_mb"] > 100 and res["peak_rss_tree_mb"] >= res["peak_rss_mb"] and res["rss_samples"] >= 1


def test_main_orchestrates_arms_and_sweep_without_engines(monkeypatch, tmp_path, capsys):
    """The parent process with the arm subprocesses faked: JSON keys, colocate failure, sweep rows
    (the main run's own configuration is reused, not run twice)."""
    launched = []

    def fake_launch(args, arm, model_dir, root, size, prompts_per_step, old_logps=None):
        launched.append((arm, size, prompts_per_step) + ((old_logps,) if old_logps else ()))
        if arm == "trl_vllm_colocate":
            return None, "AttributeError: 'Parameter' object has no attribute 'weight_loader'"
        sps = prompts_per_step * (4.0 if arm == "ours" and old_logps is None else 3.2 if arm == "ours" else 2.0)
        return {**_arm(sps, [["p1", "p2"]]), "modes": ["deep"], "trainable_params": 10, "sync_bytes": 5,
                "breakdown": {"rollout": 1.0, "reward": 0.0, "sync": 0.1, "train": 1.0, "step": 2.1}}, None

    monkeypatch.setattr(bench, "launch", fake_launch)
    monkeypatch.setattr(bench, "build_model", lambda size, seed, root: (str(root / size), 1000))
    out = tmp_path / "res.json"
    assert bench.main(["--json", str(out), "--size", "tiny", "--prompts-per-step", "2", "--sweep"]) == 0
    res = json.loads(out.read_text())
    assert res["speedup_vs_trl"] == pytest.approx(2.0) and res["same_prompts"] is True
    assert res["trl_vllm_colocate"] == {"ran": False,
                                        "error": "AttributeError: 'Parameter' object has no attribute 'weight_loader'"}
    assert [(s["size"], s["prompts_per_step"], s["arm"]) for s in res["sweep"]] == [
        (size, p, arm) for size in ("tiny", "small") for p in (2, 4, 8) for arm in ("ours", "trl")]
    assert res["sweep"][0]["samples_per_s"] == pytest.approx(8.0) and res["sweep"][0]["step_seconds"] == 2.1
    assert launched.count(("ours", "tiny", 2)) == 1  # the main run is reused by the sweep
    assert len(launched) == 3 + 10
    printed = capsys.readouterr().out
    assert "speedup_vs_trl (samples/s): 2.00x" in printed and '"sweep"' in printed
    assert "ours_other_old_logps" not in res
    launched.clear()
    assert bench.main(["--json", str(out), "--size", "tiny", "--prompts-per-step", "2", "--no-colocate",
                       "--compare-old-logps"]) == 0
    res = json.loads(out.read_text())
    assert ("ours", "tiny", 2, "trainer") in launched and res["ours_old_logps"] == "sampler"
    other = res["ours_other_old_logps"]
    assert other["old_logps"] == "trainer" and other["same_prompts"] is True
    assert other["ours_speedup_over_it"] == pytest.approx(1.25) and other["speedup_vs_trl"] == pytest.approx(1.6)


def test_hybrid_result_ratios_and_acceptance():
    from rl.bench_hybrid import hybrid_result, trl_hybrid_rate

    arms = {"ours_sync_t2e2": {"samples_per_s": 50.0, "peak_rss_mb": 3000.0},
            "ours_async_t1e1": {"samples_per_s": 80.0, "peak_rss_mb": 3100.0},
            "ours_async_t2e2": {"ran": False, "error": "boom"},
            "trl_deep": {"samples_per_s": 40.0, "peak_rss_mb": 1500.0},
            "trl_fast": {"samples_per_s": 120.0, "peak_rss_mb": 1100.0}}
    res = hybrid_result({"workload": "hybrid"}, arms)
    assert trl_hybrid_rate(40.0, 120.0) == pytest.approx(60.0) and trl_hybrid_rate(None, 1.0) is None
    assert res["best_ours"] == "ours_async_t1e1" and res["best_sync"] == "ours_sync_t2e2"
    assert res["speedup_async_vs_sync"] == pytest.approx(1.6)
    assert res["speedup_best_ours_vs_trl_mixed"] == pytest.approx(2.0)
    assert res["speedup_best_ours_vs_trl_split_bound"] == pytest.approx(80 / 60)
    assert res["acceptance"] == {"ours_vs_trl_mixed_batch_at_least_1.5x": True,
                                 "ours_vs_trl_split_bound_at_least_1.5x": False,
                                 "async_vs_sync_at_least_1.25x": True}
    assert res["arms"]["ours_async_t2e2"] == {"ran": False, "error": "boom"}  # a failed arm is reported, not dropped
    assert res["same_prompts_ours"] is False  # no prompt ids recorded


def test_async_records_charge_the_trainer_only_for_its_wait_and_snapshot():
    logs = [{"async/trainer_idle_s": 0.1, "async/snapshot_s": 0.01, "time/rollout_s": 0.7, "time/reward_s": 0.02,
             "async/push_s": 0.03, "async/engine_idle_s": 0.2, "async/staleness/max": 1.0}]
    recs = stats.async_records(logs, [{"tokens": 100, "ids": ["a"], "modes": ["deep"]}])
    assert recs[0]["rollout"] == 0.1 and recs[0]["sync"] == 0.01 and recs[0]["reward"] == 0.0
    assert recs[0]["engine_rollout"] == 0.7 and recs[0]["tokens"] == 100 and recs[0]["modes"] == ["deep"]
    assert stats.overlapped_means(recs)["engine_idle"] == 0.2
    curve = stats.reward_curve(10.0, [12.0, 15.0], [{"reward": 0.1}, {"reward": 0.3}])
    assert curve == [{"step": 1, "seconds": 2.0, "reward": 0.1}, {"step": 2, "seconds": 5.0, "reward": 0.3}]


def test_hybrid_config_is_the_demos_grpo_with_the_arm_settings(tmp_path):
    from rl.bench_hybrid import hybrid_config, parse_placement

    args = bench.parse_args(["--json", "x.json", "--workload", "hybrid", "--steps", "2"])
    args.model_dir, args.max_staleness, args.prompts_per_step = "/some/policy", 1, 8
    cfg = hybrid_config(args, str(tmp_path))
    assert cfg.grpo.async_.enabled and cfg.grpo.async_.max_staleness == 1
    assert cfg.grpo.sft_coef == 0 and not cfg.rewards.std_filter.enabled and cfg.grpo.steps == 3
    assert cfg.rollout.schedule.kind == "fixed" and cfg.rollout.max_tokens == {"deep": 96, "fast": 16}
    assert cfg.grpo.length_buckets == 4 and cfg.policy.name_or_path == "/some/policy" and cfg.grpo.prompt_stream
    assert parse_placement("2:1") == (2, 1)
    with pytest.raises(SystemExit, match="TRAINER:ENGINE"):
        parse_placement("two")

"""The main job end to end: smoke run of every stage, `ray job submit`, resume, bad configs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rl.config import load_train_config
from rl.configlib import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token", TRL_EXPERIMENTAL_SILENCE="1",
               TOKENIZERS_PARALLELISM="false", PATH=f"{Path(PY).parent}:{env.get('PATH', '')}")
    return env


def _train(*overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "rl.train", "--config", SMOKE, *overrides], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


# The smoke run of every stage, per model family: tests/test_families_pipeline.py.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ray
def test_ray_job_submit_runs_the_smoke_job(tmp_path):
    ray = str(Path(PY).parent / "ray")
    env = _env()
    port, dash = _free_port(), _free_port()
    start = subprocess.run([ray, "start", "--head", "--num-cpus", "2", "--port", str(port), "--dashboard-host",
                            "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true"],
                           env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        out = tmp_path / "job_run"
        job = subprocess.run(
            [ray, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(ROOT), "--",
             "python", "-m", "rl.train", "--config", "configs/smoke.yaml", f"output_dir={out}",
             "stages=[warmup,grpo]", "warmup.steps=2", "grpo.steps=1"],
            env=env, capture_output=True, text=True, timeout=900, cwd=ROOT,
        )
        assert job.returncode == 0, (job.stdout[-3000:], job.stderr[-2000:])
        assert "succeeded" in job.stdout.lower()
        metrics = json.loads((out / "report" / "metrics.json").read_text())
        assert metrics["steps"]["grpo"] == 1
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def start_until_checkpoint(args: list[str], out: Path, step: int, output: int = subprocess.PIPE,
                           timeout: float = 600) -> subprocess.Popen:
    """Start `args` in its own session and return once GRPO's checkpoint-`step` is complete (asserts
    it was written before `timeout`)."""
    proc = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=output, stderr=output, text=True,
                            start_new_session=True)
    ckpt = out / "grpo" / f"checkpoint-{step}" / "COMPLETE"
    deadline = time.monotonic() + timeout
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ckpt.exists(), "no checkpoint was written before the deadline"
    return proc


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.parametrize("loop", ["sync", "async"])
def test_killed_run_resumes_from_last_complete_checkpoint(tmp_path, loop):
    """SIGKILL mid-GRPO, then the same command: resumes from the last complete checkpoint without
    repeating a step. Async: the batches in flight at the kill are sampled again on resume, and
    no trained batch is older than max_staleness before or after."""
    args = [PY, "-m", "rl.train", "--config", SMOKE, f"output_dir={tmp_path}", "stages=[warmup,grpo]",
            "grpo.steps=4", "grpo.save_steps=1", "ray.trainer_in_actor=false",
            *(["grpo.async.enabled=true"] if loop == "async" else [])]
    proc = start_until_checkpoint(args, tmp_path, 2, subprocess.DEVNULL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "stages" / "grpo.json").exists()
    again = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[warmup] already complete" in again.stdout
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["grpo"]["steps"] == 4
    resumed = metrics["grpo"]["resumed_from"]
    assert resumed and int(resumed.rsplit("-", 1)[1]) >= 2
    steps = [r["step"] for r in metrics["grpo"]["log"] if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 4  # no step logged twice
    if loop == "async":
        stale = {r["step"]: r["async/staleness/max"] for r in metrics["grpo"]["log"] if "loss" in r}
        assert max(stale.values()) <= 1 and stale[1] == 0
        assert stale[int(resumed.rsplit("-", 1)[1]) + 1] == 0  # resumed: the first batch is sampled anew, fresh


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.vllm
def test_sigterm_saves_a_complete_checkpoint_exits_nonzero_and_resumes(tmp_path):
    """SIGTERM to `rl.train` (stages in the Ray actor, as by default) mid-GRPO, with periodic
    saving off: the stop saves checkpoint-N, writes no stage marker, exits 143; the same command
    resumes from it; a changed config on the finished folder is then refused with exit 2."""
    import threading

    args = [PY, "-m", "rl.train", "--config", SMOKE, f"output_dir={tmp_path}", "stages=[warmup,grpo]",
            "grpo.steps=6", "grpo.save_steps=0"]
    proc = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 600
    while not any("'clip_ratio" in ln for ln in lines) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the first GRPO step has been logged (only GRPO logs clip ratios)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 143, err[-3000:]
    assert "interrupted: GRPO stopped after step" in err
    complete = sorted(tmp_path.glob("grpo/checkpoint-*/COMPLETE"))
    assert len(complete) == 1 and not (tmp_path / "stages" / "grpo.json").exists()
    stopped_at = int(complete[0].parent.name.rsplit("-", 1)[1])
    assert 1 <= stopped_at < 6
    state = json.loads((complete[0].parent / "pipeline_state.json").read_text())
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert state["provenance"]["config_hash"] == record["config_hash"]
    again = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["grpo"]["steps"] == 6 and metrics["grpo"]["resumed_from"].endswith(f"checkpoint-{stopped_at}")
    marker = json.loads((tmp_path / "stages" / "grpo.json").read_text())
    assert marker["config_hash"] == record["config_hash"]
    before = (tmp_path / "config.json").read_bytes()
    changed = subprocess.run([*args, "policy.name_or_path=Qwen/Qwen2.5-VL-3B-Instruct"], cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=120)
    assert changed.returncode == 2 and "policy.name_or_path" in changed.stderr
    assert "already complete" not in changed.stdout and (tmp_path / "config.json").read_bytes() == before


@pytest.mark.parametrize(
    "override, message",
    [
        ("stages=[warmup,dance]", r"stages\[1\]': unknown stage 'dance'"),
        ("grpo.stepz=3", r"unknown config key 'grpo\.stepz'"),
        ("grpo.steps=lots", r"'grpo\.steps': expected an integer"),
    ],
)
def test_bad_config_fails_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(SMOKE, [override])


def test_bad_inputs_fail_before_any_actor_starts(tmp_path):
    proc = _train(f"output_dir={tmp_path}/a", f"policy.name_or_path={tmp_path}/no_model", timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q?", "img": "x.png", "answer": "a"}) + "\n")
    proc = _train(f"output_dir={tmp_path}/b", f"data.source={data}", timeout=120)
    assert proc.returncode == 2 and "'image'" in proc.stderr and "data.columns" in proc.stderr
    assert not (tmp_path / "b" / "stages").exists()

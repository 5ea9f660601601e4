"""Trainer groups (`ray.trainer_workers`, `rl.trainer_group`): data-parallel warm-up, DPO and GRPO on
Ray Train workers, the sharded weight gather, the cross-rank checks, a killed worker and resume.

Sorted after tests/test_pipeline.py: it uses the session Ray cluster (see conftest.ray_cluster).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_pipeline import PY, ROOT, SMOKE, _env, start_until_checkpoint

# ------------------------------------------------------------------------------------- pure parts


def test_diverged_params_names_the_parameters_that_differ_between_ranks():
    import torch

    from rl.trainer_group import diverged_params

    same = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    assert diverged_params(same, ["a", "b", "c"]) == []
    off = same.clone()
    off[1, 2] += 1e-12  # a single-ulp-scale difference is still a difference
    assert diverged_params(off, ["a", "b", "c"]) == ["c"]


def test_a_trainer_that_did_not_join_the_group_is_refused():
    from rl.trainer_group import TrainerGroupError, check_distributed

    fake_trainer = SimpleNamespace(accelerator=SimpleNamespace(num_processes=1))
    with pytest.raises(TrainerGroupError, match="1 process.*2 workers.*use_cpu"):
        check_distributed(fake_trainer, 2, "warm-up")
    check_distributed(SimpleNamespace(accelerator=SimpleNamespace(num_processes=2)), 2, "warm-up")


# The shape of Ray Train 2.60's WorkerGroupError text after rank 1 was SIGKILLed mid all-reduce
# (abridged from a real one).
RAY_TRAIN_FAILURE = """Training failed due to worker errors:
[Rank 0 Error Snippet]:
Traceback (most recent call last):
  File "rl/trainer_group.py", line 179, in _entry
    work.wait()
RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:5508.

[Rank 1 Error Snippet]:
A worker health check failed.
Worker info: Worker(
  metadata=ActorMetadata(hostname='vm', node_ip='127.0.0.1', pid=933),
)
The actor died unexpectedly before finishing this task.
The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit detail: \
Worker unexpectedly exits with a connection error code 2. End of file."""


def test_failure_message_names_the_dead_rank_first_and_how_to_resume(tmp_path):
    from rl.trainer_group import failure_message, rank_errors

    errors = rank_errors(RAY_TRAIN_FAILURE)
    assert errors[1] == "died (pid 933): Worker unexpectedly exits with a connection error code 2"
    assert errors[0].startswith("RuntimeError: [gloo") and "Connection closed by peer" in errors[0]
    message = failure_message("grpo", tmp_path, RuntimeError(RAY_TRAIN_FAILURE))
    assert message.index("rank 1 died") < message.index("rank 0: RuntimeError")
    assert "Re-run the same command to resume from the last complete checkpoint" in message
    raised = "[Rank 0 Error Snippet]:\nTraceback:\n  x\nrl.trainer_group.TrainerGroupError: warm-up: the trainer sees 1"
    assert rank_errors(raised) == {0: "rl.trainer_group.TrainerGroupError: warm-up: the trainer sees 1"}


def test_config_refuses_what_a_group_cannot_split():
    from rl.config import load_train_config
    from rl.configlib import ConfigError

    with pytest.raises(ConfigError, match="grpo.prompts_per_step is 3, not a multiple of ray.trainer_workers=2"):
        load_train_config(SMOKE, ["stages=[grpo]", "grpo.prompts_per_step=3", "ray.trainer_workers=2"])
    with pytest.raises(ConfigError, match="warmup.batch_size is 15"):
        load_train_config(SMOKE, ["stages=[warmup]", "warmup.batch_size=15", "ray.trainer_workers=2"])
    with pytest.raises(ConfigError, match="grpo.async.enabled is not supported"):
        load_train_config(SMOKE, ["stages=[grpo]", "grpo.async.enabled=true", "ray.trainer_workers=2"])
    with pytest.raises(ConfigError, match="rollout.backend: vllm"):
        load_train_config(SMOKE, ["stages=[grpo]", "rollout.backend=hf", "ray.trainer_workers=2"])
    with pytest.raises(ConfigError, match="trainer_workers"):
        load_train_config(SMOKE, ["ray.trainer_workers=0"])


def test_bucket_plan_keeps_order_skips_frozen_and_bounds_size():
    import torch

    from rollouts.sharded_sync import plan_buckets

    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
    model[0].weight.requires_grad_(False)
    plan = plan_buckets(model, bucket_mb=10_000 / 2**20)  # 10 kB; a 64x64 fp32 weight is 16 kB
    names = [n for bucket in plan for n, _ in bucket]
    assert names == [n for n, p in model.named_parameters() if p.requires_grad]
    assert [[n for n, _ in b] for b in plan] == [["0.bias"], ["1.weight"], ["1.bias", "2.weight", "2.bias"]]
    assert all(len(b) == 1 or sum(p.numel() * 4 for _, p in b) <= 10_000 for b in plan)  # over-size: alone


# --------------------------------------------------------------------- FSDP2 gather, 2 processes


class FakeStreamPool:
    """Fake rollout pool for the gather test: records the buckets `push_from_ranks` sends."""

    def __init__(self, bucket_mb: float):
        self.cfg = SimpleNamespace(sync=SimpleNamespace(transport="ray", bucket_mb=bucket_mb))
        self.version = 0
        self.sent: list[tuple[list[str], list, bool]] = []

    def sync_stream(self, version, buckets):
        for names, tensors, last in buckets:
            self.sent.append((names, [t.clone() for t in tensors], last))
        self.version = version
        return SimpleNamespace(version=version)


def _fsdp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from rollouts.sharded_sync import FSDP2, gather_kind, push_from_ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.ReLU(), torch.nn.Linear(48, 48), torch.nn.Linear(48, 5))
    model[0].weight.requires_grad_(False)  # a frozen part: never sent
    reference = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    mesh = init_device_mesh("cpu", (world,))
    for layer in (model[0], model[2], model[3]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    assert gather_kind(model) == FSDP2
    local = sum(p.to_local().numel() for p in model.parameters())
    pool = FakeStreamPool(bucket_mb=8_000 / 2**20)
    stats = push_from_ranks(model, pool, rank == 0, dist.barrier)
    if rank == 0:
        torch.save({"sent": pool.sent, "reference": reference, "local": local,
                    "full": sum(p.numel() for p in model.parameters()), "version": stats.version}, f"{out}/sent.pt")
    else:
        assert stats is None and pool.sent == []
    dist.destroy_process_group()


def test_fsdp2_gather_sends_the_unsharded_weights_from_rank_0(tmp_path):
    """`fully_shard` on a 2-process gloo CPU mesh: every rank walks the per-bucket `full_tensor()`
    gathers, rank 0 alone sends, and what it sends equals the unsharded model's trainable weights."""
    import torch
    import torch.multiprocessing as mp

    from tests.test_pipeline import _free_port

    mp.spawn(_fsdp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    got = torch.load(tmp_path / "sent.pt", weights_only=False)
    assert got["local"] < got["full"]  # really sharded: each rank held part of the weights
    names = [n for names, _, _ in got["sent"] for n in names]
    assert names == list(got["reference"])  # trainable only, in order, "0.weight" (frozen) absent
    assert "0.weight" not in names and len(got["sent"]) > 2  # several bounded buckets
    assert [last for *_, last in got["sent"]] == [False] * (len(got["sent"]) - 1) + [True]
    for names, tensors, _ in got["sent"]:
        for n, t in zip(names, tensors, strict=True):
            assert torch.equal(t, got["reference"][n]), n
    assert got["version"] == 1


# ------------------------------------------------------------------ equivalence with one process


def _ctx(out: Path, model_dir: str, workers: int, *overrides: str):
    from rl.config import load_train_config
    from rl.train import preflight

    cfg = load_train_config(SMOKE, [f"output_dir={out}", f"policy.name_or_path={model_dir}", "stages=[warmup]",
                                    f"ray.trainer_workers={workers}", "ray.trainer_num_cpus=0.5", *overrides])
    ctx = preflight(cfg)
    ctx.runner_evaluates = True
    return ctx


def _params(folder: str | Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def _max_gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# fp32 on CPU: DDP averages per-rank gradients (a different summation order from one batch), and the
# processes may run different thread counts. Measured after 3 SGD steps: 7.5e-9 (warm-up and DPO, on
# an AVX-512 machine), against parameter moves above 1e-3 (warm-up) and 1e-5 (DPO).
EQUIVALENCE_TOL = 1e-6


@pytest.mark.ray
@pytest.mark.slow
def test_two_worker_warmup_matches_one_process_with_the_same_global_batch(tmp_path, tiny_model_dir, ray_cluster):
    from rl.stages import warmup

    # Plain SGD: Adam's update hardly depends on the gradient's scale, so a group that summed its
    # ranks' gradients instead of averaging them would pass under Adam; SGD shows it.
    common = ("warmup.steps=3", "warmup.batch_size=8", "warmup.learning_rate=0.05", "warmup.trl.optim=sgd")
    one = _ctx(tmp_path / "one", tiny_model_dir, 1, *common)
    single = warmup.run(one)
    two = _ctx(tmp_path / "two", tiny_model_dir, 2, *common)
    group = warmup.run(two)
    assert single["steps"] == group["steps"] == 3
    assert group["rank_checks"] == 3 and group["group"]["workers"] == 2  # ranks equal after every step
    start = _params(tiny_model_dir)
    a, b = _params(single["policy"]), _params(group["policy"])
    assert _max_gap(a, start) > 1e-3  # both trained
    print(f"warm-up, 2 workers vs 1 process after 3 steps: max |gap| {_max_gap(a, b):.2e}")
    assert _max_gap(a, b) < EQUIVALENCE_TOL
    workers = json.loads((tmp_path / "two" / "workers" / "warmup-rank1.json").read_text())
    assert workers["world_size"] == 2 and workers["pid"] != os.getpid()


def _dpo_rows(ctx, processor, n: int):
    import datasets

    from policies.chat import render_prompt
    from rl.data.rows import row_images

    rows = ctx.data.train.filter(lambda t: t == "description", input_columns="task")
    eos = processor.tokenizer.eos_token
    records = {"prompt": [], "chosen": [], "rejected": [], "images": []}
    for i in range(n):
        row = rows[i]
        records["prompt"].append(render_prompt(processor, list(row["prompt"]), "fast", 1, 0))
        records["chosen"].append(row["answer"] + eos)
        records["rejected"].append("a red circle, a blue square and a green triangle." + eos)
        records["images"].append(row_images(row))
    features = datasets.Features({"prompt": datasets.Value("string"), "chosen": datasets.Value("string"),
                                  "rejected": datasets.Value("string"), "images": datasets.Sequence(datasets.Image())})
    return datasets.Dataset.from_dict(records, features=features)


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.slow
def test_two_worker_dpo_round_matches_one_process_and_reaches_the_pool(tmp_path, tiny_model_dir, rollout_pool):
    """A DPO round on the group (`dpo_round`): the same parameters as one process with the same
    global batch, saved as the round's policy, and pushed from rank 0 to the shared rollout actor,
    which then scores like the saved policy."""
    from policies.loading import PolicyConfig, load_policy
    from policies.scoring import HFScorer
    from rl.stages.rlaifv import dpo_round, dpo_update
    from rl.stages.rlaifv import load_policy as load_stage_policy
    from tests.test_rollouts_pool import _score_request

    common = ("rlaifv.dpo.max_steps=3", "rlaifv.dpo.learning_rate=0.05", "rlaifv.dpo.trl.optim=sgd")  # SGD: see above
    one = _ctx(tmp_path / "one", tiny_model_dir, 1, "rlaifv.dpo.per_device_train_batch_size=4", *common)
    model, processor = load_stage_policy(one)
    dataset = _dpo_rows(one, processor, 12)
    single = dpo_update(one, model, processor, dataset, 0)
    two = _ctx(tmp_path / "two", tiny_model_dir, 2, "rlaifv.dpo.per_device_train_batch_size=2", *common)
    two.engine = rollout_pool
    request = _score_request(processor)
    before = rollout_pool.score([request])[0].logprobs
    try:
        group = dpo_round(two, None, processor, dataset, 0)
        assert single["steps"] == group["steps"] == 3 and group["rank_checks"] == 3
        assert two.model_path == str(tmp_path / "two" / "rlaifv" / "round_0" / "policy")
        assert group["synced_version"] == rollout_pool.version == rollout_pool.health()[0]["version"]
        a = {k: v.detach() for k, v in model.state_dict().items()}
        b = _params(two.model_path)
        assert _max_gap({k: a[k] for k in b}, _params(tiny_model_dir)) > 1e-5  # trained
        print(f"DPO, 2 workers vs 1 process after 3 steps: max |gap| {_max_gap({k: a[k] for k in b}, b):.2e}")
        assert _max_gap({k: a[k] for k in b}, b) < EQUIVALENCE_TOL
        saved, saved_processor, _ = load_policy(PolicyConfig(name_or_path=two.model_path))
        after = rollout_pool.score([request])[0].logprobs
        ref = HFScorer(saved.eval(), saved_processor).score([request])[0].logprobs
        assert max(abs(x - y) for x, y in zip(after, ref, strict=True)) <= 1e-4  # the actor holds rank 0's push
        assert max(abs(x - y) for x, y in zip(after, before, strict=True)) > 1e-5
    finally:  # the session's actor goes back to the tiny model, with catch-up refs for later fault tests
        initial, _, _ = load_policy(PolicyConfig(name_or_path=tiny_model_dir))
        rollout_pool.sync_from_model(initial)


# ------------------------------------------------------------------------ GRPO end to end, a kill


def _train(out: Path, *overrides: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`rl.train` on the smoke config from `out`'s parent folder with a relative output_dir, as a user
    would run it (Ray Train workers do not start in the caller's working directory)."""
    return subprocess.run([PY, "-m", "rl.train", "--config", SMOKE, f"output_dir={out.name}", "ray.num_cpus=4",
                           *overrides], cwd=out.parent, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.slow
def test_smoke_config_on_two_workers_keeps_parity_and_one_process_advantages(tmp_path, tiny_model_dir):
    """The smoke config end to end (warm-up, GRPO, RLAIF-V) on 2 trainer workers with one vLLM
    actor: every sync leaves trainer and sampler within 1e-4 per token over both ranks' rows, the
    ranks stay equal, and GRPO's first batch (rewards, advantages) equals that of a one-process
    GRPO run from the same warm-up policy."""
    group = _train(tmp_path / "two", f"policy.name_or_path={tiny_model_dir}", "ray.trainer_workers=2")
    assert group.returncode == 0, group.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "report" / "metrics.json").read_text())
    assert {"warmup", "grpo", "rlaifv"} <= set(metrics)
    assert metrics["warmup"]["rank_checks"] == metrics["warmup"]["steps"] == 8
    g = metrics["grpo"]
    assert g["steps"] == 2 and g["rank_checks"] == 2 and g["group"]["workers"] == 2
    steps = [r for r in g["log"] if "loss" in r]
    assert len(steps) == 2 and all(r["parity/all/max"] <= 1e-4 for r in steps)
    assert (tmp_path / "two" / "policy_rlaifv" / "model.safetensors").exists()
    single = _train(tmp_path / "one", "stages=[grpo]", f"policy.name_or_path={tmp_path / 'two' / 'policy_warmup'}")
    assert single.returncode == 0, single.stderr[-3000:]
    s = json.loads((tmp_path / "one" / "report" / "metrics.json").read_text())["grpo"]
    assert len(g["first_batch"]["advantages"]) == 4 * 4  # prompts_per_step x num_generations, both ranks
    assert g["first_batch"]["rewards"] == s["first_batch"]["rewards"]  # the same groups were sampled
    gap = max(abs(x - y) for x, y in zip(g["first_batch"]["advantages"], s["first_batch"]["advantages"], strict=True))
    print(f"GRPO 2 workers: parity/all/max per step {[r['parity/all/max'] for r in steps]}; first-batch advantage "
          f"gap to 1 process {gap:.1e}")
    assert gap < 1e-6


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.slow
def test_killed_trainer_worker_ends_the_run_clearly_and_the_rerun_resumes(tmp_path, tiny_model_dir):
    """SIGKILL to rank 1 mid-GRPO: the run exits non-zero naming the group and how to go on; the
    same command resumes from the last complete checkpoint and repeats no step."""
    args = [PY, "-m", "rl.train", "--config", SMOKE, f"output_dir={tmp_path}", "stages=[grpo]", "ray.num_cpus=4",
            f"policy.name_or_path={tiny_model_dir}", "grpo.steps=5", "grpo.save_steps=1", "ray.trainer_workers=2"]
    proc = start_until_checkpoint(args, tmp_path, 2)
    rank1 = json.loads((tmp_path / "workers" / "grpo-rank1.json").read_text())["pid"]
    os.kill(rank1, signal.SIGKILL)
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, err[-3000:]
    print(next(line for line in err.splitlines() if line.startswith("error:")))
    assert "error: trainer group 'grpo' (2 workers) failed: rank 1 died" in err and "Re-run the same command" in err
    assert not (tmp_path / "stages" / "grpo.json").exists()
    again = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())["grpo"]
    resumed = int(metrics["resumed_from"].rsplit("-", 1)[1])
    assert metrics["steps"] == 5 and resumed >= 2
    steps = [r["step"] for r in metrics["log"] if "loss" in r]
    assert steps == [1, 2, 3, 4, 5]  # the checkpoint's history, then the resumed steps: none twice, none skipped

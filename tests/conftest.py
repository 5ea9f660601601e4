"""Shared fixtures: one tiny model per session, one in-process vLLM engine per session.

Environment set here before anything imports vLLM or Ray: engines stay in-process (fast start,
in-place weight reload) and Ray stays on 127.0.0.1.
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """The embedded tiny Idefics3 model, built once per test session."""
    from policies.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny_model") / "model", seed=0, size="tiny"))


@pytest.fixture(scope="session")
def family_model_dir(tmp_path_factory):
    """`family_model_dir(name)`: the tiny model of a family (`policies.tiny.FAMILIES`), built once
    per session on first use."""
    from policies.tiny import build_tiny_model

    built: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in built:
            out = tmp_path_factory.mktemp(f"tiny_{family}") / "model"
            built[family] = str(build_tiny_model(out, seed=0, size="tiny", family=family))
        return built[family]

    return get


@pytest.fixture(scope="session")
def shapes_small():
    """A small Shapes DatasetDict shared by tests that only read it."""
    from rl.data.shapes import make_shapes

    return make_shapes(num_train_images=24, num_heldout_images=8, questions_per_image=2, seed=3)


@pytest.fixture(scope="session")
def vllm_llm(tiny_model_dir):
    """One in-process vLLM engine on the tiny model (fp32, eager) for the whole session."""
    from vllm import LLM

    from policies.families import processor_kwargs

    llm = LLM(
        model=tiny_model_dir,
        mm_processor_kwargs=processor_kwargs(tiny_model_dir),
        dtype="float32",
        max_model_len=1024,
        seed=0,
        enforce_eager=True,
        limit_mm_per_prompt={"image": 1},
    )
    yield llm


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster on 127.0.0.1 for the whole session.

    `tests/test_pipeline.py` runs `ray stop --force`, which also kills this cluster and with it
    the pytest process (a Ray driver exits when its raylet dies): test files that use this fixture
    must sort after `test_pipeline.py` (hence `test_rollouts_*`, `test_rlpr_*`, `test_stage_*`)."""
    import ray

    from rollouts.ray_utils import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def rollout_pool(ray_cluster, tiny_model_dir):
    """One rollout actor (in-process vLLM engine) on the tiny model, shared by the session."""
    from rollouts.config import RolloutConfig
    from rollouts.pool import RolloutPool

    # Three fault tests each kill the actor once: allow more restarts than the default 2.
    pool = RolloutPool(tiny_model_dir, RolloutConfig(num_actors=1, max_tokens={"deep": 48, "fast": 12}, max_restarts=6))
    yield pool
    pool.shutdown()

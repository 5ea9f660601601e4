"""Start or join Ray, kept on loopback on a single machine.

Ray 2.60 on Linux replaces 127.0.0.1 by the machine's address unless
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` is set; with it every listener stays on 127.0.0.1.
Under `ray job submit`, `RAY_ADDRESS` is set and the driver joins that cluster instead.
"""

from __future__ import annotations

import os
from typing import Any

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
ACTOR_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine in the actor's process: fast start, reloadable
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Idle OpenMP threads sleep instead of spinning: a spinning engine starved the trainer on a
    # shared node, and a multi-thread engine ran 15-20x slower right after a weight sync (measured).
    "OMP_WAIT_POLICY": "PASSIVE",
}


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> dict[str, Any]:
    """Initialise Ray once per process; returns the cluster resources."""
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {"log_to_driver": not quiet, "ignore_reinit_error": True}
        if address:
            kwargs["address"] = address
        else:  # a fresh local cluster: never join whatever `ray start` cluster this machine has
            # (a stale one from a killed run makes ray.init fail on num_cpus)
            kwargs.update(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
        ray.init(**kwargs)
    return ray.cluster_resources()

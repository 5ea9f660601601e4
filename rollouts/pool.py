"""The rollout pool: N Ray actors, each owning an in-process vLLM engine.

- Requests are spread by load (sampled tokens outstanding per actor) and results come back in
  request order.
- Weight sync pushes the trainer's trainable parameters to every actor under a new version and
  checks that every actor confirms it.
- Faults: an actor that dies mid-call is restarted by Ray (`max_restarts`), caught up to the
  current weights version, and its unfinished requests are retried; after `max_failures` deaths
  in one call the pool raises `PoolError`. Results whose weights version is not the pool's (a
  call Ray queued for the restarted actor, which came back on its initial weights) count the
  same way: the actor is caught up and the chunk retried. An actor that dies during a weight
  push is restarted and gets the whole push again before the push returns. A request the engine
  cannot serve comes back with `Rollout.error` set and does not fail the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rollouts.config import RolloutConfig
from rollouts.ray_utils import ACTOR_ENV
from rollouts.types import Rollout, RolloutRequest, ScoreRequest, ScoreResult
from rollouts.weight_sync import NcclTransport, RayTransport, SyncPayload, collect_trainable


class PoolError(RuntimeError):
    """The pool cannot serve: too many actor deaths, or a version mismatch after a sync."""


@dataclass
class SyncStats:
    version: int
    seconds: float
    num_bytes: int
    num_tensors: int
    skipped_frozen: int

    @property
    def gb_per_s(self) -> float:
        return self.num_bytes / 1e9 / max(self.seconds, 1e-9)


@dataclass
class PoolStats:
    actor_deaths: int = 0
    retried_chunks: int = 0
    stale_chunks: int = 0  # results from an actor Ray had restarted on its initial weights
    syncs: list[SyncStats] = field(default_factory=list)


def _cost(req: RolloutRequest, cfg: RolloutConfig) -> int:
    return req.n * (req.sampling.max_tokens or cfg.max_tokens[req.mode])


def spread(costs: list[int], num_actors: int) -> list[list[int]]:
    """Greedy longest-first assignment of items to the least-loaded actor (indices per actor)."""
    loads = [0] * num_actors
    plan: list[list[int]] = [[] for _ in range(num_actors)]
    for i in sorted(range(len(costs)), key=lambda k: -costs[k]):
        a = min(range(num_actors), key=lambda k: loads[k])
        plan[a].append(i)
        loads[a] += costs[i]
    return [sorted(p) for p in plan]


class RolloutPool:
    def __init__(self, model_path: str, cfg: RolloutConfig, seed: int | None = None):
        import ray

        from rollouts.vllm_engine import VLLMEngine

        self.cfg = cfg
        self.version = 0
        self.stats = PoolStats()
        self.in_flight = 0  # pool calls currently waiting on actors (monitoring, tests)
        threads = cfg.threads_per_actor or max(1, int(cfg.num_cpus_per_actor))
        env = dict(ACTOR_ENV, VLLM_CPU_KVCACHE_SPACE=str(max(1, int(cfg.kv_cache_gib))), OMP_NUM_THREADS=str(threads))
        actor_cls = ray.remote(VLLMEngine).options(
            num_cpus=cfg.num_cpus_per_actor,
            num_gpus=cfg.num_gpus_per_actor,
            max_restarts=cfg.max_restarts,
            max_task_retries=0,  # we retry ourselves, after catching the actor up
            runtime_env={"env_vars": env},
        )
        base = cfg.seed if seed is None else seed
        self.actors = [actor_cls.remote(model_path, cfg, f"rollout-{i}", base + i) for i in range(cfg.num_actors)]
        ray.get([a.health.remote() for a in self.actors])
        if cfg.sync.transport == "nccl":
            world = 1 + cfg.num_actors * cfg.tensor_parallel_size
            # Address and port are taken where the first send runs (the sender may be a trainer
            # group's rank 0 on another node than the one that made the pool).
            self.transport: Any = NcclTransport("", cfg.sync.nccl_port, world, cfg.sync.timeout_s)
        else:
            self.transport = RayTransport(cfg.sync.bucket_mb, cfg.sync.timeout_s)

    # ------------------------------------------------------------------ calls with fault handling
    def _run(self, method: str, items: list[Any], costs: list[int]) -> list[Any]:
        """Call `method` on chunks of `items` spread over the actors; results in item order."""
        pending = {}
        for a, idx in enumerate(spread(costs, len(self.actors))):
            if idx:
                pending[getattr(self.actors[a], method).remote([items[i] for i in idx])] = (a, idx)
        self.in_flight += 1
        try:
            return self._collect(method, items, pending)
        finally:
            self.in_flight -= 1

    def _collect(self, method: str, items: list[Any], pending: dict) -> list[Any]:
        import ray
        from ray.exceptions import RayActorError

        out: list[Any] = [None] * len(items)
        failures = 0
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            a, idx = pending.pop(ref)
            try:
                results = ray.get(ref)
                stale = sorted({r.version for r in results if r.version != self.version})
                if not stale:
                    for i, res in zip(idx, results, strict=False):
                        out[i] = res
                    continue
                # A call sent while Ray was restarting the actor runs on its initial weights.
                self.stats.stale_chunks += 1
                error: Exception = PoolError(f"results at v{stale}, pool at v{self.version}")
            except RayActorError as exc:
                self.stats.actor_deaths += 1
                error = exc
            failures += 1
            if failures > self.cfg.max_failures:
                raise PoolError(
                    f"rollout actor {a} failed {failures} times in one call (rollout.max_failures="
                    f"{self.cfg.max_failures}); last error: {error}"
                ) from error
            self._catch_up(a)
            self.stats.retried_chunks += 1
            pending[getattr(self.actors[a], method).remote([items[i] for i in idx])] = (a, idx)
        return out

    def _catch_up(self, a: int, timeout_s: float = 300.0, version: int | None = None) -> None:
        """Wait for Ray to restart actor `a`, then reload the current weights version (or
        `version`, the one being pushed) into it."""
        import ray
        from ray.exceptions import RayActorError

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                health = ray.get(self.actors[a].health.remote(), timeout=timeout_s)
                break
            except RayActorError as exc:
                if time.monotonic() > deadline:
                    raise PoolError(f"rollout actor {a} did not come back after a restart: {exc}") from exc
                time.sleep(1.0)
        want = self.version if version is None else version
        if health["version"] != want:
            if not isinstance(self.transport, RayTransport) or not self.transport.last_refs:
                raise PoolError(
                    f"rollout actor {a} restarted at v{health['version']} and cannot be caught up to "
                    f"v{want} (transport {self.cfg.sync.transport}); resume the run from its last checkpoint"
                )
            got = ray.get(self.transport.catch_up_call(self.actors[a]), timeout=timeout_s)
            if got != want:
                raise PoolError(f"rollout actor {a} came back at v{got}, expected v{want}")

    # ------------------------------------------------------------------ public API
    def generate(self, requests: list[RolloutRequest]) -> list[Rollout]:
        return self._run("generate", requests, [_cost(r, self.cfg) for r in requests])

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return self._run("score", requests, [len(r.token_ids) for r in requests])

    def sync_from_model(self, model: Any) -> SyncStats:
        """Push the model's trainable parameters (merged LoRA for peft models) as version + 1."""
        return self.sync(collect_trainable(model, self.version + 1, to_cpu=self.cfg.sync.transport == "ray"))

    def snapshot(self, model: Any, version: int) -> SyncPayload:
        """The model's trainable weights as a payload of `version`, copied: the trainer may take
        more optimizer steps before the payload is pushed (`rl.async_rollouts`)."""
        return collect_trainable(model, version, to_cpu=self.cfg.sync.transport == "ray", copy=True)

    def sync(self, payload: SyncPayload) -> SyncStats:
        t0 = time.perf_counter()
        if isinstance(self.transport, RayTransport):
            versions = self._push_ray(payload)
        else:
            versions = self.transport.send(self.actors, payload)
        return self._confirmed(payload.version, versions, time.perf_counter() - t0, payload.num_bytes,
                               len(payload.names), len(payload.skipped_frozen))

    def sync_stream(self, version: int, buckets: Any) -> SyncStats:
        """Push weights that arrive bucket by bucket, (names, tensors, last) (a trainer group's
        gathered parameters, `rollouts.sharded_sync`), as `version`. Over Ray each bucket enters the
        object store as it comes; over NCCL each bucket is one transfer round."""
        t0 = time.perf_counter()
        if isinstance(self.transport, RayTransport):
            count, nbytes = self.transport.stage_stream(version, buckets)
            versions = self._confirm_ray(version)
        else:
            count = nbytes = 0
            for names, tensors, _ in buckets:
                versions = self.transport.send(self.actors, SyncPayload(version, names, tensors))
                count += len(names)
                nbytes += sum(t.numel() * t.element_size() for t in tensors)
        return self._confirmed(version, versions, time.perf_counter() - t0, nbytes, count, 0)

    def adopt_version(self, version: int) -> None:
        """Another copy of this pool (a trainer group's rank 0, `rl.trainer_group`) pushed `version`
        to the actors. This handle's object-store copy of the weights is an older version, so it is
        dropped: an actor restarted later is refused with a message, never caught up to stale weights."""
        self.version = version
        if isinstance(self.transport, RayTransport):
            self.transport.last_refs = []

    def _confirmed(self, version: int, versions: list[int], seconds: float, nbytes: int, count: int,
                   frozen: int) -> SyncStats:
        if any(v != version for v in versions):
            raise PoolError(f"weight sync to v{version} not confirmed: actors report {versions}")
        self.version = version
        stats = SyncStats(version, seconds, nbytes, count, frozen)
        self.stats.syncs.append(stats)
        return stats

    def _push_ray(self, payload: SyncPayload) -> list[int]:
        """Push through the object store; an actor that dies during the push is restarted by Ray
        and receives the whole payload again (it holds every trainable parameter)."""
        self.transport.stage(payload)
        return self._confirm_ray(payload.version)

    def _confirm_ray(self, version: int) -> list[int]:
        """Have every actor apply the staged buckets; an actor that dies meanwhile is caught up."""
        import ray
        from ray.exceptions import RayActorError

        calls = [self.transport.catch_up_call(actor) for actor in self.actors]
        versions = []
        for a, call in enumerate(calls):
            try:
                versions.append(ray.get(call, timeout=self.transport.timeout_s))
            except RayActorError:
                self.stats.actor_deaths += 1
                self._catch_up(a, version=version)
                versions.append(version)
        return versions

    def health(self) -> list[dict[str, Any]]:
        import ray

        return ray.get([a.health.remote() for a in self.actors])

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []


def _trainer_address() -> str:
    import ray

    return ray.util.get_node_ip_address()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""Asynchronous GRPO rollouts (`grpo.async`): the engines sample later steps while the trainer trains.

`RolloutPipeline` owns one worker thread that runs, in the order queued, the two kinds of task the
trainer hands it at each optimizer-step boundary t (weights W_t):
1. a weight push: a snapshot of the trainable weights taken at the boundary (so the trainer may
   keep training while the push waits its turn), applied to the engines under a new version;
2. the sampling of the batch of step t + k (k = `max_staleness`): P prompt rows drawn from the
   sampler's own stream, then the whole `GroupSampler.sample` (modes, rollouts, rewards, the std
   filter's refill rounds).
The batch of step s is queued right after the push of W_{s-k}, and the worker runs tasks in order,
so it is sampled on weights at most k optimizer steps old. That is also checked, not assumed:
every group's rollout carries the version the engine sampled with, the pipeline maps versions back
to the step whose weights they are, and a batch older than the bound raises `StalenessError`.

Between boundaries the worker is the only user of the engines (the trainer makes no engine call in
async mode), so a push never overlaps generation: generation waits for the push itself, nothing
more. Per batch the pipeline reports the staleness of its groups, how long the trainer waited for
it (trainer idle), how long the worker sat without work since the previous batch (engine idle) and
the push and snapshot seconds.

Prompts: in async mode the rows come from the sampler's shuffled stream of training rows (the one
its refills use), not from TRL's dataloader, whose rows for step t + k do not exist yet at step t;
TRL's batch only paces the steps. `max_staleness` 0 runs this same path without overlap (each
batch sampled after the push of the current weights): a diagnostic that separates the pipeline's
own effects (prompt stream, snapshots, worker thread) from those of staleness. Resume: batches in flight are not checkpointed. `drain()` waits
for them before a checkpoint records the sampler's state (filter EMA, schedule, reward state), so
that state is consistent, and a resumed run samples them again from the restored state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


class StalenessError(RuntimeError):
    """A batch came from weights older than `grpo.async.max_staleness` optimizer steps."""


@dataclass
class Batch:
    """The groups trained at optimizer step `step`, with where and when they came from."""

    step: int
    groups: list[Any]
    stats: Any  # rl.grpo_sampling.SampleStats
    versions: list[int]  # weights version each group was sampled with
    staleness: list[int]  # optimizer steps between those weights and the trainer's, per group
    trainer_wait_s: float  # the trainer waited this long for the batch (trainer idle)
    engine_idle_s: float  # the worker had nothing to do for this long since the previous batch
    push_s: float  # weight pushes applied since the previous batch
    snapshot_s: float  # the trainer's own cost of the push: taking the snapshot

    def metrics(self) -> dict[str, float]:
        return {"async/staleness/mean": sum(self.staleness) / max(len(self.staleness), 1),
                "async/staleness/max": float(max(self.staleness, default=0)),
                "async/trainer_idle_s": self.trainer_wait_s, "async/engine_idle_s": self.engine_idle_s,
                "async/push_s": self.push_s, "async/snapshot_s": self.snapshot_s}


class RolloutPipeline:
    """Runs pushes and batch sampling on one worker thread, up to `max_staleness` batches ahead.

    sample(rows) -> (groups, stats): the synchronous sampler (`GroupSampler.sample`);
    next_rows() -> rows: the prompts of one batch (called on the worker);
    push(payload): applies a weight snapshot to the engines (called on the worker);
    version_of(group) -> int: the weights version a group was sampled with.
    """

    def __init__(self, sample: Callable[[list[Any]], tuple[list[Any], Any]], next_rows: Callable[[], list[Any]],
                 push: Callable[[Any], Any], max_staleness: int, engine_version: int,
                 version_of: Callable[[Any], int] = lambda g: g.rollout.version):
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self._sample, self._next_rows, self._push = sample, next_rows, push
        self.max_staleness = max_staleness
        self.version_of = version_of
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-pipeline")
        self._pending: dict[int, Future] = {}  # step -> its batch being sampled
        self._tasks: list[Future] = []  # every queued task (errors surface at the next batch)
        self._queued_upto: int | None = None  # last step whose batch is queued
        self._pushed_step: int | None = None  # step of the last weights queued for a push
        self.version_step: dict[int, int] = {}  # weights version -> optimizer step of those weights
        self._next_version = engine_version + 1  # the engines hold `engine_version` now
        self._lock = threading.Lock()
        self._last_end: float | None = None  # when the worker finished its previous task
        self._running = False  # a task is running on the worker
        self._idle = self._push_s = 0.0
        self.pushes = 0
        self.closed = False

    # ------------------------------------------------------------------ worker side
    def _timed(self, fn: Callable[[], Any], push: bool = False) -> Any:
        start = time.perf_counter()
        with self._lock:
            if self._last_end is not None:
                self._idle += start - self._last_end
            self._running = True
        try:
            return fn()
        finally:
            end = time.perf_counter()
            with self._lock:
                self._last_end, self._running = end, False
                if push:
                    self._push_s += end - start
                    self.pushes += 1

    def _submit(self, fn: Callable[[], Any], push: bool = False) -> Future:
        fut = self._executor.submit(self._timed, fn, push)
        self._tasks.append(fut)
        return fut

    # ------------------------------------------------------------------ trainer side
    def batch(self, step: int, snapshot: Callable[[int], Any]) -> Batch:
        """The groups to train at optimizer `step`. `snapshot(v)` returns the trainer's weights now
        (W_step) as a push payload of version `v`. Called once per step, at the step's start; queues
        the push (the first call always pushes: on a resume the engines hold other weights) and the
        batches up to step + k, then waits for the batch of `step`."""
        if self.closed:
            raise RuntimeError("the rollout pipeline is closed")
        snapshot_s = 0.0
        if self._pushed_step != step:
            t0 = time.perf_counter()
            version, self._next_version = self._next_version, self._next_version + 1
            payload = snapshot(version)
            snapshot_s = time.perf_counter() - t0
            self.version_step[version] = step
            self._pushed_step = step
            self._submit(lambda: self._push(payload), push=True)
        if self._queued_upto is None or self._queued_upto < step - 1:
            self._queued_upto = step - 1  # first call, or a resume: nothing queued for this step yet
        while self._queued_upto < step + self.max_staleness:
            self._queued_upto += 1
            self._pending[self._queued_upto] = self._submit(lambda: self._sample(self._next_rows()))
        fut = self._pending.pop(step, None)
        if fut is None:
            raise RuntimeError(f"no batch was queued for step {step} (steps must be asked for in order)")
        t0 = time.perf_counter()
        groups, stats = fut.result()
        wait = time.perf_counter() - t0
        self._raise_task_errors()
        versions = [self.version_of(g) for g in groups]
        unknown = sorted({v for v in versions if v not in self.version_step})
        if unknown:
            raise StalenessError(f"step {step}: groups sampled with weights versions {unknown}, which this run never "
                                 f"pushed (known: {sorted(self.version_step)}); an engine restarted on old weights?")
        staleness = [step - self.version_step[v] for v in versions]
        if max(staleness, default=0) > self.max_staleness or min(staleness, default=0) < 0:
            raise StalenessError(f"step {step}: a batch sampled {max(staleness)} optimizer steps ago exceeds "
                                 f"grpo.async.max_staleness={self.max_staleness} (staleness per group {staleness})")
        with self._lock:
            now = time.perf_counter()
            if not self._running and self._last_end is not None:  # idle right now: count it up to now
                self._idle += now - self._last_end
                self._last_end = now
            idle, push_s = self._idle, self._push_s
            self._idle = self._push_s = 0.0
        return Batch(step, groups, stats, versions, staleness, wait, idle, push_s, snapshot_s)

    def _raise_task_errors(self) -> None:
        done = [t for t in self._tasks if t.done()]
        self._tasks = [t for t in self._tasks if not t.done()]
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc

    def drain(self) -> None:
        """Wait until every queued push and batch has finished (their results are kept for their
        steps): the sampler's state is then consistent and no engine call is in flight."""
        for t in list(self._tasks):
            t.exception()  # waits; errors surface at the next batch
        with self._lock:
            self._last_end = None  # waiting here is not engine idle time

    def close(self) -> None:
        """Drop the batches not started, wait for the running task, stop the worker."""
        if self.closed:
            return
        self.closed = True
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)

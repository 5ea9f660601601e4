"""Weight sync, trainer side: which tensors to send, in what buckets, over which transport.

Only trainable parameters travel (a frozen vision tower never changes, so it is never sent).
LoRA policies send merged weights: for every module wrapped by an adapter, base + scale·B·A under
the base model's name, so actors need no LoRA support. Tensors are grouped in buckets of about
`bucket_mb` and tagged with a version; an actor applies a version only when its last bucket has
arrived (see `VLLMEngine.receive_bucket`), so generation never sees half an update.

Transports:
- `RayTransport` (CPU default): each bucket is `ray.put` once, as numpy arrays, and every actor
  maps it from the object store without a copy.
- `NcclTransport` (GPU): vLLM's native weight-transfer engine (`init_weight_transfer_engine`,
  `start_weight_update` / `update_weights` / `finish_weight_update` on the engine, one packed NCCL
  broadcast from the trainer). Written for GPU clusters; only its metadata/bucketing is tested here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rollouts.types import WeightBucket

_PEFT_PREFIX = "base_model.model."


@dataclass
class SyncPayload:
    """What one sync sends: HF names and tensors (detached, contiguous, on CPU for `ray`)."""

    version: int
    names: list[str]
    tensors: list[Any]
    skipped_frozen: list[str] = field(default_factory=list)

    @property
    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_adapter")


def _peft_base_name(name: str) -> str:
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX) :]
    return name.replace(".base_layer.", ".")


def _collect_merged_lora(model: Any, names: list[str], tensors: list[Any], frozen: list[str]) -> None:
    """base + delta for every LoRA-wrapped module, computed without merging in place (an
    in-place merge/unmerge per sync would leave rounding drift in the live base weights)."""
    lora_modules = {}
    for mod_name, module in model.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            lora_modules[mod_name] = module
    for name, param in model.named_parameters():
        if ".lora_" in name:
            continue
        mod_name = name.rsplit(".", 1)[0].replace(".base_layer", "")
        module = lora_modules.get(mod_name)
        if module is not None and name.endswith(".base_layer.weight"):
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
            names.append(_peft_base_name(name))
            tensors.append((param + delta).detach())
        elif param.requires_grad:
            names.append(_peft_base_name(name))
            tensors.append(param.detach())
        else:
            frozen.append(_peft_base_name(name))


def collect_trainable(model: Any, version: int, to_cpu: bool = True, name_map: list[tuple[str, str]] = (),
                      copy: bool = False) -> SyncPayload:
    """Gather the tensors to sync: trainable parameters, or merged LoRA targets for peft models.
    `to_cpu` copies them to CPU; `copy` also copies them on the device (a snapshot the trainer's
    next optimizer step does not change: asynchronous pushes)."""
    import torch

    names, tensors, frozen = [], [], []
    with torch.no_grad():
        if _is_peft(model):
            _collect_merged_lora(model, names, tensors, frozen)
        else:
            for name, param in model.named_parameters():
                if param.requires_grad:
                    names.append(name)
                    tensors.append(param.detach())
                else:
                    frozen.append(name)
    for pattern, repl in name_map:
        names = [re.sub(pattern, repl, n) for n in names]
    if to_cpu:
        tensors = [t.to("cpu", copy=True).contiguous() for t in tensors]
    elif copy:
        tensors = [t.clone().contiguous() for t in tensors]
    return SyncPayload(version, names, tensors, frozen)


def bucketize(payload: SyncPayload, bucket_mb: float) -> list[WeightBucket]:
    """Split a payload into buckets of at most ~bucket_mb (a larger single tensor gets its own)."""
    limit = int(bucket_mb * 2**20)
    buckets: list[WeightBucket] = []
    cur_names: list[str] = []
    cur_tensors: list[Any] = []
    size = 0
    for name, t in zip(payload.names, payload.tensors, strict=False):
        nbytes = t.numel() * t.element_size()
        if cur_names and size + nbytes > limit:
            buckets.append(WeightBucket(payload.version, cur_names, cur_tensors))
            cur_names, cur_tensors, size = [], [], 0
        cur_names.append(name)
        cur_tensors.append(t)
        size += nbytes
    buckets.append(WeightBucket(payload.version, cur_names, cur_tensors))
    buckets[-1].last = True
    return buckets


class RayTransport:
    """Buckets through Ray's object store; every actor confirms the version it now holds.

    The object refs of the latest sync are kept (`last_refs`) so that an actor Ray restarts
    later can be caught up to the current version from the object store.
    """

    def __init__(self, bucket_mb: float = 64.0, timeout_s: float = 600.0):
        self.bucket_mb = bucket_mb
        self.timeout_s = timeout_s
        self.last_refs: list[Any] = []

    def stage(self, payload: SyncPayload) -> None:
        """Put the payload's buckets into the object store (they stay there for catch-ups)."""
        import ray

        self.last_refs = [ray.put(b.to_wire()) for b in bucketize(payload, self.bucket_mb)]

    def stage_stream(self, version: int, buckets: Any) -> tuple[int, int]:
        """Put buckets into the object store as they come: `buckets` yields (names, tensors, last),
        e.g. a trainer group's gathered buckets (`rollouts.sharded_sync`). Returns (tensors, bytes)."""
        import ray

        refs, count, nbytes = [], 0, 0
        for names, tensors, last in buckets:
            refs.append(ray.put(WeightBucket(version, names, tensors, last=last).to_wire()))
            count += len(names)
            nbytes += sum(t.numel() * t.element_size() for t in tensors)
        self.last_refs = refs
        return count, nbytes

    def send(self, actors: list[Any], payload: SyncPayload) -> list[int]:
        import ray

        self.stage(payload)
        # An actor runs its calls in order, so its buckets apply in order; wait on each last one.
        return ray.get([self.catch_up_call(a) for a in actors], timeout=self.timeout_s)

    def catch_up_call(self, actor: Any) -> Any:
        return [actor.receive_bucket.remote(ref) for ref in self.last_refs][-1]


def nccl_update_info(payload: SyncPayload) -> dict[str, Any]:
    """Per-round metadata of vLLM's dense NCCL transfer (names, dtype names, full shapes)."""
    return {
        "names": list(payload.names),
        "dtype_names": [str(t.dtype).removeprefix("torch.") for t in payload.tensors],
        "shapes": [list(t.shape) for t in payload.tensors],
    }


class ActorSyncClient:
    """vLLM's `VLLMWeightSyncClient` protocol over our rollout actors (`wt_*` methods).

    Each call fans out to every actor and waits; `finish_weight_update` also sets the version.
    """

    def __init__(self, actors: list[Any], timeout_s: float = 600.0):
        self.actors = actors
        self.timeout_s = timeout_s
        self.version = 0

    def _all(self, method: str, *args: Any) -> list[Any]:
        import ray

        return ray.get([getattr(a, method).remote(*args) for a in self.actors], timeout=self.timeout_s)

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self._all("wt_init", init_info)

    def start_weight_update(self) -> None:
        self._all("wt_start")

    def update_weights(self, update_info: dict[str, Any]) -> None:
        self._all("wt_update", update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all("wt_finish", self.version)


class NcclTransport:
    """vLLM's native dense NCCL weight transfer (GPU clusters).

    Engines are built with `weight_transfer_config=WeightTransferConfig(backend="nccl")`; the
    trainer is NCCL rank 0 and each engine worker joins at rank_offset 1. Every sync is one
    packed broadcast driven by vLLM's `NCCLTrainerWeightTransferEngine`: start_weight_update on
    all engines, update_weights concurrently with the broadcast, finish_weight_update.
    """

    def __init__(self, master_address: str, master_port: int, world_size: int, timeout_s: float = 600.0):
        self.master_address = master_address
        self.master_port = master_port
        self.world_size = world_size  # 1 trainer + every engine worker (actors x tensor parallel)
        self.timeout_s = timeout_s
        self._engine = None
        self._source = None
        self._client: ActorSyncClient | None = None

    def _connect(self, actors: list[Any]) -> None:
        from vllm.distributed.weight_transfer.nccl_engine import (
            NCCLTrainerInitInfo,
            NCCLTrainerWeightTransferEngine,
        )

        from rollouts.pool import _free_port, _trainer_address

        self._client = ActorSyncClient(actors, self.timeout_s)
        self._source = make_payload_source()
        self.master_address = self.master_address or _trainer_address()
        self.master_port = self.master_port or _free_port()
        info = NCCLTrainerInitInfo(self.master_address, self.master_port, self.world_size, rank=0)
        self._engine = NCCLTrainerWeightTransferEngine.trainer_init(info, client=self._client, source=self._source)

    def send(self, actors: list[Any], payload: SyncPayload) -> list[int]:
        if self._engine is None:
            self._connect(actors)
        assert self._client is not None and self._source is not None and self._engine is not None
        self._client.version = payload.version
        self._source.payload = payload
        self._engine.send_weights()
        return [payload.version] * len(actors)


def make_payload_source() -> Any:
    """A vLLM `WeightSource` over the current SyncPayload (metadata and tensors agree by design).

    Built lazily so that importing this module does not import vLLM.
    """
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    class PayloadSource(WeightSource):
        payload: SyncPayload | None = None

        def metadata(self):
            assert self.payload is not None
            return [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in zip(self.payload.names, self.payload.tensors, strict=False)]

        def __iter__(self):
            assert self.payload is not None
            return iter(list(zip(self.payload.names, self.payload.tensors, strict=False)))

    return PayloadSource()

"""Weight sync from a trainer group (`ray.trainer_workers` > 1): every rank walks, rank 0 sends.

Under DDP every rank holds the full weights, so rank 0 pushes alone (`collect_trainable`, merged
LoRA included) while the others wait at a barrier. Under FSDP2 or DeepSpeed ZeRO-3 a parameter is
spread over the ranks and gathering it is a collective, so every rank walks the same sequence of
gathers (`full_param_buckets`: FSDP2 `full_tensor()`, ZeRO-3 `GatheredParameters`), bucket by
bucket (`plan_buckets`, about `bucket_mb` each), and only rank 0 keeps and sends the gathered
bucket. A barrier separates one bucket's send from the next bucket's gathers: no rank may race
ahead into the next all-gather while rank 0 is still blocked in its send to the rollout actors
(TRL issue #7103 is that hang), and only one gathered bucket is alive at a time (TRL's fix in PR
#7131 gathers everything first, which costs the whole model's memory on rank 0).

Only trainable parameters travel (a frozen vision tower never changes). Names are the HF names of
the unwrapped model (FSDP2 keeps them; DDP's `module.` prefix is removed by unwrapping first).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

PLAIN, FSDP2, ZERO3 = "plain", "fsdp2", "zero3"


def gather_kind(model: Any) -> str:
    """How the model's parameters are held: full on every rank (`plain`, DDP or one process),
    sharded as DTensors (`fsdp2`) or partitioned by DeepSpeed (`zero3`)."""
    for p in model.parameters():
        if hasattr(p, "ds_id"):
            return ZERO3
        if type(p).__name__ == "DTensor" or hasattr(p, "full_tensor"):
            return FSDP2
    return PLAIN


def plan_buckets(model: Any, bucket_mb: float) -> list[list[tuple[str, Any]]]:
    """The trainable parameters in order, cut into buckets of about `bucket_mb` of full (unsharded)
    size; a parameter larger than a bucket gets its own. Every rank computes the same plan (shapes
    and dtypes are global), so their gathers line up."""
    limit = bucket_mb * 2**20
    buckets: list[list[tuple[str, Any]]] = [[]]
    size = 0.0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        nbytes = p.numel() * p.element_size()  # DTensor.numel() is the global count
        if buckets[-1] and size + nbytes > limit:
            buckets.append([])
            size = 0.0
        buckets[-1].append((name, p))
        size += nbytes
    return buckets if buckets[0] else []


def _full(p: Any, kind: str) -> Any:
    """The full value of one parameter on this rank (a collective for fsdp2 and zero3)."""
    if kind == FSDP2:
        local = p.to_local() if hasattr(p, "to_local") else p
        if local.device.type == "cpu" and p.device_mesh.device_type != "cpu":
            p = p.to(p.device_mesh.device_type)  # CPU-offloaded shard: gather on the mesh's device
        return p.full_tensor().detach()
    if kind == ZERO3:
        import deepspeed

        with deepspeed.zero.GatheredParameters([p]):
            return p.data.detach().clone()
    return p.detach()


def full_param_buckets(model: Any, bucket_mb: float, keep: bool, barrier: Any = None,
                       to_cpu: bool = True) -> Iterator[tuple[list[str], list[Any], bool]]:
    """Every rank: gather the trainable parameters bucket by bucket; yields (names, tensors, last).
    Ranks with `keep=False` get empty tensor lists (they only take part in the gathers). `barrier`
    (called before each bucket after the first) holds every rank until rank 0 has sent the last
    one."""
    import torch

    kind = gather_kind(model)
    plan = plan_buckets(model, bucket_mb)
    with torch.no_grad():
        for i, bucket in enumerate(plan):
            if i and barrier is not None:
                barrier()
            names, tensors = [], []
            for name, p in bucket:
                full = _full(p, kind)
                if keep:
                    names.append(name)
                    tensors.append(full.to("cpu", copy=True).contiguous() if to_cpu else full.contiguous())
                del full
            yield names, tensors, i == len(plan) - 1


def push_from_ranks(model: Any, pool: Any, is_main: bool, barrier: Any) -> Any:
    """Push the group's current weights to the rollout pool; every rank calls this. Returns rank 0's
    `SyncStats` (None on the other ranks). All ranks leave together, after the actors confirmed."""
    from rollouts.weight_sync import _is_peft

    if gather_kind(model) == PLAIN:
        stats = pool.sync_from_model(model) if is_main else None
        barrier()
        return stats
    if _is_peft(model):
        raise NotImplementedError("LoRA under FSDP2 / ZeRO-3: the merged weights would need the adapters gathered "
                                  "too; train LoRA with DDP (no fsdp / deepspeed in the stage's trl settings)")
    to_cpu = pool.cfg.sync.transport == "ray"
    buckets = full_param_buckets(model, pool.cfg.sync.bucket_mb, keep=is_main, barrier=barrier, to_cpu=to_cpu)
    if is_main:
        stats = pool.sync_stream(pool.version + 1, buckets)
    else:
        stats = None
        for _ in buckets:
            pass
    barrier()
    return stats

"""Weight sync, trainer side: what is sent (trainable only, merged LoRA), buckets, NCCL metadata."""

from __future__ import annotations

import pytest
import torch

from policies.loading import PolicyConfig, load_policy
from rollouts.pool import spread
from rollouts.weight_sync import bucketize, collect_trainable, nccl_update_info


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(PolicyConfig(name_or_path=tiny_model_dir))[0]


def test_only_trainable_parameters_are_sent(policy):
    payload = collect_trainable(policy, version=3)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert set(payload.names) == trainable and payload.version == 3
    assert payload.skipped_frozen and all("vision_model" in n for n in payload.skipped_frozen)
    assert payload.num_bytes == sum(p.numel() * 4 for n, p in policy.named_parameters() if p.requires_grad)


def test_buckets_respect_the_size_and_keep_order(policy):
    payload = collect_trainable(policy, version=1)
    buckets = bucketize(payload, bucket_mb=0.5)
    assert len(buckets) > 1 and buckets[-1].last and not any(b.last for b in buckets[:-1])
    assert [n for b in buckets for n in b.names] == payload.names
    limit = 0.5 * 2**20
    for b in buckets:
        size = sum(t.numel() * t.element_size() for t in b.tensors)
        assert size <= limit or len(b.names) == 1  # a tensor larger than a bucket travels alone


def test_lora_policy_syncs_merged_base_weights(tiny_model_dir):
    cfg = PolicyConfig(name_or_path=tiny_model_dir)
    cfg.lora.enabled = True
    model = load_policy(cfg)[0]
    base = dict(load_policy(PolicyConfig(name_or_path=tiny_model_dir))[0].named_parameters())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    payload = collect_trainable(model, version=1)
    assert payload.names and not any("lora_" in n or "base_layer" in n for n in payload.names)
    assert all(n in base for n in payload.names)  # plain HF names, loadable by the actors
    name = next(n for n in payload.names if n.endswith("q_proj.weight"))
    merged = payload.tensors[payload.names.index(name)]
    assert not torch.allclose(merged, base[name])  # B·A·scale was added
    still = dict(model.named_parameters())[f"base_model.model.{name.replace('.weight', '.base_layer.weight')}"]
    assert torch.allclose(still, base[name])  # and the live model was unmerged again
    assert not any("vision_model" in n for n in payload.names)


def test_nccl_update_info_describes_the_payload(policy):
    payload = collect_trainable(policy, version=1)
    info = nccl_update_info(payload)
    assert info["names"] == payload.names
    assert set(info["dtype_names"]) == {"float32"}
    assert info["shapes"][0] == list(payload.tensors[0].shape)


def test_spread_balances_load_and_keeps_every_item():
    plan = spread([10, 1, 1, 1, 9, 2], 2)
    assert sorted(i for p in plan for i in p) == list(range(6))
    loads = [sum([10, 1, 1, 1, 9, 2][i] for i in p) for p in plan]
    assert max(loads) - min(loads) <= 2


def test_bucket_wire_format_round_trips_every_dtype_bit_exactly():
    import numpy as np
    import torch

    from rollouts.types import WeightBucket

    tensors = [torch.randn(3, 4), torch.randn(5).to(torch.bfloat16), torch.randn(2, 2).to(torch.float16)]
    wire = WeightBucket(7, ["a", "b", "c"], tensors, last=True).to_wire()
    assert all(isinstance(a, np.ndarray) for a in wire.tensors) and wire.dtypes == ["float32", "bfloat16", "float16"]
    back = wire.torch_tensors()
    assert [t.dtype for t in back] == [t.dtype for t in tensors]
    assert all(torch.equal(a, b) for a, b in zip(back, tensors, strict=True))
    assert wire.version == 7 and wire.last and wire.names == ["a", "b", "c"]
    plain = WeightBucket(1, ["a"], tensors[:1])
    assert plain.torch_tensors()[0] is tensors[0]  # not on the wire: unchanged

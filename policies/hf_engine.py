"""An Engine over transformers `generate`: the baseline the vLLM rollout pool is measured against.

Implements the `rollouts.protocol.Engine` protocol in-process on a loaded policy. Used by the
smoke stage, by benchmarks (transformers generate vs the pool) and wherever a run is configured
with `rollout.backend: hf`. Prompts are batched with left padding.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from policies.chat import render_prompt
from policies.scoring import HFScorer
from rollouts.types import Completion, Rollout, RolloutRequest, ScoreRequest, ScoreResult


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Sample from a model a trainer also holds in eval mode, restoring its mode afterwards. A TRL
    trainer leaves the model in train mode with gradient checkpointing, which switches the KV cache
    off; Idefics3's `generate` then feeds the image features to the first decoding step only, and
    every later token was decoded without the image (measured after one TRL step: log-probs off by
    up to 1.4 nats from the model's own; tests/test_grpo_trainer.py)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class HFEngine:
    def __init__(self, model: Any, processor: Any, max_tokens: dict[str, int] | None = None, version: int = 0):
        self.model = model
        self.processor = processor
        self.max_tokens = max_tokens or {"deep": 64, "fast": 16}
        self.version = version
        self._scorer = HFScorer(model, processor, version)
        from policies.families import supports_video
        from policies.tokens import banned_media_tokens

        self.banned = [[t] for t in banned_media_tokens(processor, supports_video(processor))]

    def _batch(self, requests: list[RolloutRequest]) -> tuple[list[str], Any]:
        from policies.media import processor_inputs

        texts = [render_prompt(self.processor, r.messages, r.mode, len(r.images), len(r.videos)) for r in requests]
        media = processor_inputs([list(r.images) for r in requests], [list(r.videos) for r in requests])
        tok = self.processor.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            batch = self.processor(text=texts, return_tensors="pt", padding=True, **media)
        finally:
            tok.padding_side = side
        return texts, batch.to(self.model.device)

    def generate(self, requests: list[RolloutRequest]) -> list[Rollout]:
        """Sample each request's `n` completions; requests sharing settings run as one batch."""
        import torch

        if not requests:
            return []
        t0 = time.perf_counter()
        first = requests[0]
        sp = first.sampling
        max_new = sp.max_tokens or max(self.max_tokens[r.mode] for r in requests)
        n = max(r.n for r in requests)
        texts, batch = self._batch(requests)
        if sp.seed is not None:
            torch.manual_seed(sp.seed)
        greedy = sp.temperature <= 0
        with eval_mode(self.model):
            out = self._generate(batch, max_new, greedy, sp, n)
        prompt_len = batch["input_ids"].shape[1]
        seqs = out.sequences[:, prompt_len:]
        logp = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # [B*n, T, V], processed scores
        tok_lp = logp.gather(-1, seqs[..., None]).squeeze(-1)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        dt = time.perf_counter() - t0
        rollouts = []
        for i, req in enumerate(requests):
            mask = batch["attention_mask"][i].bool()
            prompt_ids = batch["input_ids"][i][mask].tolist()
            comps = []
            for j in range(req.n):
                row = i * n + j
                ids = seqs[row].tolist()
                cut = next((k + 1 for k, t in enumerate(ids) if t in eos_ids), len(ids))
                finish = "stop" if cut < len(ids) or (ids and ids[-1] in eos_ids) else "length"
                body = [t for t in ids[:cut] if t not in eos_ids]
                text = self.processor.tokenizer.decode(body, skip_special_tokens=False)
                comps.append(Completion(text, ids[:cut], tok_lp[row, :cut].tolist(), finish))
            rollouts.append(
                Rollout(req.request_id, req.mode, texts[i], prompt_ids, comps, self.version, "hf", None, {"generate_s": dt})
            )
        return rollouts

    def _generate(self, batch: Any, max_new: int, greedy: bool, sp: Any, n: int) -> Any:
        import torch

        with torch.no_grad():
            return self.model.generate(
                **batch,
                max_new_tokens=max_new,
                do_sample=not greedy,
                temperature=None if greedy else sp.temperature,
                top_p=None if greedy else sp.top_p,
                # vLLM's top_k <= 0 is "no top-k"; transformers' None would mean its default of 50
                top_k=None if greedy else max(sp.top_k, 0),
                num_return_sequences=n,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=self.processor.tokenizer.pad_token_id,
                bad_words_ids=self.banned,
            )

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        self._scorer.version = self.version
        return self._scorer.score(requests)

    def update_weights(self, named_tensors: list[tuple[str, Any]], version: int) -> int:
        import torch

        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in named_tensors:
                params[name].copy_(tensor)
        self.version = version
        return version

    def health(self) -> dict[str, Any]:
        return {"ok": True, "version": self.version, "backend": "hf", "banned": [t[0] for t in self.banned]}

    def snapshot(self, model: Any, version: int) -> Any:
        """The pool's API: a copy of `model`'s trainable weights as a payload of `version`."""
        from rollouts.weight_sync import collect_trainable

        return collect_trainable(model, version, to_cpu=True)

    def sync(self, payload: Any):
        """The pool's API: load a payload (`snapshot`) under its version."""
        from types import SimpleNamespace

        t0 = time.perf_counter()
        self.update_weights(list(zip(payload.names, payload.tensors, strict=True)), payload.version)
        return SimpleNamespace(version=self.version, seconds=time.perf_counter() - t0, num_bytes=payload.num_bytes)

    def sync_from_model(self, model: Any):
        """Mirror the pool's API: copy the trainable weights of `model` (no-op when it is ours)."""
        from types import SimpleNamespace

        if model is not self.model:
            self.update_weights([(n, p.detach()) for n, p in model.named_parameters() if p.requires_grad], self.version + 1)
        else:
            self.version += 1
        return SimpleNamespace(version=self.version, seconds=0.0, num_bytes=0)

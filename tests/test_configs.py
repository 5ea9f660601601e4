"""Every shipped config file loads and validates (GPU recipes included, though not run here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl.config import load_train_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_file_validates(path):
    cfg = load_train_config(path)
    assert cfg.stages and cfg.output_dir
    if path.name.startswith("gpu_"):
        assert cfg.policy.name_or_path and cfg.policy.device == "cuda"

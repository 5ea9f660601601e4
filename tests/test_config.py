"""Config system: YAML + overrides into typed dataclasses; bad keys and types fail by name."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from rl.configlib import ConfigError, FieldError, from_dict, load, parse_overrides


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    names: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.steps < 0:
            raise FieldError("steps", "must be >= 0")


@dataclass
class Outer:
    seed: int = 0
    inner: Inner = field(default_factory=Inner)
    path: str | None = None


def test_overrides_nest_and_parse_scalars():
    assert parse_overrides(["inner.lr=0.5", "seed=3", "inner.names=[a, b]"]) == {
        "inner": {"lr": 0.5, "names": ["a", "b"]},
        "seed": 3,
    }


def test_yaml_then_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("seed: 4\ninner:\n  steps: 7\n")
    cfg = load(Outer, cfg_file, ["inner.lr=2"])
    assert cfg.seed == 4 and cfg.inner.steps == 7 and cfg.inner.lr == 2.0 and cfg.path is None


def test_base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 1\ninner:\n  steps: 2\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ninner:\n  lr: 0.1\n")
    cfg = load(Outer, tmp_path / "child.yaml")
    assert (cfg.seed, cfg.inner.steps, cfg.inner.lr) == (1, 2, 0.1)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'inner\.stepz'.*steps"):
        from_dict(Outer, {"inner": {"stepz": 3}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"'inner\.steps': expected an integer, got 'many'"):
        load(Outer, None, ["inner.steps=many"])
    with pytest.raises(ConfigError, match=r"'seed': expected an integer"):
        from_dict(Outer, {"seed": True})


def test_validate_errors_carry_the_full_key():
    with pytest.raises(ConfigError, match=r"config key 'inner\.steps': must be >= 0"):
        from_dict(Outer, {"inner": {"steps": -1}})


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["seed"])


def test_missing_file_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(Outer, tmp_path / "nope.yaml")


def test_command_line_scientific_notation_is_a_number():
    # YAML 1.1 would read 5e-5 as a string; an override means the number
    assert parse_overrides(["inner.lr=5e-5", "seed=7"]) == {"inner": {"lr": 5e-5}, "seed": 7}
    assert load(Outer, None, ["inner.lr=5e-5"]).inner.lr == 5e-5


def test_trainer_threads_set_torch_threads_and_reject_negatives():
    import torch

    from rl.config import load_train_config
    from rl.runner import StageRunner

    with pytest.raises(ConfigError, match="ray.trainer_threads"):
        load_train_config(None, ["ray.trainer_threads=-1"])
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    try:
        StageRunner({"ray": {"trainer_threads": want}, "output_dir": "unused"}, None, "unused")
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)

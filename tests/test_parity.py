"""rl.parity: argument checks, arm configs and the seed summary / table / plot of the curves."""

from __future__ import annotations

import pytest

from rl import parity


def _runs():
    return [{"arm": arm, "seed": s, "reward": [0.1 + 0.01 * i * (2 if arm == "ours" else 1) for i in range(10)],
             "accuracy": [0.2 + 0.02 * i for i in range(10)]} for arm in parity.ARMS for s in (0, 1)]


def test_summary_table_and_plot(tmp_path):
    summary = parity.summarise(_runs(), window=3)
    ours, trl = summary["ours"]["reward"], summary["trl"]["reward"]
    assert ours["first"] == pytest.approx([0.12, 0.12]) and ours["last"] == pytest.approx([0.26, 0.26])
    assert ours["gain_summary"]["mean"] > trl["gain_summary"]["mean"] > 0
    md = parity.table(summary, 3)
    assert md.splitlines()[0].startswith("| arm | reward first 3") and "| ours |" in md and "| trl |" in md
    parity.plot(_runs(), tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_arm_config_forces_deep_only_and_no_filter(tmp_path):
    args = parity.build_parser().parse_args(["--policy", "some/policy", "--steps", "7", "grpo.learning_rate=1e-4"])
    cfg = parity.arm_config(args, seed=2, workdir=str(tmp_path))
    assert cfg.rollout.schedule.kind == "deep_only" and not cfg.rewards.std_filter.enabled
    assert cfg.grpo.sft_coef == 0  # the demo's SFT anchor is off: TRL's arm cannot have it
    assert (cfg.seed, cfg.grpo.steps, cfg.grpo.learning_rate, cfg.grpo.save_steps) == (2, 7, 1e-4, 0)
    assert cfg.policy.name_or_path == "some/policy" and cfg.stages == ["grpo"]


def test_missing_policy_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        parity.main(["--policy", str(tmp_path / "nope"), "--json", str(tmp_path / "x.json")])
    assert err.value.code == 2 and "no config.json there" in capsys.readouterr().err

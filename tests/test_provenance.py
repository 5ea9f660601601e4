"""Run folders that never lie: provenance records, refused config changes, models that cannot load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rl.config import load_train_config
from rl.configlib import to_dict
from rl.provenance import (
    CONFIG_FILE,
    RECORD_FILE,
    ProvenanceError,
    check_run_folder,
    config_hash,
    diff_configs,
    latest_config,
    record_invocation,
)
from rl.train import main

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "configs" / "smoke.yaml")
QWEN = "Qwen/Qwen2.5-VL-3B-Instruct"


def _cfg(out: Path, *overrides: str) -> dict:
    return to_dict(load_train_config(SMOKE, [f"output_dir={out}", *overrides]))


def _folder_with_results(out: Path, *overrides: str) -> dict:
    """A run folder as `rl.train` leaves it after the warm-up stage (record + stage marker)."""
    cfg = _cfg(out, *overrides)
    record_invocation(out, cfg, check_run_folder(out, cfg))
    (out / "stages").mkdir(parents=True, exist_ok=True)
    (out / "p").mkdir()
    (out / "p" / "config.json").write_text("{}")  # the stage's policy folder
    (out / "stages" / "warmup.json").write_text(json.dumps({"metrics": {}, "model_path": str(out / "p"),
                                                            "config_hash": config_hash(cfg)}))
    return cfg


def test_config_hash_ignores_output_dir_and_sees_every_other_key(tmp_path):
    a, b = _cfg(tmp_path / "a"), _cfg(tmp_path / "b")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(_cfg(tmp_path / "a", "grpo.steps=3"))
    assert diff_configs(a, _cfg(tmp_path, "grpo.steps=3", "seed=5")) == {"grpo.steps": (2, 3), "seed": (0, 5)}


def test_fresh_folder_records_config_hash_versions_and_revision(tmp_path):
    cfg = _cfg(tmp_path)
    check = check_run_folder(tmp_path, cfg)
    assert check.fresh and not check.changed
    record_invocation(tmp_path, cfg, check, argv=["rl.train"])
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert record["config_hash"] == config_hash(cfg) == check.config_hash
    run = record["invocations"][0]
    assert run["packages"]["torch"] and run["packages"]["transformers"] and run["python"]
    assert run["code_revision"] and run["argv"] == ["rl.train"]
    assert json.loads((tmp_path / CONFIG_FILE).read_text()) == cfg
    assert json.loads((tmp_path / "configs" / f"{check.config_hash}.json").read_text()) == cfg


def test_changed_config_on_a_folder_with_results_is_refused_and_names_the_keys(tmp_path):
    _folder_with_results(tmp_path)
    before = (tmp_path / CONFIG_FILE).read_bytes()
    with pytest.raises(ProvenanceError, match=r"policy\.name_or_path: \"\" -> \"Qwen/.*Use a new output_dir\."):
        check_run_folder(tmp_path, _cfg(tmp_path, f"policy.name_or_path={QWEN}"))
    # Not a safe key: --resume-with-changes does not cover it either.
    with pytest.raises(ProvenanceError, match=r"not safe to change here: policy\.name_or_path"):
        check_run_folder(tmp_path, _cfg(tmp_path, f"policy.name_or_path={QWEN}"), allow_changes=True)
    assert (tmp_path / CONFIG_FILE).read_bytes() == before


def test_safe_changes_need_the_flag_and_keep_the_first_config(tmp_path):
    first = _folder_with_results(tmp_path)
    longer = _cfg(tmp_path, "grpo.steps=5", "stages=[warmup,grpo]")
    with pytest.raises(ProvenanceError, match="--resume-with-changes"):
        check_run_folder(tmp_path, longer)
    check = check_run_folder(tmp_path, longer, allow_changes=True)
    assert set(check.changed) == {"grpo.steps", "stages"} and not check.fresh
    record_invocation(tmp_path, longer, check)
    assert json.loads((tmp_path / CONFIG_FILE).read_text()) == first  # never replaced
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert [r["config_hash"] for r in record["invocations"]] == [config_hash(first), config_hash(longer)]
    assert record["invocations"][1]["changed"]["grpo.steps"] == [2, 5]
    assert {p.stem for p in (tmp_path / "configs").glob("*.json")} == {config_hash(first), config_hash(longer)}
    assert latest_config(tmp_path) == longer
    assert not check_run_folder(tmp_path, longer).changed  # the same command again needs no flag


def test_same_config_resumes_and_a_folder_without_results_takes_the_new_config(tmp_path):
    cfg = _folder_with_results(tmp_path / "a")
    assert not check_run_folder(tmp_path / "a", cfg).changed
    empty = tmp_path / "b"
    record_invocation(empty, _cfg(empty), check_run_folder(empty, _cfg(empty)))  # a run that died in preflight
    other = _cfg(empty, "seed=3")
    check = check_run_folder(empty, other)
    assert check.fresh
    record_invocation(empty, other, check)
    assert json.loads((empty / CONFIG_FILE).read_text())["seed"] == 3


def test_folder_from_an_older_version_compares_with_defaults_filled_in(tmp_path):
    cfg = _folder_with_results(tmp_path)
    old = json.loads((tmp_path / CONFIG_FILE).read_text())
    del old["grpo"]["sft_coef"]  # a key added after the folder was made, at its default
    (tmp_path / CONFIG_FILE).write_text(json.dumps(old))
    assert not check_run_folder(tmp_path, cfg).changed


def test_rl_train_refuses_a_changed_config_before_any_work(tmp_path, capsys):
    """The issue's first reproduction: a new model on a finished folder."""
    _folder_with_results(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code = main(["--config", SMOKE, f"output_dir={tmp_path}", f"policy.name_or_path={QWEN}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "policy.name_or_path" in err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing touched


def test_hub_model_missing_offline_fails_in_preflight_with_one_line(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "fresh"
    code = main(["--config", SMOKE, f"output_dir={out}", f"policy.name_or_path={QWEN}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert QWEN in err and "HF_HUB_OFFLINE=1" in err and "not in the Hugging Face cache" in err
    assert not (out / CONFIG_FILE).exists() and not (out / "stages").exists()


def test_hub_model_unreachable_fails_in_preflight_with_one_line(tmp_path):
    """The issue's second reproduction, online mode with a hub that does not answer (a closed
    local port stands in for it, so no traffic leaves the machine)."""
    env = dict(os.environ, HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run([sys.executable, "-m", "rl.train", "--config", SMOKE, f"output_dir={tmp_path}/run",
                           f"policy.name_or_path={QWEN}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "policy.name_or_path" in lines[0] and "cannot be reached" in lines[0] and "hf download" in lines[0]


def test_labeler_model_that_cannot_load_fails_in_preflight(tmp_path, capsys):
    code = main(["--config", SMOKE, f"output_dir={tmp_path}/a", f"rlaifv.labeler=model:{tmp_path}/no_labeler"])
    err = capsys.readouterr().err
    assert code == 2 and "rlaifv.labeler" in err and "does not exist" in err
    remote = tmp_path / "remote_code_model"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "minicpmv", "auto_map": {"AutoModel": "m.M"}}))
    code = main(["--config", SMOKE, f"output_dir={tmp_path}/b", f"rlaifv.labeler=model:{remote}"])
    err = capsys.readouterr().err
    assert code == 2 and "rlaifv.labeler" in err and "policy.trust_remote_code: true" in err


def test_damaged_stage_marker_or_checkpoint_state_is_named_and_kept(tmp_path):
    cfg = _folder_with_results(tmp_path)
    marker = tmp_path / "stages" / "warmup.json"
    assert not check_run_folder(tmp_path, cfg).changed  # intact
    marker.write_text('{"metrics": {}, "model_pa')  # a torn write
    with pytest.raises(ProvenanceError, match=r"stages/warmup\.json: damaged stage marker"):
        check_run_folder(tmp_path, cfg)
    assert marker.read_text() == '{"metrics": {}, "model_pa'  # nothing deleted
    marker.write_text(json.dumps({"metrics": {}, "model_path": str(tmp_path / "gone")}))
    with pytest.raises(ProvenanceError, match=r"its policy .*gone is missing"):
        check_run_folder(tmp_path, cfg)
    marker.write_text(json.dumps({"metrics": {}, "model_path": str(tmp_path / "p")}))
    ckpt = tmp_path / "grpo" / "checkpoint-3"
    ckpt.mkdir(parents=True)
    (ckpt / "COMPLETE").write_text("step 3\n")
    (ckpt / "pipeline_state.json").write_text("{not json")
    with pytest.raises(ProvenanceError, match=r"checkpoint-3/pipeline_state\.json: damaged checkpoint state"):
        check_run_folder(tmp_path, cfg)


def test_stop_request_stops_a_trainer_at_the_step_end_and_saves_when_asked(tmp_path):
    from transformers import TrainerControl, TrainerState

    from rl.interrupt import RunInterrupted, StopOnRequest, check_stop, clear_stop, request_stop

    stop = StopOnRequest(tmp_path, save=True)
    state, control = TrainerState(global_step=4), TrainerControl()
    stop.on_step_end(None, state, control)
    assert not control.should_training_stop and stop.stopped_at is None
    stop.raise_if_stopped("GRPO")  # nothing requested: no error
    request_stop(tmp_path, "SIGTERM")
    stop.on_step_end(None, state, control)
    assert control.should_training_stop and control.should_save and stop.stopped_at == 4
    with pytest.raises(RunInterrupted, match=r"GRPO stopped after step 4 \(SIGTERM at .*checkpoint-4 is complete"):
        stop.raise_if_stopped("GRPO")
    no_save = StopOnRequest(tmp_path, save=False)
    control = TrainerControl()
    no_save.on_step_end(None, state, control)
    assert control.should_training_stop and not control.should_save
    with pytest.raises(RunInterrupted, match="before stage rlaifv"):
        check_stop(tmp_path, "before stage rlaifv")
    clear_stop(tmp_path)
    check_stop(tmp_path, "before stage rlaifv")


def test_a_checkpoint_whose_save_died_is_never_the_one_resumed(tmp_path):
    """The save writes TRL's files, then our state, then COMPLETE: a save that dies before the
    marker (here: the state cannot be serialised, as a kill mid-write would leave it) leaves the
    previous complete checkpoint as the one resume loads."""
    from types import SimpleNamespace

    from transformers import TrainerControl

    from rl.checkpoints import PipelineStateCallback, latest_complete

    args = SimpleNamespace(output_dir=str(tmp_path))
    good = PipelineStateCallback(lambda: {"filter": {}}, {"config_hash": "abc"})
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "model.safetensors").write_bytes(b"\0" * 64)
    good.on_save(args, SimpleNamespace(global_step=2, is_world_process_zero=False), TrainerControl())
    assert latest_complete(tmp_path) is None  # a trainer group's other ranks leave the marker to rank 0
    good.on_save(args, SimpleNamespace(global_step=2, is_world_process_zero=True), TrainerControl())
    assert latest_complete(tmp_path) == tmp_path / "checkpoint-2"
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "model.safetensors").write_bytes(b"\0" * 64)  # TRL's part got written
    dying = PipelineStateCallback(lambda: {"filter": object()})
    with pytest.raises(TypeError):
        dying.on_save(args, SimpleNamespace(global_step=4, is_world_process_zero=True), TrainerControl())
    assert not (tmp_path / "checkpoint-4" / "COMPLETE").exists()
    assert latest_complete(tmp_path) == tmp_path / "checkpoint-2"
    state = json.loads((tmp_path / "checkpoint-2" / "pipeline_state.json").read_text())
    assert state["provenance"] == {"config_hash": "abc"}

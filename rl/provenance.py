"""Run-folder provenance: what produced the results in an output folder, and who may add to it.

A run folder holds results (stage markers, complete checkpoints, RLAIF-V pairs) and the record
of where they came from:

* `config.json` - the resolved config the folder's results were first produced with. It is
  written once and never replaced by a config that did not produce them.
* `configs/<hash>.json` - every resolved config that did work in the folder, by config hash.
* `provenance.json` - the config hash of `config.json` and one entry per invocation: its config
  hash, the keys it changed against the folder's config, the code revision, package versions,
  Python and platform, the command line and the time.

Stage markers (`stages/*.json`) and GRPO checkpoints (`pipeline_state.json`) carry the hash of the
config they were produced with. `check_run_folder` runs first (and checks that every stage
marker and checkpoint state still parses) in `rl.train`'s preflight: a folder
with results and a different recorded config is refused (exit 2, the differing keys named)
unless every differing key is safe on resume (`SAFE_ON_RESUME`) and the user passed
`--resume-with-changes`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
RECORD_FILE = "provenance.json"
CONFIGS_DIR = "configs"
# Keys that say where the folder is, not what was computed in it.
IGNORED_KEYS = ("output_dir",)
# Keys whose change on an existing folder cannot alter the results already in it: which stages
# to run, how long the unfinished stages run, how often they save, evaluation settings for the
# stages still to run, and Ray resources. Allowed with `--resume-with-changes` only.
SAFE_ON_RESUME = ("stages", "grpo.steps", "grpo.save_steps", "rlaifv.rounds", "eval.*", "ray.*")
PACKAGES = ("torch", "transformers", "trl", "peft", "vllm", "ray", "datasets", "numpy", "accelerate")


class ProvenanceError(ValueError):
    """The run folder cannot take this run; the message names the folder, the keys and the fix."""


@dataclass
class FolderCheck:
    """What `check_run_folder` decided: the config hash and the keys changed against the folder."""

    config_hash: str
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key -> (recorded, new)
    fresh: bool = True  # no results in the folder yet: this config becomes its config


def config_hash(cfg: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of a resolved config (canonical JSON, `output_dir` left out)."""
    kept = {k: v for k, v in cfg.items() if k not in IGNORED_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaf values (lists are leaves)."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def diff_configs(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ (a key missing on one side shows as `<absent>`)."""
    a, b = flatten(old), flatten(new)
    missing = "<absent>"
    return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if k not in IGNORED_KEYS and a.get(k, missing) != b.get(k, missing)}


def is_safe(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in SAFE_ON_RESUME)


def has_results(out: Path) -> bool:
    """Whether the folder holds anything a run would reuse: a stage marker, a complete
    checkpoint, or RLAIF-V round output."""
    return (any((out / "stages").glob("*.json")) or any(out.glob("*/checkpoint-*/COMPLETE"))
            or any(out.glob("rlaifv/round_*/pairs.parquet")))


def check_results_intact(out: Path) -> None:
    """Every stage marker and every complete checkpoint's state file parses and points at what it
    names; otherwise ProvenanceError naming the file (nothing is deleted: the user decides)."""
    for marker in sorted((out / "stages").glob("*.json")):
        try:
            done = json.loads(marker.read_text())
            model_path = Path(done["model_path"])
            if not isinstance(done["metrics"], dict):
                raise TypeError("metrics is not an object")
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ProvenanceError(f"{marker}: damaged stage marker ({type(exc).__name__}: {exc}); delete it (and "
                                  "the markers of later stages) to rerun that stage, or use a new output_dir") from None
        if not (model_path / "config.json").exists():
            raise ProvenanceError(f"{marker}: its policy {model_path} is missing or incomplete (no config.json); "
                                  "delete the marker to rerun that stage, or use a new output_dir")
    for complete in sorted(out.glob("*/checkpoint-*/COMPLETE")):
        state = complete.parent / "pipeline_state.json"
        if state.exists():
            try:
                json.loads(state.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ProvenanceError(f"{state}: damaged checkpoint state ({exc}); delete {complete.parent} to "
                                      "resume from the checkpoint before it") from None


def _normalise(recorded: dict[str, Any]) -> dict[str, Any]:
    """The recorded config with today's defaults filled in, so keys added to the config since the
    folder was made do not count as changes; unchanged when it no longer parses."""
    from rl.config import TrainConfig
    from rl.configlib import from_dict, to_dict

    try:
        return to_dict(from_dict(TrainConfig, recorded))
    except ValueError:
        return recorded


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_changes(changed: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in changed.items())


def check_run_folder(out: str | Path, cfg: dict[str, Any], allow_changes: bool = False) -> FolderCheck:
    """Decide whether a run with the resolved config `cfg` may use the folder `out`.

    Raises ProvenanceError when the folder holds results from a different config, naming every
    differing key; with `allow_changes` only keys in `SAFE_ON_RESUME` may differ."""
    out = Path(out)
    digest = config_hash(cfg)
    if not (out / CONFIG_FILE).exists() or not has_results(out):
        return FolderCheck(digest, fresh=True)
    check_results_intact(out)
    try:
        changed = recorded_changes(out, cfg)
    except (OSError, json.JSONDecodeError) as exc:
        raise ProvenanceError(f"{out / CONFIG_FILE}: unreadable ({exc}); the folder's results cannot be traced "
                              "to a config. Use a new output_dir.") from None
    if not changed:
        return FolderCheck(digest, fresh=False)
    listing = describe_changes(changed)
    unsafe = [k for k in changed if not is_safe(k)]
    if allow_changes and not unsafe:
        return FolderCheck(digest, changed=changed, fresh=False)
    if allow_changes:
        raise ProvenanceError(
            f"{out} holds results of a different config and --resume-with-changes covers only "
            f"{', '.join(SAFE_ON_RESUME)}; not safe to change here: {', '.join(unsafe)} ({listing}). "
            "Use a new output_dir for this config.")
    hint = (" or pass --resume-with-changes (allowed for these keys)" if not unsafe else "")
    raise ProvenanceError(
        f"{out} holds results produced with a different config; differing keys: {listing}. "
        f"Use a new output_dir{hint}.")


def recorded_changes(out: str | Path, cfg: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys in which `cfg` differs from the config of the folder's latest invocation (the one that
    produced its newest results; after `--resume-with-changes` that is no longer `config.json`)."""
    return diff_configs(_normalise(latest_config(out)), cfg)


def latest_config(out: str | Path) -> dict[str, Any]:
    """The config of the folder's latest invocation (`configs/<hash>.json`); `config.json` for
    folders made before provenance was recorded."""
    out = Path(out)
    try:
        last = json.loads((out / RECORD_FILE).read_text())["invocations"][-1]["config_hash"]
        return json.loads((out / CONFIGS_DIR / f"{last}.json").read_text())
    except (OSError, KeyError, IndexError, json.JSONDecodeError):
        return json.loads((out / CONFIG_FILE).read_text())


def code_revision(root: str | Path | None = None) -> str:
    """The revision of the code that runs: `<sha>` or `<sha>+dirty` in a git checkout, else
    `$RL_CODE_REVISION` or a hash of the sources (`files:<hash>`)."""
    root = Path(root) if root else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("RL_CODE_REVISION") or _files_digest(root)
    return f"{sha}+dirty" if dirty else sha


def _files_digest(root: Path) -> str:
    """`files:<hash>` of the project's Python sources, where there is no git checkout (the copy of
    the working dir that `ray job submit` uploads leaves `.git` out)."""
    digest = hashlib.sha256()
    for folder in ("rl", "rewards", "rollouts", "policies"):
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return f"files:{digest.hexdigest()[:16]}"


def environment() -> dict[str, Any]:
    """Code revision, package versions, Python and platform of this process."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"code_revision": code_revision(), "packages": versions, "python": platform.python_version(),
            "platform": platform.platform(), "machine": platform.machine()}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def record_invocation(out: str | Path, cfg: dict[str, Any], check: FolderCheck,
                      argv: list[str] | None = None) -> dict[str, Any]:
    """Write the folder's record for this run (after `check_run_folder` allowed it); returns the
    provenance record. `config.json` is written only when the folder had no results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(cfg, indent=2) + "\n"
    if check.fresh:
        _write_atomic(out / CONFIG_FILE, text)
    (out / CONFIGS_DIR).mkdir(exist_ok=True)
    _write_atomic(out / CONFIGS_DIR / f"{check.config_hash}.json", text)
    path = out / RECORD_FILE
    record: dict[str, Any] = {}
    if path.exists() and not check.fresh:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            record = {}
    if not record:
        recorded = json.loads((out / CONFIG_FILE).read_text())
        record = {"config_hash": config_hash(_normalise(recorded)), "invocations": []}
    record["invocations"].append({
        "config_hash": check.config_hash,
        "changed": {k: list(v) for k, v in check.changed.items()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": list(sys.argv if argv is None else argv),
        **environment(),
    })
    _write_atomic(path, json.dumps(record, indent=2, default=str) + "\n")
    return record

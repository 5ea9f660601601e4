"""Checkpoint bookkeeping: extra state beside TRL's checkpoints and "complete" markers.

TRL/transformers write `checkpoint-N/` (model, optimizer, scheduler, RNG, trainer state). The
callback here adds our own state (std-filter EMA, mode scheduler, RLPR debias cache) as
`pipeline_state.json` (with the hash of the config that produced the checkpoint under
`provenance`) and, last of all, a `COMPLETE` marker. `latest_complete` only ever
returns a checkpoint with the marker, so a half-written checkpoint (a run killed mid-save) is
never loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

MARKER = "COMPLETE"
STATE_FILE = "pipeline_state.json"


def latest_complete(folder: str | Path) -> Path | None:
    """The highest-step `checkpoint-N` under `folder` that has its COMPLETE marker."""
    best = None
    for path in Path(folder).glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if m and (path / MARKER).exists() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return best[1] if best else None


def load_pipeline_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text())


class PipelineStateCallback(TrainerCallback):
    """On every save: write our state into the new checkpoint, then mark it complete."""

    def __init__(self, get_state: Callable[[], dict[str, Any]], provenance: dict[str, Any] | None = None):
        self.get_state = get_state
        self.provenance = dict(provenance or {})

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir() and state.is_world_process_zero:  # in a trainer group, rank 0 writes
            state_json = json.dumps({**self.get_state(), "provenance": self.provenance}, default=_jsonable)
            (ckpt / STATE_FILE).write_text(state_json)
            (ckpt / MARKER).write_text(f"step {state.global_step}\n")
        return control


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")

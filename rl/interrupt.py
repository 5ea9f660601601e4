"""Graceful stop: SIGTERM (or SIGINT) to `rl.train` ends the run at a step boundary, never mid-write.

The driver's signal handler only writes `<output_dir>/STOP_REQUESTED`; a file, because the stages
run in a Ray actor (another process) by default. Every trainer carries `StopOnRequest`, which sees
the file at the end of an optimizer step: the GRPO trainer then saves a complete checkpoint (its
COMPLETE marker last, as on every save) and stops; the warm-up and DPO trainers stop (those
stages restart on resume). The stage raises `RunInterrupted`, no stage marker is written, and
`rl.train` exits with 128 + the signal number (143 for SIGTERM). A second signal kills at once.
Re-running the same command resumes from the last complete checkpoint.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

STOP_FILE = "STOP_REQUESTED"


class RunInterrupted(RuntimeError):
    """A stop was requested; the message says where the run stopped and how to resume."""


def stop_file(out: str | Path) -> Path:
    return Path(out) / STOP_FILE


def request_stop(out: str | Path, reason: str) -> None:
    path = stop_file(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{reason} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")


def stop_requested(out: str | Path) -> bool:
    return stop_file(out).exists()


def clear_stop(out: str | Path) -> None:
    stop_file(out).unlink(missing_ok=True)


def check_stop(out: str | Path, where: str) -> None:
    """Raise RunInterrupted when a stop was requested (between stages and rounds)."""
    if stop_requested(out):
        raise RunInterrupted(f"stopped {where} ({stop_file(out).read_text().strip()}); "
                             "rerun the same command to resume")


class StopOnRequest(TrainerCallback):
    """Stop training at the next step end once the stop file exists; save first when `save`."""

    def __init__(self, out: str | Path, save: bool):
        self.out = Path(out)
        self.save = save
        self.stopped_at: int | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.stopped_at is None and _any_rank(stop_requested(self.out)):
            self.stopped_at = state.global_step
            control.should_save = control.should_save or self.save
            control.should_training_stop = True
        return control

    def raise_if_stopped(self, stage: str) -> None:
        if self.stopped_at is not None:
            saved = f"; checkpoint-{self.stopped_at} is complete" if self.save else ""
            raise RunInterrupted(f"{stage} stopped after step {self.stopped_at} "
                                 f"({stop_file(self.out).read_text().strip()}){saved}; "
                                 "rerun the same command to resume")


def _any_rank(flag: bool) -> bool:
    """`flag` from any rank of a trainer group (all ranks must stop at the same step, or the ones
    going on wait forever in the next collective); the flag itself in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    import torch

    box = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return bool(box.item())


def install_handlers(out: str | Path) -> None:
    """In the driver: the first SIGTERM/SIGINT requests a stop, a second one exits at once."""

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop_requested(out):
            raise SystemExit(128 + signum)
        request_stop(out, name)
        print(f"[rl.train] {name}: stopping at the next step boundary (send it again to kill now)", flush=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)

"""What the driver hands to every stage: config, output folder, data, policy path, metrics, timers."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl.config import TrainConfig


@dataclass
class RunContext:
    cfg: TrainConfig
    out: Path
    data: Any  # rl.data.loader.LoadedData
    model_path: str  # the current policy (HF folder); stages that train replace it
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    engine: Any = None  # rollout pool (or HF engine), created by the runner when a stage needs it
    runner_evaluates: bool = False  # True under StageRunner: stages need not evaluate themselves
    engine_path: str | None = None  # the policy folder whose weights the engine holds (synced state)

    @property
    def config_hash(self) -> str:
        """The hash of the resolved config (`rl.provenance`), recorded in markers and checkpoints."""
        from rl.configlib import to_dict
        from rl.provenance import config_hash

        return config_hash(to_dict(self.cfg))

    @contextmanager
    def timed(self, name: str):
        """Time a named stage/phase; totals land in `timings` and the log."""
        t0 = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.timings[name] = self.timings.get(name, 0.0) + dt
            print(f"[{name}] done in {dt:.1f} s", flush=True)

    def save_metrics(self) -> Path:
        path = self.out / "report" / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.metrics, indent=2, sort_keys=True, default=float) + "\n")
        return path

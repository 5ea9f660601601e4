"""The torchvision shim: applied only where torchvision fails on its own, and then it works."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from rl.bootstrap import NMS_ERROR, torchvision_needs_shim

ROOT = Path(__file__).resolve().parent.parent
PROBE = textwrap.dedent("""
    import policies.torchvision_shim as shim
    shim.install()
    import torch, torchvision
    print(shim.applied(), getattr(torchvision, "FAKE", "real"), hasattr(torch.ops.torchvision, "nms"))
""")


def _run(code: str, pythonpath: Path | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin"}
    env["PYTHONPATH"] = f"{pythonpath}:{ROOT}" if pythonpath else str(ROOT)
    # -S: no site-packages .pth hooks (the setup's copy of the shim), so only the code under test acts;
    # the environment's packages are added back by hand after the fake one.
    site = next(p for p in sys.path if p.endswith("site-packages"))
    code = f"import sys; sys.path.append({site!r})\n{code}"
    out = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def _fake_torchvision(tmp_path: Path, body: str) -> Path:
    pkg = tmp_path / "torchvision"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(body))
    return tmp_path


def test_shim_is_not_applied_where_torchvision_imports_on_its_own(tmp_path):
    fake = _fake_torchvision(tmp_path, 'FAKE = "imports on its own"\n')
    assert _run(PROBE, fake) == "False imports on its own False"


def test_shim_defines_the_schemas_only_after_the_nms_failure(tmp_path):
    # Behaves like the CUDA-linked wheel: the import aborts unless torchvision::nms has a schema.
    fake = _fake_torchvision(tmp_path, f'''
        import torch
        if not hasattr(torch.ops.torchvision, "nms"):
            raise RuntimeError("{NMS_ERROR}")
        FAKE = "needed the shim"
    ''')
    assert _run(PROBE, fake) == "True needed the shim True"


def test_other_import_errors_are_not_swallowed(tmp_path):
    fake = _fake_torchvision(tmp_path, 'raise RuntimeError("something else is broken")\n')
    code = PROBE.replace("import torch, torchvision", "import torch\ntry:\n    import torchvision\nexcept RuntimeError as e:\n    print(shim.applied(), e)\n    raise SystemExit(0)")
    assert _run(code, fake) == "False something else is broken"


def test_real_torchvision_and_qwen_processors_import_in_a_fresh_process():
    """The environment as the setup left it (with the `.pth` hook): torchvision, its v2 transforms
    and a processor that needs them (Qwen2.5-VL's video processor) all load."""
    code = ("import torchvision\nfrom torchvision.transforms.v2 import functional\n"
            "from transformers import Qwen2VLVideoProcessor\nQwen2VLVideoProcessor()\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_bootstrap_installs_the_shim_for_exactly_the_nms_failure():
    assert torchvision_needs_shim(False, f"RuntimeError: {NMS_ERROR}")
    assert not torchvision_needs_shim(True, "")
    assert not torchvision_needs_shim(False, "ModuleNotFoundError: No module named 'torchvision'")
    assert not torchvision_needs_shim(False, "OSError: libcudart.so.13: cannot open shared object file")

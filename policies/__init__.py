"""The model side: load a VLM + processor (+LoRA), chat rendering with the thinking switch, tiny models.

Importing the package installs the torchvision import hook (`policies.torchvision_shim`: acts only
if torchvision's own import fails on a CPU torch) and the filter for a misleading transformers
warning (`policies.quirks`), so every process that loads a policy has both, whether or not the
setup's `.pth` hook is present.
"""

from policies.quirks import quiet_default_config_warning
from policies.torchvision_shim import install as install_torchvision_shim

install_torchvision_shim()
quiet_default_config_warning()

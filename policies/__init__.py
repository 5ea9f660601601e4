"""The model side: load a VLM + processor (+LoRA), chat rendering with the thinking switch, tiny models."""

from policies.quirks import quiet_default_config_warning

quiet_default_config_warning()

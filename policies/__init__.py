"""The model side: load a VLM + processor (+LoRA), chat rendering with the thinking switch, tiny models."""

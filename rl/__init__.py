"""Driver, stages and experiment entry points of the multimodal RL pipeline (imports without Ray/vLLM)."""

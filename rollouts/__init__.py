"""Ray actors owning vLLM engines, the thinking-mode scheduler, the rollout pool and weight sync."""

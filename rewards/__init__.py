"""Pure, batched reward functions (TRL signature), RLPR, RLAIF-V feedback and hallucination metrics."""

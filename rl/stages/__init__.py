"""Pipeline stages; each is `run(ctx: RunContext) -> dict` returning its metrics."""

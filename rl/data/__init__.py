"""Dataset generation and loading (embedded Shapes set, user parquet/JSONL/hub data)."""

"""Data pipeline: sources -> records.parquet -> <split>.beton -> FFCV loaders (no Ray here)."""

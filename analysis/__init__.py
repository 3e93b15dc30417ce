"""Reading the exported Parquet results and summarizing them (no Ray needed)."""

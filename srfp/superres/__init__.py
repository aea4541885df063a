"""Super-resolve the photo set with every model into one Parquet shard per model (contract: shards.py)."""

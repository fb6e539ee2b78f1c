"""Reading token shards written before the tokenize stage became a Spark job (``spark_jobs/tokenize.py``), which
writes Megatron indexed shards (``tokenmill.core.indexed``) and trains the tokenizer on a sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def load_tokens(path: str | Path) -> np.ndarray:
    """All documents of a token shard concatenated into one int64 stream."""
    names = pq.read_schema(path).names
    name = "input_ids" if "input_ids" in names or "tokens" not in names else "tokens"  # "tokens": shards made before
    column = pq.read_table(path, columns=[name]).column(name).combine_chunks()
    return column.values.to_numpy().astype(np.int64)

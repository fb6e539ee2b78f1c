"""``data`` flow: raw crawl → Spark (extract, filter, redact, dedupe) → Parquet shards + manifest."""

from __future__ import annotations

from prefect import flow

from tokenmill.flows.tasks import cached_clean_corpus, publish_data
from tokenmill.resolve import resolve_config


@flow(name="data", log_prints=True)
def data_flow(config_path: str | None = None, overrides: list[str] | None = None) -> str:
    """Clean the configured crawl into ``<run>/data``; publishes the funnel. Returns the data manifest path."""
    cfg = resolve_config(config_path, overrides)
    manifest = cached_clean_corpus(cfg, str(cfg.run_dir / "data"))
    publish_data(manifest)
    return manifest

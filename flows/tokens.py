"""``tokenize`` flow: kept shards of a data manifest → BPE tokenizer → train/validation token shards."""

from __future__ import annotations

from prefect import flow

from tokenmill.flows.tasks import cached_tokenize_corpus, publish_tokens
from tokenmill.resolve import resolve_config


@flow(name="tokenize", log_prints=True)
def tokenize_flow(data_manifest: str, config_path: str | None = None, overrides: list[str] | None = None) -> str:
    """Tokenize the shards ``data_manifest`` names into ``<run>/tokens``. Returns the tokens manifest path."""
    cfg = resolve_config(config_path, overrides)
    manifest = cached_tokenize_corpus(cfg, data_manifest, str(cfg.run_dir / "tokens"))
    publish_tokens(manifest)
    return manifest

"""Manifests: the JSON files stages hand to each other (paths, counts, hashes, run ids)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename), so a reader never sees half a manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def read_manifest(path: str | Path, stage: str) -> dict[str, Any]:
    """Load a manifest and check it was written by ``stage``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{stage} manifest not found: {path}")
    manifest = json.loads(path.read_text())
    if manifest.get("stage") != stage:
        raise ValueError(f"{path} is a {manifest.get('stage')!r} manifest, expected {stage!r}")
    return manifest

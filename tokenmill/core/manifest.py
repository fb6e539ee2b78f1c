"""Manifests: the JSON files stages hand to each other (paths, counts, hashes, run ids).

A manifest sits at ``<run>/<stage>/manifest.json``. Paths inside its run folder are stored relative to the
manifest's folder (``./train.parquet``, ``../data/manifest.json``) and read back as absolute paths, so a run
folder that is copied or moved elsewhere still resolves; paths outside it and URIs are stored as they are.
"""

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


# Values under these keys are not paths tokenmill wrote: the config as the user's YAML reads, and free text
# (a generated sample starts with the user's prompt). They are stored and read back verbatim.
_VERBATIM_KEYS = frozenset({"config", "sample"})
_RELATIVE_PREFIXES = ("./", "../")


def _map_paths(value: Any, fn) -> Any:
    """``value`` with ``fn`` applied to every string in it (through dicts and lists), skipping ``_VERBATIM_KEYS``."""
    if isinstance(value, dict):
        return {k: v if k in _VERBATIM_KEYS else _map_paths(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_map_paths(v, fn) for v in value]
    if isinstance(value, str):
        return fn(value)
    return value


def _relativizer(folder: Path, root: Path):
    """A string → string function: an absolute local path under ``root`` becomes ``./…`` or ``../…`` from
    ``folder``; anything else (paths outside ``root``, URIs, text) is returned as is. ``folder`` and ``root``
    are compared both as given and with symlinks resolved, as producers write either spelling."""
    pairs = [(str(folder), str(root)), (str(folder.resolve()), str(root.resolve()))]

    def relativize(s: str) -> str:
        if "://" in s or not os.path.isabs(s):
            return s
        p = os.path.normpath(s)
        for here, top in pairs:
            if os.path.commonpath([p, top]) == top:
                rel = os.path.relpath(p, here)
                return rel + "/" if rel in (".", "..") else rel if rel.startswith("../") else "./" + rel
        return s

    return relativize


def write_manifest(path: str | Path, manifest: dict[str, Any], root: str | Path | None = None) -> Path:
    """Write atomically (temp file + rename), so a reader never sees half a manifest.

    Absolute paths inside the run folder ``root`` (default: the folder holding the manifest's folder, as
    manifests sit at ``<run>/<stage>/manifest.json``) are written relative to the manifest's folder, with a
    leading ``./`` or ``../``; ``read_manifest`` makes them absolute again."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(os.path.abspath(path.parent))
    root = Path(os.path.abspath(root)) if root is not None else folder.parent
    if os.path.commonpath([str(folder), str(root)]) != str(root):
        root = folder.parent  # a root that does not hold the manifest is no run folder of it
    stored = json.loads(json.dumps(manifest, default=str))  # Path values become plain strings first
    if root.parent != root:  # a manifest right under / has no run folder: nothing is relativized
        stored = _map_paths(stored, _relativizer(folder, root))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(stored, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_manifest(path: str | Path, stage: str) -> dict[str, Any]:
    """Load a manifest and check it was written by ``stage``. Paths stored relative to the manifest
    (``./…``, ``../…``) come back absolute, resolved against the manifest's folder where it is now."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{stage} manifest not found: {path}")
    manifest = json.loads(path.read_text())
    if manifest.get("stage") != stage:
        raise ValueError(f"{path} is a {manifest.get('stage')!r} manifest, expected {stage!r}")
    folder = os.path.abspath(path.parent)  # as written: relative to the folder as spelled, not its symlink target

    def resolve(s: str) -> str:
        return os.path.normpath(os.path.join(folder, s)) if s.startswith(_RELATIVE_PREFIXES) else s

    return _map_paths(manifest, resolve)


#: A data manifest's funnel row, in reading order (manifests store keys sorted).
FUNNEL_COLUMNS = ("stage", "in", "dropped", "quarantined", "out")


def funnel_rows(funnel: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The funnel's rows with their columns in reading order, for tables in the UIs."""
    return [{column: row[column] for column in FUNNEL_COLUMNS} for row in funnel]


def heldout_split(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """The tokenize-manifest-shaped view of held-out set ``name`` (``splits.validation``), for ``open_split``.
    A ``heldout`` manifest is written by ``spark_jobs.heldout``; training reads it through this view."""
    entry = manifest["sets"].get(name)
    if entry is None:
        raise KeyError(f"no held-out set {name!r}: the manifest has {', '.join(manifest['sets'])}")
    if "split" not in entry:
        raise ValueError(f"held-out set {name!r} has no document left after decontamination")
    return {"format": manifest["format"], "tokenizer": manifest["tokenizer"], "splits": {"validation": entry["split"]}}

"""Readers: turn input files into raw records, one row per WARC record, never losing one.

A record that cannot be read becomes a row with ``error`` set, so it is quarantined
downstream instead of vanishing.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

RAW_SCHEMA = (
    "id string, url string, source string, offset long, content_type string, payload binary, error string"
)

_BATCH_ROWS = 256


def expand_inputs(spec: str) -> list[str]:
    """Resolve a WARC file, a folder (its ``*.warc.gz`` files) or a glob to a sorted list of files."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(str(p) for p in path.glob("*.warc.gz"))
    elif any(ch in spec for ch in "*?["):
        files = sorted(glob.glob(spec))
    elif path.is_file():
        files = [str(path)]
    else:
        raise FileNotFoundError(f"data.input {spec!r} does not exist: give a .warc.gz file, a folder or a glob")
    if not files:
        raise FileNotFoundError(f"data.input {spec!r} matches no .warc.gz files")
    return [os.path.abspath(f) for f in files]


def record_id(source: str, warc_record_id: str | None, offset: int) -> str:
    """Deterministic document id from the record's location (reruns give the same ids)."""
    key = warc_record_id or f"{source}@{offset}"
    return hashlib.sha1(key.encode()).hexdigest()[:20]


class WarcReader:
    """Reads ``response`` records of gzipped WARC files into rows of ``RAW_SCHEMA``."""

    def read_file(self, path: str) -> Iterator[dict]:
        from warcio.archiveiterator import ArchiveIterator

        source = os.path.basename(path)
        offset = 0
        try:
            with open(path, "rb") as fh:
                records = ArchiveIterator(fh)
                for record in records:
                    if record.rec_type != "response":
                        continue
                    headers = record.rec_headers
                    row = {"url": headers.get_header("WARC-Target-URI") or "", "source": source,
                           "content_type": "", "payload": None, "error": None}
                    try:
                        if record.http_headers is not None:
                            row["content_type"] = record.http_headers.get_header("Content-Type") or ""
                        row["payload"] = record.content_stream().read()
                    except Exception as e:  # a corrupt record among good ones
                        row["error"] = f"unreadable WARC record: {type(e).__name__}: {e}"
                    # Only after the payload is read: asking for the offset earlier skips the record's body.
                    offset = records.get_record_offset()
                    row["offset"] = offset
                    row["id"] = record_id(source, headers.get_header("WARC-Record-ID"), offset)
                    yield row
        except Exception as e:  # truncated gzip or garbage: keep what was read, quarantine the rest
            yield {
                "id": record_id(source, None, offset),
                "url": "",
                "source": source,
                "offset": offset,
                "content_type": "",
                "payload": None,
                "error": f"WARC file unreadable after offset {offset}: {type(e).__name__}: {e}",
            }

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """``mapInPandas`` body: a batch of ``path`` rows in, batches of raw records out."""
        for batch in batches:
            for path in batch["path"]:
                rows = []
                for row in self.read_file(path):
                    rows.append(row)
                    if len(rows) >= _BATCH_ROWS:
                        yield object_frame(rows)
                        rows = []
                if rows:
                    yield object_frame(rows)


def object_frame(rows: list[dict], columns: list[str] | None = None) -> pd.DataFrame:
    """A DataFrame of Python objects: pandas 3's Arrow-backed ``str`` columns break Spark's Arrow batches."""
    return pd.DataFrame(rows, columns=columns, dtype=object)

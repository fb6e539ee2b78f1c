"""Readers: turn input files into raw records, one row per WARC record, never losing one.

A record that cannot be read becomes a row with ``error`` set, so it is quarantined
downstream instead of vanishing.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import os
import zlib
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
    elif path.is_file():
        files = [str(path)]
    elif any(ch in spec for ch in "*?["):
        files = sorted(glob.glob(spec))
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
    """Reads ``response`` records of gzipped WARC files into rows of ``RAW_SCHEMA``.

    warcio stops quietly at a truncated gzip member and falls back to ARC parsing on
    non-WARC files, so both are checked here: a short record body, a non-WARC record or a
    file whose gzip stream does not end cleanly each become an ``error`` row.
    """

    def read_file(self, path: str) -> Iterator[dict]:
        from warcio.archiveiterator import ArchiveIterator

        source = os.path.basename(path)
        offset = 0
        try:
            with open(path, "rb") as fh:
                records = ArchiveIterator(fh)
                for record in records:
                    if record.format != "warc":
                        yield _error_row(source, offset, f"not a WARC file (found a {record.format} record)")
                        return
                    if record.rec_type != "response":
                        continue
                    headers = record.rec_headers
                    row = {"url": headers.get_header("WARC-Target-URI") or "", "source": source,
                           "content_type": "", "payload": None, "error": None}
                    try:
                        if record.http_headers is not None:
                            row["content_type"] = record.http_headers.get_header("Content-Type") or ""
                        row["payload"] = record.content_stream().read()
                        if record.raw_stream.limit > 0:
                            row["error"] = (f"truncated WARC record: {record.raw_stream.limit} of "
                                            f"{record.length} bytes missing")
                    except Exception as e:  # a corrupt record among good ones
                        row["error"] = f"unreadable WARC record: {type(e).__name__}: {e}"
                    # Only after the payload is read: asking for the offset earlier skips the record's body.
                    offset = records.get_record_offset()
                    row["offset"] = offset
                    row["id"] = record_id(source, headers.get_header("WARC-Record-ID"), offset)
                    yield row
            problem = _gzip_problem(path)
            if problem:
                yield _error_row(source, offset, f"WARC file damaged after offset {offset}: {problem}")
        except Exception as e:  # garbage in the middle of the file: keep what was read, quarantine the rest
            yield _error_row(source, offset, f"WARC file unreadable after offset {offset}: {type(e).__name__}: {e}")

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


def _error_row(source: str, offset: int, error: str) -> dict:
    return {"id": record_id(source, None, offset) + "-err", "url": "", "source": source, "offset": offset,
            "content_type": "", "payload": None, "error": error}


def _gzip_problem(path: str) -> str | None:
    """Why the file's gzip stream is not intact (truncated, corrupt), or ``None`` when it is."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except (EOFError, OSError, zlib.error) as e:
        return f"{type(e).__name__}: {e}"
    return None


def object_frame(rows: list[dict], columns: list[str] | None = None) -> pd.DataFrame:
    """A DataFrame of Python objects: pandas 3's Arrow-backed ``str`` columns break Spark's Arrow batches."""
    return pd.DataFrame(rows, columns=columns, dtype=object)

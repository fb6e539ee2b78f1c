"""Readers: turn input files of any supported format into raw records, never losing one.

Every reader yields rows of ``RAW_SCHEMA``:

* ``payload`` holds raw HTML bytes (WARC ``response`` records), ``text`` holds already-extracted
  text (WET ``conversion`` records, JSONL, Parquet, plain text): a good row has exactly one of them.
* ``metadata`` is a JSON object string (WARC date and HTTP status, extra JSONL fields or Parquet
  columns) or null.
* ``error`` non-null means quarantine: the row stands for a record (or a stretch of a file) that
  could not be read, and the message names the file and the position.
* ``offset`` is the position of the record in its file: the byte offset for WARC/WET, the 1-based
  line number for JSONL, the 0-based row number for Parquet, 0 for a text file.

A record that cannot be read becomes a row with ``error`` set, so it is quarantined downstream
instead of vanishing; a damaged stretch of a file becomes one such row, and reading resumes after
it where the format allows (WARC: at the next record; JSONL: at the next line; Parquet: at the next
row group).

Ids are deterministic (sha1 of the record's location or of its own id, namespaced by file), so a
rerun gives the same ids. ``source`` is the file's name, or its path relative to ``root`` when a
reader is given one (use that when several input folders hold files of the same name: the derived
ids include ``source``).

Inputs are local paths or URIs (``s3://``, ``gs://``, ``hdfs://``...): ``expand_inputs`` lists them on the
driver, and the readers open each one in the executor through a ``pyarrow.fs`` filesystem built from the URI
and the executor's environment (``filesystem``, ``open_input``).
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import hashlib
import io
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote

import pandas as pd

RAW_SCHEMA = (
    "id string, url string, source string, offset long, content_type string, payload binary, "
    "text string, metadata string, error string"
)
RAW_COLUMNS = [c.split()[0] for c in RAW_SCHEMA.split(", ")]

_BATCH_ROWS = 256
_BATCH_BYTES = 64 << 20  # Spark's Arrow batches use 32-bit offsets: keep a frame's bytes well below 2 GiB
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BOM = b"\xef\xbb\xbf"

# Longest suffix first: ``x.warc.wet.gz`` must match ``.warc.wet.gz``, not ``.gz``.
EXTENSIONS: dict[str, str] = {
    ".warc.wet.gz": "warc",
    ".wet.gz": "warc",
    ".warc.gz": "warc",
    ".warc": "warc",
    ".wet": "warc",
    ".jsonl.zst": "jsonl",
    ".jsonl.gz": "jsonl",
    ".json.gz": "jsonl",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
    ".txt": "text",
}


# --- input expansion ----------------------------------------------------------------------------


def detect_format(path: str) -> str:
    """The format a file's extension names (``warc``, ``jsonl``, ``parquet``, ``text``), else ``unknown``."""
    name = os.path.basename(path).lower()
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return EXTENSIONS[ext]
    return "unknown"


class InputFile(tuple):
    """One input file: unpacks and compares as the ``(path, format)`` pair, and carries what its listing said
    about it, read from no byte of the file: ``size`` in bytes and ``mtime_ns`` (nanoseconds since the epoch,
    ``None`` where the store gives none). Object stores give no content hash in a listing that pyarrow exposes
    (S3's ETag is not in ``pyarrow.fs.FileInfo``), so size and mtime are the input's identity."""

    def __new__(cls, path: str, format: str, size: int | None = None, mtime_ns: int | None = None):
        self = super().__new__(cls, (path, format))
        self.size = size
        self.mtime_ns = mtime_ns
        return self

    def __reduce__(self):
        return (InputFile, (self[0], self[1], self.size, self.mtime_ns))

    def __repr__(self) -> str:
        return f"InputFile({self[0]!r}, {self[1]!r}, size={self.size}, mtime_ns={self.mtime_ns})"

    @property
    def path(self) -> str:
        return self[0]

    @property
    def format(self) -> str:
        return self[1]

    def manifest_entry(self) -> dict[str, Any]:
        """The input as the data manifest records it: path, format, bytes and mtime (ISO 8601, UTC)."""
        mtime = None
        if self.mtime_ns is not None:
            seconds, ns = divmod(self.mtime_ns, 1_000_000_000)
            mtime = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=ns // 1000).isoformat()
        return {"path": self[0], "format": self[1], "bytes": self.size, "mtime": mtime}

    def fingerprint(self) -> str:
        """``path:size:mtime_ns``: what the stage cache keys an input by (a replaced file changes it)."""
        return f"{self[0]}:{self.size}:{self.mtime_ns}"


def input_identity(item: tuple[str, str]) -> dict[str, Any]:
    """``InputFile.manifest_entry`` for an item of ``expand_inputs``; a bare ``(path, format)`` pair is looked up
    (its metadata only: one ``stat`` or one request to the store, never a read of the file)."""
    if not isinstance(item, InputFile):
        path, fmt = item
        item = _identified([path], lambda _: fmt)[0]
    return item.manifest_entry()


def expand_inputs(spec: str, fmt: str = "auto") -> list[InputFile]:
    """Resolve a file, a folder (searched recursively) or a glob to sorted ``(absolute path, format)`` pairs.

    ``spec`` is a local path or a URI: ``s3://bucket/prefix/``, ``gs://``, ``hdfs://host:port/path``, any scheme
    ``pyarrow.fs.FileSystem.from_uri`` knows (``file://`` is a local path). A URI is listed through ``pyarrow.fs``
    (credentials and endpoint from the environment, see ``filesystem``); a folder or prefix is listed recursively,
    and a glob lists the prefix before its first wildcard and matches each name with ``fnmatch``, one path
    segment at a time (``*`` stays within a segment, ``**`` spans any number of them). The pairs of a URI
    input are URIs with the same scheme, so the executors open them the same way.

    With ``fmt="auto"`` the format comes from each file's extension (see ``EXTENSIONS``); a file in a
    folder whose extension is not recognised is returned with format ``"unknown"`` (the job
    quarantines it with a reason) rather than skipped. Any other ``fmt`` applies to every file.
    Files and folders whose names start with ``.`` or ``_`` (``.crc`` checksums, ``_SUCCESS``
    markers: the Hadoop convention) are not inputs and are left out of folder and glob expansion.

    Each pair is an ``InputFile``, which also carries the file's size and mtime from the listing.
    """
    if fmt != "auto" and fmt not in READERS:
        raise ValueError(f"data.format {fmt!r} is not supported: use 'auto' or one of {sorted(READERS)}")

    def format_of(path: str) -> str:
        return detect_format(path) if fmt == "auto" else fmt

    local = _local_path(spec)
    if local is None:
        found = _expand_uri(spec)
        items = [InputFile(uri, format_of(uri), size, mtime) for uri, (size, mtime) in sorted(found.items())]
    else:
        items = _identified(sorted({os.path.abspath(f) for f in _expand_local(spec, local)}), format_of)
    if not items:
        raise FileNotFoundError(
            f"data.input {spec!r} matches no input files: expected files ending in {', '.join(sorted(EXTENSIONS))}"
        )
    return items


def _expand_local(spec: str, local: str) -> list[str]:
    """``expand_inputs`` for a local path: the files it names (``spec`` as given, for the error message)."""
    path = Path(local)
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        return _walk(str(path))
    if any(ch in local for ch in "*?["):
        files = []
        for match in glob.glob(local, recursive=True):
            if _hidden(os.path.basename(match)):
                continue
            files.extend(_walk(match) if os.path.isdir(match) else [match])
        return files
    raise FileNotFoundError(
        f"data.input {spec!r} does not exist: give an input file, a folder or a glob "
        f"(relative paths are resolved from {os.getcwd()!r})"
    )


def _identified(paths: list[str], format_of) -> list[InputFile]:
    """``InputFile``s of files known to exist: local ones ``stat``-ed, URIs asked of their store (metadata only)."""
    items = []
    for path in paths:
        local = _local_path(path)
        if local is not None:
            st = os.stat(local)
            items.append(InputFile(path, format_of(path), st.st_size, st.st_mtime_ns))
        else:
            fs, fs_path = filesystem(path)
            info = fs.get_file_info(fs_path)
            items.append(InputFile(path, format_of(path), info.size, info.mtime_ns))
    return items


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _walk(folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        found.extend(os.path.join(dirpath, f) for f in filenames if not _hidden(f))
    return found


# --- URIs: object stores and other filesystems through pyarrow.fs -------------------------------

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_MAGIC = re.compile(r"[*?[]")
# Schemes whose first segment is a bucket, part of the path inside pyarrow's filesystem ("bucket/key").
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "s3n", "gs", "gcs"})
_S3_SCHEMES = frozenset({"s3", "s3a", "s3n"})
# Environment variables a filesystem may be built from: a change makes a new one (tests set them per test).
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "HADOOP_", "ARROW_")
_FILESYSTEMS: dict[tuple, Any] = {}
_REMOTE_BUFFER = 8 << 20  # one ranged request per 8 MiB read from an object store


def is_uri(spec: str) -> bool:
    """Whether ``spec`` is a URI (``scheme://...``) rather than a local path."""
    return bool(_URI.match(spec))


def _local_path(spec: str) -> str | None:
    """The local path ``spec`` names (a plain path, or a ``file://`` URI), or ``None`` for another URI."""
    m = _URI.match(spec)
    if m is None:
        return spec
    if m.group(1).lower() == "file":
        return unquote(spec[len("file://") :]) or "/"
    return None


def _split_uri(uri: str) -> tuple[str, str, str]:
    """``(scheme, authority, path)`` taken literally: no query or fragment (``?`` is a glob wildcard here)."""
    scheme, rest = uri.split("://", 1)
    authority, _, path = rest.partition("/")
    return scheme.lower(), authority, "/" + path


def filesystem(uri: str):
    """``(pyarrow filesystem, path inside it)`` for a URI, built from the URI and the environment alone.

    That is what makes a URI openable on any executor: nothing is pickled from the driver. S3 (``s3://``, also
    spelled ``s3a://``) takes the AWS SDK's usual settings: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
    (``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, an instance role...), ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
    for an S3-compatible store (MinIO, Ceph, moto) with ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (default
    ``us-east-1`` there; without an endpoint the bucket's own region is looked up). ``gs://`` uses Google's
    application default credentials; ``hdfs://`` needs ``libhdfs`` and the Hadoop classpath (``CLASSPATH``,
    ``HADOOP_HOME``, ``JAVA_HOME``). Filesystems are cached per process, scheme, authority and environment.
    """
    from pyarrow import fs as pafs

    scheme, authority, path = _split_uri(uri)
    if not authority and scheme in _BUCKET_SCHEMES:
        raise ValueError(f"{uri!r} names no bucket: write {scheme}://<bucket>/<key or prefix>")
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    key = (scheme, authority, env)
    fs = _FILESYSTEMS.get(key)
    if fs is None:
        if scheme in _S3_SCHEMES:
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
                fs = pafs.S3FileSystem(endpoint_override=endpoint, region=region)
            else:
                fs = pafs.FileSystem.from_uri(f"s3://{authority}")[0]  # finds the bucket's region
        else:
            fs = pafs.FileSystem.from_uri(f"{scheme}://{authority}/")[0]
        _FILESYSTEMS[key] = fs
    if scheme in _BUCKET_SCHEMES:
        path = authority + path
    return fs, path.rstrip("/") or "/"


def _uri(scheme: str, authority: str, fs_path: str) -> str:
    """The URI of a path inside the filesystem of ``scheme://authority``."""
    if scheme in _BUCKET_SCHEMES:
        return f"{scheme}://{fs_path}"
    return f"{scheme}://{authority}{fs_path}"


def _expand_uri(spec: str) -> dict[str, tuple[int | None, int | None]]:
    """``expand_inputs`` for a URI: ``{file URI: (size, mtime_ns)}`` from one listing (empty when nothing matched).

    As for a local path: an existing file (even one with glob characters in its name) first, then a folder, then
    a glob."""
    from pyarrow import fs as pafs

    scheme, authority, path = _split_uri(spec)
    if _MAGIC.search(authority):
        raise ValueError(f"data.input {spec!r}: a glob cannot match bucket or host names, only paths inside them")
    try:
        fs, fs_path = filesystem(spec)
        info = fs.get_file_info(fs_path)
        if info.type == pafs.FileType.File:
            return {spec: (info.size, info.mtime_ns)}
        if info.type == pafs.FileType.Directory:
            return _listed(fs, scheme, authority, fs_path)
        if _MAGIC.search(path):
            return _globbed(fs, scheme, authority, path)
    except FileNotFoundError:
        raise
    except OSError as e:  # no credentials, access denied, an endpoint that does not answer
        raise OSError(f"data.input {spec!r}: cannot list it: {_describe(e)}") from e
    raise FileNotFoundError(f"data.input {spec!r} does not exist: give an input file, a folder (prefix) or a glob")


def _listed(fs, scheme: str, authority: str, folder: str) -> dict[str, tuple[int | None, int | None]]:
    """Every file under ``folder`` (recursively), hidden files and folders left out, by URI."""
    from pyarrow import fs as pafs

    found = {}
    selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
    for info in fs.get_file_info(selector):
        rel = info.path[len(folder) :].lstrip("/").split("/")
        if info.type == pafs.FileType.File and not any(_hidden(part) for part in rel):
            found[_uri(scheme, authority, info.path)] = (info.size, info.mtime_ns)
    return found


def _globbed(fs, scheme: str, authority: str, path: str) -> dict[str, tuple[int | None, int | None]]:
    """The files a glob (``path`` in ``scheme://authority``) matches: the prefix before its first wildcard is listed
    once, recursively, and a file is kept when its path, or the path of a folder above it, matches the pattern
    segment by segment. As for a local glob, a match whose name is hidden is left out, and a matched folder is
    taken whole, as a folder input is (hidden files and folders in it left out)."""
    from pyarrow import fs as pafs

    segments = path.strip("/").split("/")
    first = next(i for i, s in enumerate(segments) if _MAGIC.search(s))
    base_path = "/" + "/".join(segments[:first])
    pattern = segments[first:]
    base = filesystem(f"{scheme}://{authority}{base_path}")[1]
    found = {}
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base) :].lstrip("/").split("/")
        for k in range(1, len(rel) + 1):
            # rel[:k] matched: the file itself (k == len(rel)) or a folder above it, walked like a folder input
            if _glob_match(pattern, rel[:k]) and not any(_hidden(part) for part in rel[k - 1 :]):
                found[_uri(scheme, authority, info.path)] = (info.size, info.mtime_ns)
                break
    return found


def _glob_match(pattern: list[str], parts: list[str]) -> bool:
    """Whether path segments ``parts`` match glob segments ``pattern`` as ``glob.glob(recursive=True)`` matches
    local paths: ``fnmatch`` per segment, ``**`` for any number of segments, and a wildcard never matches a name
    starting with ``.`` unless the pattern's segment starts with one too."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        for k in range(len(parts) + 1):
            if _glob_match(rest, parts[k:]):
                return True
            if k < len(parts) and parts[k].startswith("."):
                return False
        return False
    if not parts or not fnmatch.fnmatchcase(parts[0], head):
        return False
    if parts[0].startswith(".") and _MAGIC.search(head) and not head.startswith("."):
        return False
    return _glob_match(rest, parts[1:])


def open_input(path: str) -> BinaryIO:
    """A seekable binary file object for a local path or a URI (opened through ``filesystem``, read through an
    8 MiB buffer: each buffer fill is one ranged request to an object store)."""
    local = _local_path(path)
    if local is not None:
        return open(local, "rb")
    fs, fs_path = filesystem(path)
    return io.BufferedReader(_RawInput(fs.open_input_file(fs_path)), buffer_size=_REMOTE_BUFFER)


class _RawInput(io.RawIOBase):
    """A pyarrow random-access file as a raw Python stream (what ``io.BufferedReader`` wraps)."""

    def __init__(self, native):
        self._native = native

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._native.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self._native.read()  # the rest in one request (RawIOBase's own reads 8 KiB at a time)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._native.seek(offset, whence)

    def tell(self) -> int:
        return self._native.tell()

    def close(self) -> None:
        if not self.closed:
            self._native.close()
        super().close()


def _folder_files(folder: str) -> list[str] | None:
    """The files under a folder (hidden ones left out), or ``None`` when ``folder`` is no folder."""
    local = _local_path(folder)
    if local is not None:
        return _walk(local) if os.path.isdir(local) else None
    from pyarrow import fs as pafs

    fs, fs_path = filesystem(folder)
    if fs.get_file_info(fs_path).type != pafs.FileType.Directory:
        return None
    scheme, authority, _ = _split_uri(folder)
    return list(_listed(fs, scheme, authority, fs_path))


# --- rows and ids -------------------------------------------------------------------------------


def record_id(source: str, warc_record_id: str | None, offset: int | str) -> str:
    """Deterministic document id from the record's location (reruns give the same ids)."""
    key = warc_record_id or f"{source}@{offset}"
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def namespaced_id(source: str, given: Any) -> str:
    """The id of a record that brings its own id: namespaced by file, so equal ids in two files differ."""
    value = given if isinstance(given, str) else json.dumps(given, sort_keys=True, default=str)
    return hashlib.sha1(f"{source}#id={value}".encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _row(**fields: Any) -> dict:
    row = dict.fromkeys(RAW_COLUMNS)
    row.update(url="", content_type="")
    row.update(fields)
    return row


def _error_row(source: str, offset: int, error: str, key: str | None = None) -> dict:
    """A quarantine row; ``key`` tells apart several error rows at the same offset."""
    return _row(
        id=record_id(source, None, f"{offset}{key or ''}") + "-err",
        source=source,
        offset=offset,
        error=_printable(error),
    )


def _printable(message: str, limit: int = 500) -> str:
    """One line of ASCII-safe text (binary junk in a message must not break Arrow's UTF-8 columns)."""
    message = " ".join(str(message).split())
    message = message.encode("ascii", "backslashreplace").decode("ascii")
    return message if len(message) <= limit else message[:limit] + "..."


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _metadata(fields: dict) -> str | None:
    """``fields`` (``None`` values dropped) as a JSON object string, or ``None`` when there are none."""
    fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        return None
    try:
        text = json.dumps(fields, ensure_ascii=False, default=_json_default)
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # lone surrogates from JSON escapes: keep them escaped
        return json.dumps(fields, ensure_ascii=True, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "backslashreplace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _utf8_problem(value: str) -> str | None:
    """Why ``value`` cannot be written as UTF-8 (lone surrogates from ``\\ud800`` escapes), or ``None``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"not encodable as UTF-8 at character {e.start} ({e.reason})"
    return None


def object_frame(rows: list[dict], columns: list[str] | None = None) -> pd.DataFrame:
    """A DataFrame of Python objects: pandas 3's Arrow-backed ``str`` columns break Spark's Arrow batches."""
    return pd.DataFrame(rows, columns=columns, dtype=object)


# --- readers ------------------------------------------------------------------------------------


class Reader:
    """Base of the readers: ``read_file`` yields one file's raw rows; ``__call__`` is the ``mapInPandas`` body.

    ``read`` wraps ``read_file`` so that an unexpected failure (a file that cannot be opened, a bug)
    becomes a quarantine row for the rest of the file instead of failing the Spark task.
    """

    format = "unknown"

    def __init__(self, root: str | None = None):
        self.root = root

    def source_name(self, path: str) -> str:
        if self.root:
            if is_uri(path) or is_uri(self.root):
                top = self.root.rstrip("/") + "/"
                return path[len(top) :] if path.startswith(top) else os.path.basename(path)
            return os.path.relpath(path, self.root)
        return os.path.basename(path)

    def read_file(self, path: str) -> Iterator[dict]:
        raise NotImplementedError

    def read(self, path: str) -> Iterator[dict]:
        source = self.source_name(path)
        n = 0
        last_offset = 0
        try:
            for row in self.read_file(path):
                n += 1
                last_offset = row["offset"] or 0
                yield row
        except ImportError:  # a missing package is the environment's fault, not the data's: fail loudly
            raise
        except Exception as e:
            where = f"after {n} row(s), offset {last_offset}" if n else "at the start"
            yield _error_row(
                source, last_offset, f"{source}: cannot read {self.format} file {where}: {_describe(e)}", key="-fail"
            )

    def rows_for(self, path: str, fmt: str | None) -> Iterator[dict]:
        """The rows of one input: this reader's own format (``fmt`` is for dispatching readers)."""
        return self.read(path)

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """``mapInPandas`` body: batches of ``path`` (and optional ``format``) rows in, raw record batches out.

        A frame is cut at ``_BATCH_ROWS`` rows or ``_BATCH_BYTES`` bytes of payload/text, whichever
        comes first, so that many large documents never make an Arrow batch of more than 2 GiB.
        """
        for batch in batches:
            formats = batch["format"] if "format" in batch.columns else [None] * len(batch)
            for path, fmt in zip(batch["path"], formats):
                rows: list[dict] = []
                size = 0
                for row in self.rows_for(path, fmt):
                    rows.append(row)
                    size += len(row["payload"] or b"") + len(row["text"] or "")
                    if len(rows) >= _BATCH_ROWS or size >= _BATCH_BYTES:
                        yield object_frame(rows, RAW_COLUMNS)
                        rows, size = [], 0
                if rows:
                    yield object_frame(rows, RAW_COLUMNS)


class _Resync(Exception):
    """Raised inside the WARC loop when the data at the current offset is not a WARC record."""


class _Pass:
    """What one run of warcio over a WARC file found."""

    def __init__(self):
        self.seen = 0  # records iterated (all types)
        self.last: int | None = None  # offset of the last record iterated
        self.end = 0  # where warcio stopped
        self.pending: dict | None = None  # the last error row, not yet yielded
        self.damage: tuple[int, str] | None = None  # (offset, reason) when warcio raised


class WarcReader(Reader):
    """Reads WARC files (gzipped or not): ``response`` records into ``payload`` rows, WET ``conversion``
    records into ``text`` rows; other record types (warcinfo, request, metadata...) are not documents.

    What warcio does not report is checked here:

    * warcio stops quietly at a truncated gzip member: a record whose body is short becomes an error
      row, and a gzip stream that does not end cleanly after the last record becomes one.
    * warcio parses lines of a non-WARC file as ARC records: a non-WARC record is damage, not data.
    * warcio cannot resynchronise after damage: on garbage or a corrupt gzip member between records
      it raises, or (corruption deep inside a large member) it prints a zlib error, returns a short
      record and stops as if the file had ended. Here the damaged stretch becomes one error row
      naming its byte range, and reading resumes at the next gzip member that decompresses to
      ``WARC/`` (uncompressed files: the next line starting ``WARC/1.``): the good records after
      the damage are still read.
    * A file gzipped as a whole (one gzip stream, not one member per record: warcio refuses it) is
      read as a stream instead; ``offset`` is then the position in the uncompressed stream.

    Trailing zero bytes (gzip padding) are not damage.
    """

    format = "warc"

    def read_file(self, path: str) -> Iterator[dict]:
        source = self.source_name(path)
        with open_input(path) as fh:
            size = fh.seek(0, os.SEEK_END)
            start: int | None = 0
            while start is not None:
                gz = _is_gzip_at(fh, start)
                fh.seek(start)
                p = yield from self._pass(fh, source)
                if p.damage is not None and start == 0 and gz and "non-chunked gzip" in p.damage[1]:
                    # A whole-file gzip: read it again as one stream, past the records already yielded.
                    fh.seek(0)
                    with gzip.GzipFile(fileobj=fh, mode="rb") as stream:
                        p = yield from self._pass(stream, source, skip=p.seen)
                    if p.pending is not None and p.damage is None:
                        yield p.pending
                    elif p.damage is not None:
                        yield from self._damage_rows(source, p, p.damage[0], "the rest of the gzip stream is skipped")
                    return
                last = p.last if p.last is not None else start
                if p.damage is None and gz:
                    # warcio may have stopped early at a corrupt member: look for records after the last one.
                    nxt = _next_warc_record(fh, last + 1, gzip_only=True)
                    if nxt is not None:
                        bad = p.pending["offset"] if p.pending is not None else max(p.end, last + 1)
                        p.damage = (bad, "corrupt gzip data (warcio stopped reading here)")
                if p.damage is None:
                    if p.pending is not None:
                        yield p.pending  # a truncated last record: the file's damage is already reported
                    elif gz:
                        problem = _gzip_problem(fh, last)
                        if problem:
                            yield _error_row(
                                source, p.end, f"{source}: WARC file damaged after byte {p.end}: {problem}"
                            )
                    return
                bad = max(p.damage[0], start if p.last is None else p.last + 1)
                if p.pending is not None and p.pending["offset"] == p.last:
                    bad = p.last  # the damage begins in the record already reported
                nxt = _next_warc_record(fh, bad + 1)
                if nxt is None and _all_zero(fh, bad):
                    if p.pending is not None:
                        yield p.pending
                    return
                where = (
                    f"bytes {bad}-{nxt} skipped, reading resumes at the next record (byte {nxt})"
                    if nxt is not None
                    else f"bytes {bad}-{size} (end of file) skipped"
                )
                yield from self._damage_rows(source, p, bad, where)
                start = nxt

    @staticmethod
    def _damage_rows(source: str, p: _Pass, bad: int, where: str) -> Iterator[dict]:
        message = f"{source}: unreadable WARC data at byte {bad}: {_printable(p.damage[1], 120)}; {where}"
        if p.pending is not None and p.pending["offset"] == bad:
            p.pending["error"] = _printable(f"{p.pending['error']}; {message}", 1000)
            yield p.pending
        else:
            if p.pending is not None:
                yield p.pending
            yield _error_row(source, bad, message, key="-damage")

    def _pass(self, stream, source: str, skip: int = 0):
        """Yield the rows of the records from ``stream``'s position on until warcio stops; returns a
        ``_Pass``. The last error row is held back (``pending``): damage found at its offset is merged in."""
        from warcio.archiveiterator import ArchiveIterator

        records = ArchiveIterator(stream)
        p = _Pass()
        try:
            for record in records:
                offset = records.offset  # the current record's start until it has been read through
                p.seen += 1
                p.last = offset
                if p.seen <= skip:
                    continue
                if p.pending is not None:
                    yield p.pending
                    p.pending = None
                if record.format != "warc":
                    raise _Resync(f"not a WARC record (warcio parsed it as {record.format})")
                if record.rec_type not in ("response", "conversion"):
                    continue
                row = self._record_row(record, source, offset)
                if row["error"]:
                    p.pending = row
                else:
                    yield row
        except Exception as e:
            p.damage = (records.offset, str(e) if isinstance(e, _Resync) else _describe(e))
        p.end = records.offset
        return p

    @staticmethod
    def _record_row(record, source: str, offset: int) -> dict:
        headers = record.rec_headers
        warc_id = headers.get_header("WARC-Record-ID")
        row = _row(
            id=record_id(source, warc_id, offset),
            url=headers.get_header("WARC-Target-URI") or "",
            source=source,
            offset=offset,
        )
        meta: dict[str, Any] = {
            "warc_type": record.rec_type,
            "warc_date": headers.get_header("WARC-Date"),
            "warc_record_id": warc_id,
        }
        try:
            if record.rec_type == "conversion":
                row["content_type"] = headers.get_header("Content-Type") or ""
                meta["refers_to"] = headers.get_header("WARC-Refers-To")
                meta["language"] = headers.get_header("WARC-Identified-Content-Language")
                body = record.content_stream().read()
            else:
                if record.http_headers is not None:
                    row["content_type"] = record.http_headers.get_header("Content-Type") or ""
                    status = record.http_headers.get_statuscode()
                    meta["http_status"] = int(status) if status and status.isdigit() else status
                body = record.content_stream().read()
            if record.raw_stream.limit > 0:
                row["error"] = (
                    f"{source}: truncated WARC record at byte {offset}: "
                    f"{record.raw_stream.limit} of {record.length} bytes missing"
                )
            elif record.rec_type == "conversion":
                try:
                    row["text"] = body.decode("utf-8")
                except UnicodeDecodeError as e:
                    row["error"] = (
                        f"{source}: WET record at byte {offset}: text is not valid UTF-8 "
                        f"(byte {e.start} of the body: {e.reason})"
                    )
            else:
                row["payload"] = body
        except Exception as e:  # a corrupt record among good ones
            row["error"] = f"{source}: unreadable WARC record at byte {offset}: {_describe(e)}"
        if row["error"]:
            row["error"] = _printable(row["error"])
            row["payload"] = row["text"] = None
        row["metadata"] = _metadata(meta)
        return row


def _is_gzip_at(fh, offset: int) -> bool:
    fh.seek(offset)
    return fh.read(2) == _GZIP_MAGIC


def _gzip_problem(fh, start: int) -> str | None:
    """Why the gzip stream from ``start`` to the end is not intact (truncated, corrupt), or ``None``."""
    fh.seek(start)
    try:
        with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
            while gz.read(_CHUNK):
                pass
    except (EOFError, OSError, zlib.error) as e:
        return _describe(e)
    return None


def _all_zero(fh, start: int) -> bool:
    fh.seek(start)
    return all(not chunk.strip(b"\0") for chunk in iter(lambda: fh.read(_CHUNK), b""))


def _next_warc_record(fh, start: int, gzip_only: bool = False) -> int | None:
    """Offset of the first WARC record at or after ``start``: a gzip member that decompresses to
    ``WARC/``, or (unless ``gzip_only``) an uncompressed line starting ``WARC/1.``; ``None`` when there is none.

    The file is scanned forward a chunk at a time (any seekable file: a local one or an object-store one), and
    the scan stops at the first record found."""
    size = fh.seek(0, os.SEEK_END)
    if start >= size:
        return None
    plain_mark, gzip_mark = b"\nWARC/1.", _GZIP_MAGIC + b"\x08"
    low = start if gzip_only else max(start - 1, 0)  # the newline before a line at ``start`` counts
    while low < size:
        fh.seek(low)
        window = fh.read(_CHUNK + len(plain_mark))  # overlaps the next window: a mark across the border is seen here
        hits = []  # (offset, is a gzip member candidate), marks starting in this window's first _CHUNK bytes
        if not gzip_only and 0 <= (i := window.find(plain_mark)) < _CHUNK:
            hits.append((low + i + 1, False))
        i = window.find(gzip_mark, max(0, start - low))
        while 0 <= i < _CHUNK:
            hits.append((low + i, True))
            i = window.find(gzip_mark, i + 1)
        for pos, member in sorted(hits):
            if not member or _warc_member_at(fh, pos):
                return pos
        low += _CHUNK
    return None


def _warc_member_at(fh, pos: int) -> bool:
    """Whether a gzip member that decompresses to ``WARC/`` starts at ``pos``."""
    fh.seek(pos)
    try:
        head = zlib.decompressobj(31).decompress(fh.read(65536), 5)
    except zlib.error:
        head = b""
    return head == b"WARC/"


def _decompressed_chunks(fh) -> tuple[str, Iterator[bytes]]:
    """(compression name, chunks of the decompressed stream), the compression told by magic bytes.

    A truncated or corrupt stream raises (``EOFError``, ``OSError``, ``zlib.error``, ``ZstdError``)
    after the chunks that could be decompressed.
    """
    head = fh.read(4)
    fh.seek(0)
    if head.startswith(_GZIP_MAGIC):
        return "gzip", _gzip_chunks(fh)
    if head == _ZSTD_MAGIC:
        import zstandard  # here, not in the generator: a missing package must not pass for a damaged file

        return "zstd", _zstd_chunks(fh, zstandard)
    return "plain", iter(lambda: fh.read(_CHUNK), b"")


def _gzip_chunks(fh) -> Iterator[bytes]:
    # ``read1``, not ``read``: ``read`` drops what it decompressed in the call that hits the truncation.
    with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
        while chunk := gz.read1(_CHUNK):
            yield chunk


def _zstd_chunks(fh, zstandard) -> Iterator[bytes]:
    """Streaming zstd over concatenated frames; a stream that ends inside a frame raises ``EOFError``
    (``zstandard``'s own readers return a short stream silently)."""
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << 31)  # files written with --long=31
    obj, fed = dctx.decompressobj(), False
    while data := fh.read(_CHUNK):
        while data:
            out = obj.decompress(data)
            fed = True
            if out:
                yield out
            if obj.eof:
                data = obj.unused_data
                obj, fed = dctx.decompressobj(), False
            else:
                data = b""
    if fed and not obj.eof:
        raise EOFError("zstd stream ends inside a frame (file truncated)")


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines (with their ``\\n``) of a chunked byte stream; a last line without ``\\n`` comes out only when
    the stream ends cleanly, so a line cut by a truncated stream is never taken for a whole one."""
    pending = bytearray()
    for chunk in chunks:
        start = 0
        while (nl := chunk.find(b"\n", start)) >= 0:
            if pending:
                pending += chunk[start : nl + 1]
                yield bytes(pending)
                pending.clear()
            else:
                yield chunk[start : nl + 1]
            start = nl + 1
        pending += chunk[start:]
    if pending:
        yield bytes(pending)


class JsonlReader(Reader):
    """Reads JSON Lines (plain, gzip or zstd, told by magic bytes): one JSON object per line.

    ``text`` (a string) is required; ``id`` and ``url`` are optional; other fields go to ``metadata``.
    ``offset`` is the 1-based line number. Blank lines are skipped (they hold no record).

    Ids: without an ``id`` field, ``sha1(source@line)``; with one, the id is *namespaced by file*
    (``sha1(source#id=<id>)``) so that two files numbering their records 0, 1, 2... do not collide
    (equal ids would defeat dedup's tie-break); the original id is kept in ``metadata["id"]``.

    A malformed line, a non-object line, a missing or non-string ``text``, invalid UTF-8 or text
    that cannot be written as UTF-8 each give one error row naming the line. A truncated or corrupt
    gzip/zstd stream gives one error row after the last whole line read.
    """

    format = "jsonl"

    def read_file(self, path: str) -> Iterator[dict]:
        source = self.source_name(path)
        lineno = 0
        with open_input(path) as fh:
            compression, chunks = _decompressed_chunks(fh)
            try:
                for raw in _lines(chunks):
                    lineno += 1
                    if lineno == 1 and raw.startswith(_BOM):
                        raw = raw[len(_BOM) :]
                    if raw.strip():
                        yield self._line_row(raw, source, lineno)
            except Exception as e:
                yield _error_row(
                    source,
                    lineno + 1,
                    f"{source}: {compression} stream damaged after line {lineno} "
                    f"(the rest of the file is unreadable): {_describe(e)}",
                    key="-stream",
                )

    @staticmethod
    def _line_row(raw: bytes, source: str, lineno: int) -> dict:
        where = f"{source}: line {lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return _error_row(source, lineno, f"{where}: invalid UTF-8 at byte {e.start} of the line ({e.reason})")
        try:
            obj = json.loads(line.rstrip("\r\n"))
        except (json.JSONDecodeError, RecursionError) as e:
            return _error_row(source, lineno, f"{where}: malformed JSON: {_describe(e)}")
        if not isinstance(obj, dict):
            return _error_row(source, lineno, f"{where}: expected a JSON object, found {type(obj).__name__}")
        return _document_row(obj, source, lineno, where)


def _document_row(fields: dict, source: str, offset: int, where: str) -> dict:
    """A row for a record of named fields (a JSON object, a Parquet row): ``text`` required, ``id``/``url`` optional."""
    fields = dict(fields)
    if "text" not in fields:
        return _error_row(source, offset, f"{where}: no 'text' field (fields: {', '.join(map(str, fields))[:200]})")
    text = fields.pop("text")
    if not isinstance(text, str):
        return _error_row(source, offset, f"{where}: 'text' is {type(text).__name__}, not a string")
    given_id = fields.pop("id", None)
    url = fields.pop("url", None)
    meta = {}
    if given_id is not None:
        meta["id"] = given_id
    if url is not None and not isinstance(url, str):
        meta["url"], url = url, None
    meta.update(fields)
    for name, value in (("text", text), ("url", url or "")):
        problem = _utf8_problem(value)
        if problem:
            return _error_row(source, offset, f"{where}: '{name}' is {problem}")
    return _row(
        id=namespaced_id(source, given_id) if given_id is not None else record_id(source, None, offset),
        url=url or "",
        source=source,
        offset=offset,
        content_type="text/plain",
        text=text,
        metadata=_metadata(meta),
    )


class ParquetReader(Reader):
    """Reads Parquet files with pyarrow, one row group and record batch at a time.

    The file needs a string ``text`` column; ``id`` and ``url`` are optional (ids as in
    ``JsonlReader``); other columns go to ``metadata``. ``offset`` is the 0-based row number.
    An unreadable file, or a schema without a string ``text`` column, gives one error row for the
    file (naming the schema found); an unreadable row group gives one error row for its rows, and
    reading goes on with the next group; a null ``text`` gives an error row for that row.
    """

    format = "parquet"

    def read_file(self, path: str) -> Iterator[dict]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = self.source_name(path)
        try:
            if _local_path(path) is not None:
                pf = pq.ParquetFile(path)
            else:
                fs, fs_path = filesystem(path)
                pf = pq.ParquetFile(fs_path, filesystem=fs)
            schema = pf.schema_arrow
        except Exception as e:
            yield _error_row(source, 0, f"{source}: unreadable Parquet file: {_describe(e)}")
            return
        found = ", ".join(f"{f.name}: {f.type}" for f in schema)
        if "text" not in schema.names:
            yield _error_row(source, 0, f"{source}: Parquet file has no 'text' column (schema: {found})")
            return
        text_type = schema.field("text").type
        if pa.types.is_dictionary(text_type):
            text_type = text_type.value_type
        if not (
            pa.types.is_string(text_type)
            or pa.types.is_large_string(text_type)
            or getattr(pa.types, "is_string_view", lambda t: False)(text_type)
        ):
            yield _error_row(
                source,
                0,
                f"{source}: Parquet column 'text' is {schema.field('text').type}, not a string (schema: {found})",
            )
            return
        first = 0
        for group in range(pf.num_row_groups):
            n_rows = pf.metadata.row_group(group).num_rows
            row_no = first
            try:
                for batch in pf.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group]):
                    for fields in batch.to_pylist():
                        where = f"{source}: row {row_no}"
                        if fields.get("text") is None:
                            yield _error_row(source, row_no, f"{where}: 'text' is null")
                        else:
                            yield _document_row(fields, source, row_no, where)
                        row_no += 1
            except Exception as e:
                yield _error_row(
                    source,
                    row_no,
                    f"{source}: unreadable Parquet row group {group} from row {row_no} "
                    f"(rows {row_no}-{first + n_rows - 1} quarantined): {_describe(e)}",
                    key="-group",
                )
            first += n_rows


class TextReader(Reader):
    """Reads plain text: one document per ``.txt`` file (a folder: each ``.txt`` file in it, recursively).

    The text must be UTF-8 (a leading BOM is dropped); otherwise the file is one error row naming
    the byte where decoding failed. ``offset`` is 0; the id is ``sha1(source@0)``.
    """

    format = "text"

    def read_file(self, path: str) -> Iterator[dict]:
        files = _folder_files(path)
        if files is not None:
            for file in sorted(f for f in files if f.lower().endswith(".txt")):
                yield from self.read_file(file)
            return
        source = self.source_name(path)
        with open_input(path) as fh:
            data = fh.read()
        if data.startswith(_BOM):
            data = data[len(_BOM) :]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            yield _error_row(source, 0, f"{source}: text file is not valid UTF-8 (byte {e.start}: {e.reason})")
            return
        yield _row(id=record_id(source, None, 0), source=source, offset=0, content_type="text/plain", text=text)


READERS: dict[str, type[Reader]] = {
    "warc": WarcReader,
    "jsonl": JsonlReader,
    "parquet": ParquetReader,
    "text": TextReader,
}
WetReader = WarcReader  # WET files are WARC files of ``conversion`` records


def read_any(path: str, fmt: str | None = None, root: str | None = None) -> Iterator[dict]:
    """The raw rows of one file read as ``fmt`` (told from the extension when ``None`` or ``"auto"``).

    An ``unknown`` format gives one error row saying what the file is and how to read it.
    """
    if fmt in (None, "auto"):
        fmt = detect_format(path)
    reader_cls = READERS.get(fmt)
    if reader_cls is None:
        source = Reader(root).source_name(path)
        yield _error_row(
            source,
            0,
            f"{source}: unrecognised input file type (format {fmt!r}): not read; "
            f"known extensions are {', '.join(sorted(EXTENSIONS))}, or set data.format "
            f"to one of {sorted(READERS)}",
        )
        return
    yield from reader_cls(root).read(path)


class AnyReader(Reader):
    """``mapInPandas`` body for mixed inputs: each ``path`` is read with the reader its ``format`` column names
    (the pairs ``expand_inputs`` returns), told from the extension when there is no such column."""

    def rows_for(self, path: str, fmt: str | None) -> Iterator[dict]:
        return read_any(path, fmt, self.root)

    def read_file(self, path: str) -> Iterator[dict]:
        return read_any(path, None, self.root)

"""A hostile input corpus: damaged, mislabelled and oversized files next to good ones.

``build_hostile_corpus(folder)`` writes the files and returns, for each, what the readers must make
of it: the good records (by content fingerprint, so a lost *or altered* record shows), the number
of quarantine rows and words their error messages must contain. The expected numbers are worked
out here from how each file was made, not by running the readers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

BIG = 10 * 1024 * 1024 + 17  # a document a little over 10 MB


def fingerprint(content: str | bytes) -> str:
    """What a good record is known by: the sha1 of its text (UTF-8) or payload."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    return hashlib.sha1(data).hexdigest()


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def big_text(seed: int) -> str:
    """About 10 MB of words (cheap to make and to compress)."""
    words = [f"w{seed}x{i}" for i in range(1000)]
    unit = " ".join(words) + "\n"
    return (unit * (BIG // len(unit) + 1))[:BIG]


# --- WARC ---------------------------------------------------------------------------------------


def warc_member(url: str, body: bytes, kind: str = "response", gz: bool = True) -> bytes:
    """One WARC record (one gzip member when ``gz``): an HTTP response, or a WET conversion record."""
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=gz)
    if kind == "response":
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))
    elif kind == "conversion":
        writer.write_record(
            writer.create_warc_record(url, "conversion", payload=io.BytesIO(body), warc_content_type="text/plain")
        )
    elif kind == "request":
        writer.write_record(writer.create_warc_record(url, "request", payload=io.BytesIO(body)))
    elif kind == "warcinfo":
        writer.write_record(writer.create_warcinfo_record(url, {"software": "tokenmill-tests"}))
    return buf.getvalue()


def html(n: int, extra: str = "") -> bytes:
    return f"<html><body><p>page {n} {extra}</p></body></html>".encode()


# --- the corpus ---------------------------------------------------------------------------------


def build_hostile_corpus(folder: str | Path) -> dict:
    """Write the corpus under ``folder``; returns ``{"files": {relative path: expectation}, "good": n,
    "quarantined": m}`` where an expectation is ``{"format", "good": [fingerprints], "errors": count,
    "error_words": [words each found in some error message of the file]}``."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}

    def expect(name: str, fmt: str, good: list, errors: int = 0, words: tuple = ()) -> None:
        files[name] = {
            "format": fmt,
            "good": [fingerprint(g) for g in good],
            "errors": errors,
            "error_words": list(words),
        }

    def write(name: str, data: bytes) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    # WARC: good records, with warcinfo and request records that are not documents.
    bodies = [html(i) for i in range(3)]
    data = warc_member("good.warc.gz", b"", "warcinfo")
    for i, body in enumerate(bodies):
        data += warc_member(f"http://good/{i}", b"GET / HTTP/1.1\r\n\r\n", "request")
        data += warc_member(f"http://good/{i}", body)
    write("good.warc.gz", data)
    expect("good.warc.gz", "warc", bodies)

    # WET: conversion records carry extracted text (one of them empty: an empty document is fine).
    texts = ["first extracted text", "", "third text, with ünïcödé ✓"]
    data = warc_member("good.warc.wet.gz", b"", "warcinfo")
    for i, t in enumerate(texts):
        data += warc_member(f"http://wet/{i}", t.encode("utf-8"), "conversion")
    write("crawl/good.warc.wet.gz", data)
    expect("crawl/good.warc.wet.gz", "warc", texts)

    # A 10 MB page in a WARC.
    body = ("<html><body><p>" + big_text(1) + "</p></body></html>").encode()
    write("crawl/big.warc.gz", warc_member("http://big/", body))
    expect("crawl/big.warc.gz", "warc", [body])

    # Garbage between gzip members: warcio raises and stops; the reader resyncs at the next member.
    bodies = [html(i, "around garbage") for i in range(4)]
    data = (
        warc_member("http://g/0", bodies[0])
        + warc_member("http://g/1", bodies[1])
        + random_bytes(2000, seed=11)
        + warc_member("http://g/3", bodies[2])
        + warc_member("http://g/4", bodies[3])
    )
    write("crawl/garbage_in_middle.warc.gz", data)
    expect(
        "crawl/garbage_in_middle.warc.gz",
        "warc",
        bodies,
        1,
        ("unreadable WARC data", "reading resumes at the next record"),
    )

    # A corrupt gzip member deep inside a large record: warcio prints a zlib error, returns a short
    # record and stops as if at the end of the file; the reader quarantines the record and goes on.
    good = [html(0, "before corrupt member"), html(2, "after corrupt member")]
    broken = bytearray(warc_member("http://c/1", random_bytes(300_000, seed=12)))
    for k in range(150_000, 150_020):
        broken[k] ^= 0x55
    data = warc_member("http://c/0", good[0]) + bytes(broken) + warc_member("http://c/2", good[1])
    write("crawl/corrupt_member.warc.gz", data)
    expect("crawl/corrupt_member.warc.gz", "warc", good, 1, ("byte", "reading resumes at the next record"))

    # Cut in the middle of the last record's gzip member.
    bodies = [html(i, "before the cut") for i in range(2)]
    last = warc_member("http://t/2", random_bytes(4000, seed=13))
    data = warc_member("http://t/0", bodies[0]) + warc_member("http://t/1", bodies[1]) + last[: len(last) // 2]
    write("crawl/truncated.warc.gz", data)
    expect("crawl/truncated.warc.gz", "warc", bodies, 1, ("truncated WARC record",))

    # A WARC gzipped as a whole (``gzip file.warc``): warcio refuses it; read as one stream.
    bodies = [html(i, "whole-file gzip") for i in range(3)]
    plain = b"".join(warc_member(f"http://w/{i}", b, gz=False) for i, b in enumerate(bodies))
    write("crawl/whole_file_gzip.warc.gz", gzip.compress(plain))
    expect("crawl/whole_file_gzip.warc.gz", "warc", bodies)

    # Random bytes under a WARC name.
    write("crawl/random.warc.gz", random_bytes(5000, seed=14))
    expect("crawl/random.warc.gz", "warc", [], 1, ("unreadable",))

    # JSONL: good records, an empty document, ids and extra fields.
    records = [{"id": i, "url": f"http://j/{i}", "text": f"json document {i}", "lang": "en"} for i in range(3)]
    records.append({"text": ""})
    write("good.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    expect("good.jsonl", "jsonl", [r["text"] for r in records])

    # zstd, the same ids as good.jsonl (namespaced by file, they do not collide).
    write(
        "good.jsonl.zst",
        zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in records[:3]).encode()),
    )
    expect("good.jsonl.zst", "jsonl", [r["text"] for r in records[:3]])

    # A 10 MB document on one gzipped line.
    text = big_text(2)
    write("big.jsonl.gz", gzip.compress((json.dumps({"text": text}) + "\n").encode(), compresslevel=1))
    expect("big.jsonl.gz", "jsonl", [text])

    # Invalid UTF-8 in one line between good ones.
    lines = [
        json.dumps({"text": "fine before"}).encode(),
        b'{"text": "bad \xff\xfe bytes"}',
        json.dumps({"text": "fine after"}).encode(),
    ]
    write("bad_utf8.jsonl", b"\n".join(lines) + b"\n")
    expect("bad_utf8.jsonl", "jsonl", ["fine before", "fine after"], 1, ("invalid UTF-8", "line 2"))

    # Malformed lines between good ones (a blank line is no record).
    lines = [
        json.dumps({"text": "good one"}),
        '{"text": "unterminated',  # malformed JSON
        json.dumps({"text": "good two", "id": "a"}),
        "[1, 2, 3]",  # not an object
        json.dumps({"id": "no-text"}),  # no text
        json.dumps({"text": 42}),  # text not a string
        '{"text": "lone \\ud800 surrogate"}',  # valid JSON, but not writable as UTF-8
        "",
        json.dumps({"text": "good three", "meta": {"nested": [1, 2]}}),
    ]
    write("malformed.jsonl", ("\n".join(lines) + "\n").encode())
    expect(
        "malformed.jsonl",
        "jsonl",
        ["good one", "good two", "good three"],
        5,
        (
            "malformed JSON",
            "line 2",
            "expected a JSON object",
            "no 'text' field",
            "not a string",
            "not encodable as UTF-8",
        ),
    )

    # A gzipped JSONL cut short: every whole line before the cut is read, then one quarantine row.
    rnd = random.Random(17)  # words that do not compress away: the stream has many blocks to cut between
    full = "".join(
        json.dumps({"text": f"line {i} " + " ".join(str(rnd.getrandbits(40)) for _ in range(8))}) + "\n"
        for i in range(8000)
    ).encode()
    cut = gzip.compress(full)
    cut = cut[: len(cut) // 2]
    part = zlib.decompressobj(31).decompress(cut)
    survivors = part[: part.rfind(b"\n") + 1].decode().splitlines()
    assert 0 < len(survivors) < 8000
    write("truncated.jsonl.gz", cut)
    expect(
        "truncated.jsonl.gz",
        "jsonl",
        [json.loads(s)["text"] for s in survivors],
        1,
        ("gzip stream damaged after line",),
    )

    # The same with zstd (whose own stream readers end short without a word).
    cut = zstandard.ZstdCompressor().compress(full)
    cut = cut[: len(cut) // 2]
    part = zstandard.ZstdDecompressor().decompressobj().decompress(cut)
    survivors = part[: part.rfind(b"\n") + 1].decode().splitlines()
    assert 0 < len(survivors) < 8000
    write("truncated.jsonl.zst", cut)
    expect(
        "truncated.jsonl.zst",
        "jsonl",
        [json.loads(s)["text"] for s in survivors],
        1,
        ("zstd stream damaged after line",),
    )

    # Random bytes under a JSONL name: each "line" is its own quarantine row.
    data = random_bytes(3000, seed=15)
    assert not data.startswith((b"\x1f\x8b", b"\x28\xb5\x2f\xfd"))
    write("random.jsonl", data)
    expect("random.jsonl", "jsonl", [], sum(1 for seg in data.split(b"\n") if seg.strip()), ("line 1",))

    # Parquet: good rows (one with a null text), the wrong schema, text not a string, not Parquet at all.
    table = pa.table(
        {
            "id": ["p0", "p1", "p2", "p3"],
            "text": ["parquet zero", "", None, "parquet three"],
            "score": [0.5, 0.1, 0.2, 0.9],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2)
    write("tables/good.parquet", buf.getvalue())
    expect("tables/good.parquet", "parquet", ["parquet zero", "", "parquet three"], 1, ("row 2", "'text' is null"))

    buf = io.BytesIO()
    pq.write_table(pa.table({"content": ["a", "b"], "n": [1, 2]}), buf)
    write("tables/wrong_schema.parquet", buf.getvalue())
    expect("tables/wrong_schema.parquet", "parquet", [], 1, ("no 'text' column", "content: string"))

    buf = io.BytesIO()
    pq.write_table(pa.table({"text": [1, 2, 3]}), buf)
    write("tables/text_not_string.parquet", buf.getvalue())
    expect("tables/text_not_string.parquet", "parquet", [], 1, ("'text' is int64, not a string",))

    write("tables/random.parquet", random_bytes(2000, seed=16))
    expect("tables/random.parquet", "parquet", [], 1, ("unreadable Parquet file",))

    # Plain text: a document per file; an empty one, a 10 MB one, one with invalid UTF-8.
    write("texts/good.txt", b"A plain text document.\nTwo lines.\n")
    expect("texts/good.txt", "text", ["A plain text document.\nTwo lines.\n"])
    write("texts/empty.txt", b"")
    expect("texts/empty.txt", "text", [""])
    text = big_text(3)
    write("texts/big.txt", text.encode())
    expect("texts/big.txt", "text", [text])
    write("texts/bad_utf8.txt", b"caf\xe9 latin-1, not UTF-8\n")
    expect("texts/bad_utf8.txt", "text", [], 1, ("not valid UTF-8", "byte 3"))

    # An unknown extension: quarantined with a reason, not skipped.
    write("notes.md", b"# not an input format\n")
    expect("notes.md", "unknown", [], 1, ("unrecognised input file type",))

    return {
        "files": files,
        "good": sum(len(f["good"]) for f in files.values()),
        "quarantined": sum(f["errors"] for f in files.values()),
    }

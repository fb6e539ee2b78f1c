"""tokenmill.spark_jobs.readers: input files of every format to raw rows, never losing a record; input expansion."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import zlib
from pathlib import Path

import pandas as pd
import pytest
from hostile import build_hostile_corpus, fingerprint, warc_member
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from tokenmill.spark_jobs import readers
from tokenmill.spark_jobs.readers import (
    RAW_SCHEMA,
    READERS,
    AnyReader,
    InputFile,
    JsonlReader,
    ParquetReader,
    TextReader,
    WarcReader,
    expand_inputs,
    input_identity,
    object_frame,
    read_any,
    record_id,
)

RAW_COLUMNS = [c.split()[0] for c in RAW_SCHEMA.split(", ")]


def write_warc(path: Path, pages: list[tuple[str, str, bytes]], with_noise: bool = True) -> Path:
    """A gzipped WARC: a warcinfo record, then per page a request (if ``with_noise``) and a response."""
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        if with_noise:
            writer.write_record(writer.create_warcinfo_record(path.name, {"software": "tokenmill-tests"}))
        for url, content_type, body in pages:
            if with_noise:
                writer.write_record(
                    writer.create_warc_record(
                        url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
                    )
                )
            http = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))
    return path


def random_bytes(n: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    return bytes(rnd.getrandbits(8) for _ in range(n))


PAGES = [
    ("http://example.com/a", "text/html; charset=utf-8", b"<html><body><p>alpha</p></body></html>"),
    ("http://example.com/b", "application/pdf", b"%PDF-1.4 not really"),
    ("http://example.com/c", "text/html", b"<html><body><p>gamma</p></body></html>"),
]


def test_one_row_per_response_record(tmp_path):
    path = write_warc(tmp_path / "x.warc.gz", PAGES)
    rows = list(WarcReader().read_file(str(path)))
    assert len(rows) == len(PAGES)  # warcinfo and request records are skipped
    for row, (url, ct, body) in zip(rows, PAGES):
        assert set(row) == set(RAW_COLUMNS)
        assert row["url"] == url
        assert row["content_type"] == ct
        assert row["payload"] == body
        assert row["error"] is None
        assert row["source"] == "x.warc.gz"
    offsets = [r["offset"] for r in rows]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_offsets_point_at_the_records(tmp_path):
    from warcio.archiveiterator import ArchiveIterator

    path = write_warc(tmp_path / "x.warc.gz", PAGES)
    rows = list(WarcReader().read_file(str(path)))
    with open(path, "rb") as fh:
        for row in rows:
            fh.seek(row["offset"])
            record = next(iter(ArchiveIterator(fh)))
            assert record.rec_type == "response"
            assert record.rec_headers.get_header("WARC-Target-URI") == row["url"]


def test_ids_are_deterministic_and_distinct(tmp_path):
    path = write_warc(tmp_path / "x.warc.gz", PAGES)
    first = [r["id"] for r in WarcReader().read_file(str(path))]
    second = [r["id"] for r in WarcReader().read_file(str(path))]
    assert first == second
    assert len(set(first)) == len(first)
    assert all(isinstance(i, str) and len(i) == 20 for i in first)


def test_record_id_falls_back_to_location():
    assert record_id("a.warc.gz", None, 10) == record_id("a.warc.gz", None, 10)
    assert record_id("a.warc.gz", None, 10) != record_id("a.warc.gz", None, 11)
    assert record_id("a.warc.gz", None, 10) != record_id("b.warc.gz", None, 10)
    assert record_id("a.warc.gz", "<urn:uuid:1>", 10) == record_id("b.warc.gz", "<urn:uuid:1>", 99)


@pytest.mark.parametrize(
    "garbage",
    [
        random_bytes(3000, seed=1),  # not gzip, not text
        b"<!doctype html><html><body>oops</body></html>\n",  # an HTML page saved under a .warc.gz name
    ],
)
def test_garbage_file_yields_one_quarantine_row(tmp_path, garbage):
    path = tmp_path / "junk.warc.gz"
    path.write_bytes(garbage)
    rows = list(WarcReader().read_file(str(path)))
    assert len(rows) == 1
    assert rows[0]["error"] and "unreadable" in rows[0]["error"]
    assert rows[0]["payload"] is None
    assert rows[0]["source"] == "junk.warc.gz"
    assert set(rows[0]) == set(RAW_COLUMNS)


def test_plain_text_file_is_quarantined_not_read_as_records(tmp_path):
    """A text file under a ``.warc.gz`` name is garbage: it must be quarantined (every row has ``error``).

    warcio falls back to its ARC parser for lines with several space-separated fields, which turns each
    line of such a file into an empty "response" record that would be silently dropped as ``not_html``.
    """
    path = tmp_path / "notes.warc.gz"
    path.write_bytes(b"this is not a WARC file at all\n" * 5)
    rows = list(WarcReader().read_file(str(path)))
    assert rows, "the file vanished without a trace"
    assert all(r["error"] for r in rows), f"{sum(not r['error'] for r in rows)} fake records read from a text file"


def truncated_copy(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """A WARC of three responses with incompressible bodies, cut in the middle of the last record."""
    bodies = [random_bytes(4000, seed) for seed in range(3)]
    pages = [(f"http://example.com/{i}", "text/html", b) for i, b in enumerate(bodies)]
    full = write_warc(tmp_path / "full.warc.gz", pages, with_noise=False)
    last_offset = [r["offset"] for r in WarcReader().read_file(str(full))][-1]
    data = full.read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[: last_offset + (len(data) - last_offset) // 2])
    return cut, bodies


def test_truncated_file_keeps_good_records(tmp_path):
    cut, bodies = truncated_copy(tmp_path)
    rows = list(WarcReader().read_file(str(cut)))
    assert len(rows) >= 2
    assert [r["payload"] for r in rows[:2]] == bodies[:2]
    assert [r["error"] for r in rows[:2]] == [None, None]
    assert [r["url"] for r in rows[:2]] == ["http://example.com/0", "http://example.com/1"]


def test_truncated_record_is_quarantined_not_silently_shortened(tmp_path):
    """The module promises every record read ends up as a row, and an unreadable one has ``error`` set.

    The last record of the cut file is only half there: it must come out as a row with ``error``
    set, and no row without an error may carry a partial payload.
    """
    cut, bodies = truncated_copy(tmp_path)
    rows = list(WarcReader().read_file(str(cut)))
    clean = [r for r in rows if r["error"] is None]
    assert all(r["payload"] in bodies for r in clean), "a truncated payload was passed on as a good record"
    assert any(r["error"] for r in rows), "the truncated record was lost without a quarantine row"


def test_call_maps_batches_of_paths_to_raw_frames(tmp_path):
    a = write_warc(tmp_path / "a.warc.gz", PAGES[:2])
    b = write_warc(tmp_path / "b.warc.gz", PAGES[2:])
    batches = [pd.DataFrame({"path": [str(a)]}), pd.DataFrame({"path": [str(b)]})]
    frames = list(WarcReader()(iter(batches)))
    out = pd.concat(frames, ignore_index=True)
    assert len(out) == 3
    assert set(RAW_COLUMNS) <= set(out.columns)
    assert list(out["source"]) == ["a.warc.gz", "a.warc.gz", "b.warc.gz"]
    assert all(f.dtypes.eq(object).all() for f in frames)


def test_object_frame_keeps_given_columns_even_when_empty():
    frame = object_frame([], ["id", "text"])
    assert list(frame.columns) == ["id", "text"] and len(frame) == 0
    frame = object_frame([{"id": "1", "text": "x"}], ["id", "text"])
    assert frame["id"].dtype == object


# --- expand_inputs ------------------------------------------------------------------------------


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("b.warc.gz", "a.warc.gz", "notes.txt"):
        (folder / name).write_bytes(b"")
    return folder


def test_expand_folder_lists_every_file_sorted_absolute_with_its_format(corpus):
    (corpus / "sub").mkdir()
    (corpus / "sub" / "c.jsonl.zst").write_bytes(b"")
    (corpus / "README.md").write_bytes(b"")
    assert expand_inputs(str(corpus)) == [
        (str(corpus / "README.md"), "unknown"),  # not skipped: the job quarantines it with a reason
        (str(corpus / "a.warc.gz"), "warc"),
        (str(corpus / "b.warc.gz"), "warc"),
        (str(corpus / "notes.txt"), "text"),
        (str(corpus / "sub" / "c.jsonl.zst"), "jsonl"),
    ]


def test_expand_skips_hidden_and_underscore_files(corpus):
    (corpus / "_SUCCESS").write_bytes(b"")
    (corpus / ".a.warc.gz.crc").write_bytes(b"")
    (corpus / ".cache").mkdir()
    (corpus / ".cache" / "x.jsonl").write_bytes(b"")
    assert [os_path for os_path, _ in expand_inputs(str(corpus))] == [
        str(corpus / "a.warc.gz"),
        str(corpus / "b.warc.gz"),
        str(corpus / "notes.txt"),
    ]


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("x.warc.gz", "warc"),
        ("x.warc", "warc"),
        ("x.wet.gz", "warc"),
        ("x.warc.wet.gz", "warc"),
        ("X.WARC.GZ", "warc"),
        ("x.jsonl", "jsonl"),
        ("x.jsonl.gz", "jsonl"),
        ("x.jsonl.zst", "jsonl"),
        ("x.json.gz", "jsonl"),
        ("x.parquet", "parquet"),
        ("x.txt", "text"),
        ("x.json", "unknown"),
        ("x.gz", "unknown"),
        ("x", "unknown"),
    ],
)
def test_format_detected_by_extension(tmp_path, name, fmt):
    path = tmp_path / name
    path.write_bytes(b"")
    assert expand_inputs(str(path)) == [(str(path), fmt)]


def test_explicit_format_applies_to_every_file(corpus):
    assert {fmt for _, fmt in expand_inputs(str(corpus), fmt="jsonl")} == {"jsonl"}
    with pytest.raises(ValueError, match="data.format 'csv' is not supported"):
        expand_inputs(str(corpus), fmt="csv")


def test_expand_glob(corpus):
    assert expand_inputs(str(corpus / "b*.warc.gz")) == [(str(corpus / "b.warc.gz"), "warc")]
    assert expand_inputs(str(corpus / "*.warc.gz")) == [
        (str(corpus / "a.warc.gz"), "warc"),
        (str(corpus / "b.warc.gz"), "warc"),
    ]


def test_expand_single_file_relative_becomes_absolute(corpus, monkeypatch):
    monkeypatch.chdir(corpus)
    assert expand_inputs("a.warc.gz") == [(str(corpus / "a.warc.gz"), "warc")]


def test_expand_existing_file_with_glob_characters_in_its_name(tmp_path):
    path = tmp_path / "crawl[1].warc.gz"
    path.write_bytes(b"")
    assert expand_inputs(str(path)) == [(str(path), "warc")]


def test_expand_missing_path_is_a_helpful_error(tmp_path):
    missing = tmp_path / "nope.warc.gz"
    with pytest.raises(FileNotFoundError) as e:
        expand_inputs(str(missing))
    assert str(missing) in str(e.value)
    assert "data.input" in str(e.value) and "does not exist" in str(e.value)


def test_expand_gives_each_file_its_size_and_mtime_without_reading_it(corpus, monkeypatch):
    (corpus / "a.warc.gz").write_bytes(b"12345")
    os.utime(corpus / "a.warc.gz", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    monkeypatch.setattr(readers, "open_input", None)  # listing never opens an input
    item = expand_inputs(str(corpus))[0]
    assert isinstance(item, InputFile) and (item.path, item.format) == (str(corpus / "a.warc.gz"), "warc")
    assert (item.size, item.mtime_ns) == (5, 1_700_000_000_123_456_789)
    entry = {"path": item.path, "format": "warc", "bytes": 5, "mtime": "2023-11-14T22:13:20.123456+00:00"}
    assert input_identity(item) == entry
    assert input_identity((item.path, "warc")) == entry  # a bare pair: one stat
    assert item.fingerprint() == f"{corpus / 'a.warc.gz'}:5:1700000000123456789"
    assert pickle.loads(pickle.dumps(item)).mtime_ns == item.mtime_ns
    (corpus / "a.warc.gz").write_bytes(b"123456")
    assert expand_inputs(str(corpus))[0].fingerprint() != item.fingerprint()  # a replaced input is noticed


def test_expand_file_uri_is_a_local_path(corpus):
    assert expand_inputs(f"file://{corpus}/b*.warc.gz") == [(str(corpus / "b.warc.gz"), "warc")]


def test_expand_empty_folder_and_unmatched_glob(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches no input files"):
        expand_inputs(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="matches no input files"):
        expand_inputs(str(tmp_path / "*.warc.gz"))


# --- the hostile corpus: every file accounted for -----------------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    expected = build_hostile_corpus(folder)
    rows = {}
    for path, fmt in expand_inputs(str(folder)):
        rows[str(Path(path).relative_to(folder))] = list(read_any(path, fmt))
    return folder, expected, rows


def _good_fingerprints(rows):
    return sorted(
        fingerprint(r["payload"] if r["payload"] is not None else r["text"]) for r in rows if r["error"] is None
    )


def test_hostile_corpus_files_are_found_with_their_formats(hostile):
    folder, expected, _ = hostile
    found = {str(Path(p).relative_to(folder)): fmt for p, fmt in expand_inputs(str(folder))}
    assert found == {name: e["format"] for name, e in expected["files"].items()}


def test_hostile_corpus_every_record_accounted_for(hostile):
    """For every file: good rows + error rows == what the corpus says, and no good record is lost or altered."""
    _, expected, rows = hostile
    problems = []
    for name, exp in expected["files"].items():
        got = rows[name]
        errors = [r for r in got if r["error"] is not None]
        if len(errors) != exp["errors"]:
            problems.append(
                f"{name}: {len(errors)} error rows, expected {exp['errors']}: {[r['error'][:120] for r in errors]}"
            )
        if _good_fingerprints(got) != sorted(exp["good"]):
            problems.append(f"{name}: good records differ: {len(got) - len(errors)} read, {len(exp['good'])} expected")
    assert not problems, "\n".join(problems)
    total = sum(len(r) for r in rows.values())
    assert total == expected["good"] + expected["quarantined"]


def test_hostile_corpus_error_rows_name_file_position_and_problem(hostile):
    _, expected, rows = hostile
    for name, exp in expected["files"].items():
        errors = [r["error"] for r in rows[name] if r["error"] is not None]
        for error in errors:
            assert Path(name).name in error, f"{name}: error does not name the file: {error}"
            assert error.isascii() and "\n" not in error
        for word in exp["error_words"]:
            assert any(word in e for e in errors), f"{name}: no error mentions {word!r}: {errors}"


def test_hostile_corpus_rows_follow_the_schema(hostile):
    _, _, rows = hostile
    for name, got in rows.items():
        for r in got:
            assert set(r) == set(RAW_COLUMNS), name
            assert r["source"] == Path(name).name
            assert isinstance(r["id"], str) and isinstance(r["offset"], int)
            if r["error"] is None:
                assert (r["payload"] is None) != (r["text"] is None), f"{name}: exactly one of payload/text"
                assert r["payload"] is None or isinstance(r["payload"], bytes)
            else:
                assert r["payload"] is None and r["text"] is None
            if r["metadata"] is not None:
                assert isinstance(json.loads(r["metadata"]), dict)


def test_hostile_corpus_ids_are_distinct_and_deterministic(hostile):
    folder, _, rows = hostile
    ids = [r["id"] for got in rows.values() for r in got]
    assert len(set(ids)) == len(ids)
    again = [r["id"] for path, fmt in expand_inputs(str(folder)) for r in read_any(path, fmt)]
    assert sorted(again) == sorted(ids)


def test_ten_megabyte_documents_pass_whole(hostile):
    _, _, rows = hostile
    for name in ("big.jsonl.gz", "texts/big.txt", "crawl/big.warc.gz"):
        (row,) = rows[name]
        assert row["error"] is None
        assert len(row["text"] if row["text"] is not None else row["payload"]) > 10 * 1024 * 1024


def test_any_reader_maps_the_expanded_pairs_to_frames(hostile, monkeypatch):
    """The Spark body for mixed inputs, fed the ``(path, format)`` pairs; frames are cut by bytes too."""
    folder, expected, _ = hostile
    monkeypatch.setattr(readers, "_BATCH_BYTES", 1 << 20)
    pairs = expand_inputs(str(folder))
    batch = pd.DataFrame(pairs, columns=["path", "format"])
    frames = list(AnyReader()(iter([batch.iloc[:5], batch.iloc[5:]])))
    out = pd.concat(frames, ignore_index=True)
    assert len(out) == expected["good"] + expected["quarantined"]
    assert list(out.columns) == RAW_COLUMNS
    assert all(f.dtypes.eq(object).all() for f in frames)
    big = [f for f in frames if f["text"].map(lambda t: len(t or "")).sum() > 10 * 1024 * 1024]
    assert all(len(f) == 1 for f in big), "a 10 MB document shares a frame"


# --- reader specifics ---------------------------------------------------------------------------


def _next_record_reference(data: bytes, start: int, gzip_only: bool) -> int | None:
    """``_next_warc_record`` as it was written for an mmap of the whole file: the scan by chunks must agree."""
    if start >= len(data):
        return None
    plain = -1 if gzip_only else data.find(b"\nWARC/1.", start - 1)
    plain = plain + 1 if plain >= 0 else None
    pos = start
    while True:
        pos = data.find(b"\x1f\x8b\x08", pos)
        if pos < 0 or (plain is not None and pos > plain):
            return plain
        try:
            head = zlib.decompressobj(31).decompress(data[pos : pos + 65536], 5)
        except zlib.error:
            head = b""
        if head == b"WARC/":
            return pos
        pos += 1


@pytest.mark.parametrize("chunk", [3, 8, 61, 1 << 20])
def test_next_warc_record_scans_by_chunks_like_a_whole_file_search(monkeypatch, chunk):
    """Marks across chunk borders, false gzip magic, plain and gzipped records after garbage."""
    monkeypatch.setattr(readers, "_CHUNK", chunk)
    data = (
        warc_member("http://n/0", b"<p>zero</p>")
        + b"junk \x1f\x8b\x08 not gzip\n"
        + random_bytes(300, seed=5)
        + warc_member("http://n/1", b"<p>one</p>", gz=False)
        + b"\nWARC/0.9 not a record\n"
        + warc_member("http://n/2", b"<p>two</p>")
        + random_bytes(100, seed=6)
        + warc_member("http://n/3", b"<p>three</p>", gz=False)
    )
    fh = io.BytesIO(data)
    starts = sorted({*range(1, len(data), 37), *range(1, 40), *range(len(data) - 40, len(data) + 2)})
    for gzip_only in (False, True):
        for start in starts:
            want = _next_record_reference(data, start, gzip_only)
            assert readers._next_warc_record(fh, start, gzip_only) == want, (start, gzip_only)


def test_readers_registry_and_unknown_format(tmp_path):
    assert READERS == {"warc": WarcReader, "jsonl": JsonlReader, "parquet": ParquetReader, "text": TextReader}
    path = tmp_path / "data.csv"
    path.write_text("a,b\n")
    (row,) = read_any(str(path), "unknown")
    assert row["error"].startswith("data.csv: unrecognised input file type") and "data.format" in row["error"]
    assert list(read_any(str(path))) == [row]  # format told from the extension


def test_warc_metadata_and_wet_text(tmp_path):
    path = write_warc(tmp_path / "x.warc.gz", PAGES[:1])
    (row,) = WarcReader().read_file(str(path))
    meta = json.loads(row["metadata"])
    assert meta["http_status"] == 200 and meta["warc_type"] == "response"
    assert meta["warc_date"] and meta["warc_record_id"].startswith("<urn:uuid:")
    assert row["text"] is None

    wet = tmp_path / "x.warc.wet.gz"
    wet.write_bytes(
        warc_member("http://example.com/t", "héllo".encode(), "conversion")
        + warc_member("http://example.com/u", b"bad \xff", "conversion")
    )
    good, bad = WarcReader().read_file(str(wet))
    assert good["text"] == "héllo" and good["payload"] is None and good["content_type"] == "text/plain"
    assert good["url"] == "http://example.com/t"
    assert bad["error"] and "not valid UTF-8" in bad["error"] and str(bad["offset"]) in bad["error"]


def test_plain_warc_with_garbage_between_records_resyncs(tmp_path):
    bodies = [b"<p>one</p>", b"<p>two</p>", b"<p>three</p>"]
    data = (
        warc_member("http://x/1", bodies[0], gz=False)
        + b"junk that is no record\r\n\r\n"
        + warc_member("http://x/2", bodies[1], gz=False)
        + warc_member("http://x/3", bodies[2], gz=False)
    )
    path = tmp_path / "plain.warc"
    path.write_bytes(data)
    rows = list(WarcReader().read_file(str(path)))
    assert [r["payload"] for r in rows if not r["error"]] == bodies
    (err,) = [r for r in rows if r["error"]]
    assert "resumes at the next record" in err["error"]


def test_uncompressed_warc_is_not_reported_as_damaged_gzip(tmp_path):
    path = tmp_path / "plain.warc"
    path.write_bytes(warc_member("http://x/1", b"<p>one</p>", gz=False))
    assert [r["error"] for r in WarcReader().read_file(str(path))] == [None]


def test_trailing_zero_padding_is_not_damage(tmp_path):
    path = tmp_path / "padded.warc.gz"
    path.write_bytes(warc_member("http://x/1", b"<p>one</p>") + b"\0" * 512)
    assert [r["error"] for r in WarcReader().read_file(str(path))] == [None]


def test_jsonl_ids_metadata_and_namespacing(tmp_path):
    line = json.dumps({"id": 7, "url": "http://j/7", "text": "seven", "lang": "en", "score": 0.5}) + "\n"
    (tmp_path / "a.jsonl").write_text(line)
    (tmp_path / "b.jsonl").write_text(line)
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "no id"}) + "\n" + json.dumps({"text": "two"}))
    (a,) = JsonlReader().read_file(str(tmp_path / "a.jsonl"))
    (b,) = JsonlReader().read_file(str(tmp_path / "b.jsonl"))
    assert a["id"] != b["id"], "equal ids in two files must not collide"
    assert a["id"] == next(JsonlReader().read_file(str(tmp_path / "a.jsonl")))["id"]
    assert (a["url"], a["text"], a["offset"], a["payload"]) == ("http://j/7", "seven", 1, None)
    assert json.loads(a["metadata"]) == {"id": 7, "lang": "en", "score": 0.5}
    c1, c2 = JsonlReader().read_file(str(tmp_path / "c.jsonl"))  # the last line has no newline: still read
    assert (c1["offset"], c2["offset"], c2["text"]) == (1, 2, "two")
    assert c1["id"] == record_id("c.jsonl", None, 1) and c1["metadata"] is None and c1["url"] == ""


def test_jsonl_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps({"text": "one"}).encode()
        + b"\r\n"
        + json.dumps({"text": "two"}).encode()
        + b"\r\n"
    )
    assert [(r["text"], r["error"]) for r in JsonlReader().read_file(str(path))] == [("one", None), ("two", None)]


def test_zstd_multi_frame_and_json_gz(tmp_path):
    import gzip

    import zstandard

    frames = b"".join(
        zstandard.ZstdCompressor().compress((json.dumps({"text": f"t{i}"}) + "\n").encode()) for i in range(3)
    )
    (tmp_path / "m.jsonl.zst").write_bytes(frames)
    assert [r["text"] for r in read_any(str(tmp_path / "m.jsonl.zst"))] == ["t0", "t1", "t2"]
    (tmp_path / "c4.json.gz").write_bytes(gzip.compress(b'{"text": "c4"}\n'))
    assert [r["text"] for r in read_any(str(tmp_path / "c4.json.gz"))] == ["c4"]


def test_parquet_ids_and_metadata(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"text": pa.array(["a", "b"], pa.large_string()), "url": ["http://p/0", None], "lang": ["en", "de"]}),
        tmp_path / "t.parquet",
    )
    r0, r1 = ParquetReader().read_file(str(tmp_path / "t.parquet"))
    assert (r0["text"], r0["url"], r0["offset"], json.loads(r0["metadata"])) == ("a", "http://p/0", 0, {"lang": "en"})
    assert (r1["url"], r1["offset"], r1["id"]) == ("", 1, record_id("t.parquet", None, 1))


def test_text_reader_reads_a_folder_of_txt_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("bee")
    (tmp_path / "d" / "a.txt").write_text("\ufeffay")  # the BOM is dropped
    (tmp_path / "d" / "skip.md").write_text("not text")
    rows = list(TextReader().read_file(str(tmp_path / "d")))
    assert [(r["source"], r["text"]) for r in rows] == [("a.txt", "ay"), ("b.txt", "bee")]


def test_root_makes_sources_and_ids_distinct_for_same_named_files(tmp_path):
    for lang in ("en", "de"):
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "part-0.txt").write_text(lang)
    plain = [next(TextReader().read_file(str(tmp_path / lang / "part-0.txt")))["id"] for lang in ("en", "de")]
    assert plain[0] == plain[1]  # by file name alone they collide: give the readers a root
    rooted = [next(read_any(str(tmp_path / lang / "part-0.txt"), "text", root=str(tmp_path))) for lang in ("en", "de")]
    assert [r["source"] for r in rooted] == ["en/part-0.txt", "de/part-0.txt"]
    assert rooted[0]["id"] != rooted[1]["id"]


def test_an_unexpected_failure_becomes_a_quarantine_row(tmp_path):
    class Broken(JsonlReader):
        def read_file(self, path):
            yield from super().read_file(path)
            raise RuntimeError("disk on fire")

    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"text": "kept"}) + "\n")
    good, bad = Broken().read(str(path))
    assert good["text"] == "kept"
    assert "x.jsonl" in bad["error"] and "after 1 row(s)" in bad["error"] and "disk on fire" in bad["error"]


def test_unopenable_file_becomes_a_quarantine_row(tmp_path):
    (row,) = read_any(str(tmp_path / "gone.jsonl"), "jsonl")
    assert "gone.jsonl" in row["error"] and "FileNotFoundError" in row["error"]

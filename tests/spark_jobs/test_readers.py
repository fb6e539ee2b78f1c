"""spark_jobs.readers: WARC files to raw rows, never losing a record; input expansion."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pandas as pd
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from spark_jobs.readers import RAW_SCHEMA, WarcReader, expand_inputs, object_frame, record_id

RAW_COLUMNS = [c.split()[0] for c in RAW_SCHEMA.split(", ")]


def write_warc(path: Path, pages: list[tuple[str, str, bytes]], with_noise: bool = True) -> Path:
    """A gzipped WARC: a warcinfo record, then per page a request (if ``with_noise``) and a response."""
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        if with_noise:
            writer.write_record(writer.create_warcinfo_record(path.name, {"software": "tokenmill-tests"}))
        for url, content_type, body in pages:
            if with_noise:
                writer.write_record(writer.create_warc_record(
                    url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")))
            http = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=http))
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


@pytest.mark.parametrize("garbage", [
    random_bytes(3000, seed=1),                         # not gzip, not text
    b"<!doctype html><html><body>oops</body></html>\n",  # an HTML page saved under a .warc.gz name
])
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


def test_expand_folder_lists_only_warc_gz_sorted_absolute(corpus):
    files = expand_inputs(str(corpus))
    assert files == [str(corpus / "a.warc.gz"), str(corpus / "b.warc.gz")]


def test_expand_glob(corpus):
    assert expand_inputs(str(corpus / "b*.warc.gz")) == [str(corpus / "b.warc.gz")]
    assert expand_inputs(str(corpus / "*.warc.gz")) == [str(corpus / "a.warc.gz"), str(corpus / "b.warc.gz")]


def test_expand_single_file_relative_becomes_absolute(corpus, monkeypatch):
    monkeypatch.chdir(corpus)
    assert expand_inputs("a.warc.gz") == [str(corpus / "a.warc.gz")]


def test_expand_existing_file_with_glob_characters_in_its_name(tmp_path):
    path = tmp_path / "crawl[1].warc.gz"
    path.write_bytes(b"")
    assert expand_inputs(str(path)) == [str(path)]


def test_expand_missing_path_is_a_helpful_error(tmp_path):
    missing = tmp_path / "nope.warc.gz"
    with pytest.raises(FileNotFoundError) as e:
        expand_inputs(str(missing))
    assert str(missing) in str(e.value)
    assert "data.input" in str(e.value) and "does not exist" in str(e.value)


def test_expand_empty_folder_and_unmatched_glob(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches no .warc.gz files"):
        expand_inputs(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="matches no .warc.gz files"):
        expand_inputs(str(tmp_path / "*.warc.gz"))

"""The shipped held-out clean set (data/heldout/clean-eval.jsonl): well formed, documented, and not in the sample crawl.

No network: it reads the committed files only. (Not named test_heldout.py: tests/spark_jobs/test_heldout.py has that
basename, and the test folders have no __init__.py, so pytest would refuse to collect both.)
"""

import hashlib
import html
import json
import re
from collections import Counter
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HELDOUT = REPO_ROOT / "data" / "heldout"
SAMPLE = REPO_ROOT / "data" / "sample"
CLEAN = HELDOUT / "clean-eval.jsonl"

COUNTS = {"sotu": 24, "pgdoc": 16, "pydoc": 16}
MIN_CHARS, MAX_CHARS = 2_000, 10_000  # per document (build_heldout.py MIN_CHARS, MAX_CHARS)
MIN_BYTES, MAX_BYTES = 300_000, 600_000  # the whole file
NGRAM = 13
SAMPLE_URL = {  # where the sample crawl puts a document of each source
    "sotu": "https://www.presidency.example/sotu/{}.html",
    "pgdoc": "https://www.postgresql.org/docs/15/{}.html",
    "pydoc": "https://docs.python.org/3.11/library/{}.html",
}


def _words(text):
    return re.findall(r"[^\W_]+", text.lower())


def _grams(words):
    return {hash(tuple(words[i : i + NGRAM])) for i in range(len(words) - NGRAM + 1)}


@pytest.fixture(scope="module")
def rows():
    return [json.loads(line) for line in CLEAN.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def manifest():
    lines = (SAMPLE / "manifest.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def test_documents_are_well_formed(rows):
    raw = CLEAN.read_bytes()
    assert raw.endswith(b"\n") and not raw.endswith(b"\n\n")
    lines = raw.decode("utf-8").splitlines()
    assert lines == [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows]  # the build's exact form
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    for r in rows:
        assert set(r) == {"id", "source", "title", "text"}
        assert r["source"] in COUNTS and r["id"].startswith(r["source"] + "/")
        assert r["title"].strip() and r["text"].strip() == r["text"] and r["text"]
        assert "<" not in r["title"] and not re.search(r"</?(div|span|p|a)\b", r["text"])  # no markup left


def test_sizes_are_within_the_stated_range(rows):
    assert Counter(r["source"] for r in rows) == COUNTS
    for r in rows:
        assert MIN_CHARS <= len(r["text"]) <= MAX_CHARS, r["id"]
    assert MIN_BYTES <= CLEAN.stat().st_size <= MAX_BYTES


def test_sha256_and_counts_are_the_documented_ones(rows):
    sources = (HELDOUT / "SOURCES.md").read_text(encoding="utf-8")
    found = re.search(r"`clean-eval\.jsonl`: (\d+) documents, ([\d,]+) bytes, sha256 `([0-9a-f]{64})`", sources)
    assert found, "SOURCES.md states the file's documents, bytes and sha256"
    assert int(found[1]) == len(rows)
    assert int(found[2].replace(",", "")) == CLEAN.stat().st_size
    assert found[3] == hashlib.sha256(CLEAN.read_bytes()).hexdigest()  # a hand edit is caught


def test_no_document_is_a_page_of_the_sample_crawl(rows, manifest):
    urls = {m["url"] for m in manifest}
    names = {(m["source"], m["url"].split("?")[0].rsplit("/", 1)[1].removesuffix(".html")) for m in manifest}
    assert sum(m["kind"] == "page" for m in manifest) == 462  # the manifest is the one the sample's docs describe
    for r in rows:
        name = r["id"].split("/", 1)[1]
        assert SAMPLE_URL[r["source"]].format(name) not in urls, r["id"]
        assert (r["source"], name) not in names, r["id"]  # nor at any other URL the crawl gives it


def test_no_text_shares_a_13_gram_with_the_sample_crawl(rows):
    from warcio.archiveiterator import ArchiveIterator

    held = {}
    for r in rows:
        for gram in _grams(_words(r["text"])):
            held.setdefault(gram, r["id"])
    assert len(held) > 50_000
    responses, hits = 0, {}
    for path in sorted(SAMPLE.glob("crawl-*.warc.gz")):
        with path.open("rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type != "response":
                    continue
                responses += 1
                page = record.content_stream().read().decode("utf-8", "replace")
                text = html.unescape(re.sub(r"<[^>]*>", " ", page))  # tags stripped crudely: every word counts
                for gram in _grams(_words(text)) & held.keys():
                    hits.setdefault(held[gram], record.rec_headers.get_header("WARC-Target-URI"))
    assert responses == 512
    assert not hits, f"held-out documents sharing a {NGRAM}-gram with a sample page: {hits}"


def test_the_13_gram_check_finds_a_shared_window():
    # the check above must be able to fail: a sentence of a sample page, quoted inside other text, is caught
    page = next(SAMPLE.glob("crawl-*.warc.gz"))
    from warcio.archiveiterator import ArchiveIterator

    with page.open("rb") as f:
        for record in ArchiveIterator(f):
            if record.rec_type == "response" and "/sotu/" in record.rec_headers.get_header("WARC-Target-URI"):
                text = html.unescape(re.sub(r"<[^>]*>", " ", record.content_stream().read().decode()))
                break
    words = _words(text)
    quoted = "Something else entirely. " + " ".join(words[400 : 400 + NGRAM]).upper() + " and more."
    assert _grams(_words(quoted)) & _grams(words)

"""The shipped held-out clean set: readable, documented, and not part of the sample crawl."""

import hashlib
import json
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HELDOUT = REPO_ROOT / "data" / "heldout"


def _rows():
    return [json.loads(line) for line in (HELDOUT / "clean-eval.jsonl").read_text(encoding="utf-8").splitlines()]


def test_documents_are_well_formed():
    rows = _rows()
    assert len(rows) == 12 and len({r["id"] for r in rows}) == 12
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    for r in rows:
        assert set(r) == {"id", "source", "title", "text"} and r["source"] == "sotu"
        assert len(r["text"].split()) > 1000  # whole speeches


def test_sha256_is_the_documented_one():
    digest = hashlib.sha256((HELDOUT / "clean-eval.jsonl").read_bytes()).hexdigest()
    assert f"sha256 `{digest}`" in (HELDOUT / "SOURCES.md").read_text()  # a hand edit is caught


def test_no_document_is_in_the_sample_crawl():
    urls = {line.split("\t")[1] for line in (REPO_ROOT / "data/sample/manifest.tsv").read_text().splitlines()[1:]}
    sample_speeches = {re.sub(r"^.*/sotu/(.*)\.html$", r"\1", u) for u in urls if "/sotu/" in u}
    assert len(sample_speeches) >= 80
    held = {r["id"].removeprefix("sotu/") for r in _rows()}
    assert not held & sample_speeches

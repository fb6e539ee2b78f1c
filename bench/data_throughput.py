"""Documents per CPU-second of tokenmill's data job versus DataTrove's local executor, same corpus, same run.

    .venv/bin/python bench/data_throughput.py [--docs 20000] [--repeats 3] [--work /tmp/tm-bench]

Both run Gopher quality, Gopher repetition, C4 (terminal-punctuation rule off, as FineWeb
runs it), FineWeb quality, then MinHash dedup (14 bands × 8 rows, word 5-grams) on one corpus
of multi-paragraph documents built from the real prose in data/sample. CPU seconds count every
process of each side (tokenmill: the driver, Spark's JVM and its Python workers), sampled
from /proc. Needs the bench extra: pip install -e '.[bench]'.

Each repeat runs both sides on fresh output folders, the side going first alternating; figures are medians over
repeats with their range, and each side must keep the same count in every repeat. Goal: tokenmill's documents per
CPU-second >= DataTrove's (ratio >= 1.0); the last line says ``undecided`` when the per-repeat ratios straddle 1.0.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from verdict import ratio_verdict  # bench/verdict.py: the script's folder is on sys.path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
GOAL_RATIO = 1.0  # tokenmill's documents per CPU-second over DataTrove's


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


def spread(values: list[float], fmt: str = ".1f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default="/tmp/tokenmill-bench-throughput")
    args = p.parse_args()
    from tokenmill.core.env import prepare_environment

    prepare_environment()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    corpus = work / "corpus" / "docs.jsonl.gz"
    build_corpus(corpus, args.docs)
    print(f"corpus: {args.docs:,} documents, {corpus.stat().st_size / 2**20:.1f} MiB gzipped", flush=True)

    names = ["tokenmill (Spark local[2])", "DataTrove (local, 1 worker)"]
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:  # who goes first alternates: fair under drifting load
            out = work / f"{name.split()[0]}-{r}"
            if name.startswith("tokenmill"):
                result = run_tokenmill(corpus, out)
            else:
                result = run_datatrove(corpus, out)
            shutil.rmtree(out, ignore_errors=True)
            runs[name].append(result)
            cpu, wall, kept = result
            print(
                f"repeat {r + 1}/{args.repeats} {name}: {cpu:.1f} CPU s, {wall:.1f} s wall, {kept:,} kept",
                flush=True,
            )
    for name, results in runs.items():
        if len({kept for _, _, kept in results}) != 1:
            raise SystemExit(f"{name} kept different counts on repeated runs: {[kept for _, _, kept in results]}")
    tm_kept, dt_kept = (runs[name][0][2] for name in names)

    print(f"\nmedians over {args.repeats} repeats (range)")
    print(f"{'':30}{'CPU s':>22}{'wall s':>22}{'docs/CPU-s':>22}{'kept':>9}")
    for name, results in runs.items():
        cpu, wall = [c for c, _, _ in results], [w for _, w, _ in results]
        rate = [args.docs / c for c in cpu]
        print(f"{name:30}{spread(cpu):>22}{spread(wall):>22}{spread(rate):>22}{results[0][2]:9,}")
    per_repeat = [dt[0] / tm[0] for tm, dt in zip(*runs.values())]
    ours, peer = (statistics.median(args.docs / c for c, _, _ in runs[name]) for name in names)
    ratio = ours / peer
    print(
        f"\nratio tokenmill / DataTrove, documents per CPU-second: {ratio:.2f}x "
        f"(per repeat: {', '.join(f'{x:.2f}' for x in per_repeat)})"
    )
    verdict = ratio_verdict(per_repeat, GOAL_RATIO)
    print(
        f"bench data_throughput: {ratio:.2f}x DataTrove's documents per CPU-second [{min(per_repeat):.2f}-"
        f"{max(per_repeat):.2f}] ({ours:,.1f} vs {peer:,.1f}, medians of {args.repeats} repeats), kept "
        f"{tm_kept:,} vs {dt_kept:,} of {args.docs:,} docs | goal >= {GOAL_RATIO}x DataTrove's documents per "
        f"CPU-second: {verdict}"
    )


if __name__ == "__main__":
    main()

"""Does the data job scale? The same job at two corpus sizes (10x apart) on a Spark standalone cluster.

    .venv/bin/python bench/data_scale.py [--docs 50000,500000] [--work /tmp/tokenmill-bench-scale]

For each size: a corpus of JSONL.gz files (always ``--files`` of them, so the task count does not grow with the
data) goes through ``tokenmill data`` with Gopher quality, exact dedup, URL dedup and MinHash, against a one-worker
standalone cluster (``tokenmill.spark_jobs.cluster``: the driver is its own JVM, apart from the executor, as on a
real cluster) whose one executor has 2 cores and 4 GB (``spark.executor.memory`` in a ``spark-defaults.conf``).
Printed per size: wall and CPU seconds (every process of the driver, the executor and its Python
workers; the master and worker daemons too), the driver's peak RSS (the CLI process and its JVM, sampled every
0.2 s), and the shuffle bytes Spark wrote (the job's manifest, ``spark.shuffle``) per document and next to the
average document size.

Goals: driver peak RSS flat (the big run within 10 % of the small one), CPU seconds per document within 15 %
between the sizes, shuffle bytes per document at most 2x the average document (UTF-8 bytes of its text). A job
has a fixed CPU cost (JVM and Python worker start-up, planning, tens of stages) that a 50k-document run does not
amortise, so a ``--baseline`` run of 1,000 documents measures it and the CPU goal compares the CPU per document
above it (the all-in figures are printed too).

The corpus: documents of 3-8 *random* paragraphs of the sample crawl's English prose (``real_paragraphs`` of
``data_throughput.py``), so that nearly every document is distinct at any size, then planted copies at fixed
rates: 4 % exact copies (case and spacing changed), 4 % near copies (about 1 % of words replaced), 2 % the same
URL with tracking parameters. ``data_throughput.py`` builds documents from *consecutive* paragraphs, which gives
only about 70,000 distinct documents: at 500k documents most of that corpus would be copies, a different workload
from the small size, so this bench draws its own with the same prose and fixed copy rates.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from data_throughput import real_paragraphs  # bench/: the script's folder is on sys.path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
STEPS = "[gopher_quality,exact_dedup,url_dedup,minhash]"
RSS_GOAL, CPU_GOAL, SHUFFLE_GOAL = 0.10, 0.15, 2.0
# The standalone default, 1g, ran out of heap caching 31,000-document input files (500k docs over 16 files).
EXECUTOR_MEMORY = "4g"


def build_corpus(folder: Path, n_docs: int, files: int, seed: int = 0) -> float:
    """``n_docs`` documents over ``files`` JSONL.gz files; returns the average text size in UTF-8 bytes."""
    paragraphs = real_paragraphs()
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    handles = [
        gzip.open(folder / f"part-{f:03d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) for f in range(files)
    ]
    recent: list[tuple[str, str]] = []  # (url, text) of recent originals, for planted copies
    total_bytes = 0
    for i in range(n_docs):
        url = f"https://scale.example/{i}"
        roll = rng.random()
        if recent and roll < 0.04:  # exact copy, other case and spacing
            text = recent[rng.randrange(len(recent))][1].upper().replace(" ", "  ")
        elif recent and roll < 0.08:  # near copy: ~1 % of words replaced
            words = recent[rng.randrange(len(recent))][1].split(" ")
            for _ in range(max(1, len(words) // 100)):
                words[rng.randrange(len(words))] = f"edit{rng.randrange(10**6)}"
            text = " ".join(words)
        elif recent and roll < 0.10:  # the same page again under a tracking URL, shorter
            url, text = recent[rng.randrange(len(recent))]
            url += "?utm_source=bench"
            text = text[: len(text) // 2]
        else:
            text = "\n\n".join(rng.sample(paragraphs, rng.randint(3, 8)))
            recent.append((url, text))
            if len(recent) > 2000:
                recent.pop(rng.randrange(len(recent)))
        total_bytes += len(text.encode("utf-8"))
        handles[i % files].write(json.dumps({"id": f"doc-{i:07d}", "url": url, "text": text}) + "\n")
    for h in handles:
        h.close()
    return total_bytes / n_docs


class TreeMeter:
    """CPU seconds used by ``root``'s descendants since the meter started, and the peak summed RSS of the
    processes ``watch_rss`` says belong to the driver; sampled every 0.2 s."""

    def __init__(self, root: int, driver_pid: int):
        import psutil

        self.root, self.driver = psutil.Process(root), driver_pid
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.peak_rss = 0
        self._sample(initial=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self, initial: bool = False) -> None:
        import psutil

        rss = 0
        for p in self.root.children(recursive=True):
            try:
                t = p.cpu_times()
                cpu = t.user + t.system
                if initial:
                    self.start[p.pid] = cpu
                self.last[p.pid] = cpu
                if p.pid == self.driver or self.driver in {a.pid for a in p.parents()}:
                    rss += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak_rss = max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.2)

    def stop(self) -> tuple[float, int]:
        self._stop.set()
        self._thread.join()
        cpu = sum(v - self.start.get(pid, 0.0) for pid, v in self.last.items())
        return cpu, self.peak_rss


def spark_conf_dir(work: Path) -> Path:
    """A ``SPARK_CONF_DIR`` like the project's (``infra/spark``) plus a ``spark-defaults.conf`` giving executors
    ``EXECUTOR_MEMORY``: the file a cluster user edits (docs/data.md)."""
    folder = work / "spark-conf"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "infra" / "spark" / "log4j2.properties", folder)
    (folder / "spark-defaults.conf").write_text(f"spark.executor.memory {EXECUTOR_MEMORY}\n")
    return folder


def run_job(corpus: Path, out: Path, master: str, checkpoints: Path, conf_dir: Path) -> dict:
    cmd = [
        *(sys.executable, "-m", "tokenmill.cli", "data"),
        *("--set", f"data.input={corpus}", "--set", "data.format=jsonl", "--set", f"data.steps={STEPS}"),
        *("--set", f"data.spark_master={master}", "--set", f"data.checkpoint_dir={checkpoints}"),
        *("--set", "data.spark_driver_memory=2g", "--out", str(out)),
    ]
    started = time.time()
    env = {**os.environ, "SPARK_CONF_DIR": str(conf_dir)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT, env=env)
    meter = TreeMeter(os.getpid(), proc.pid)
    output = proc.communicate()[0]
    cpu, rss = meter.stop()
    wall = time.time() - started
    if proc.returncode:
        raise SystemExit(f"tokenmill data failed:\n{output[-4000:]}")
    from tokenmill.core.manifest import read_manifest

    manifest = read_manifest(out / "manifest.json", "data")
    return {"cpu": cpu, "wall": wall, "rss": rss, "manifest": manifest}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", default="50000,500000", help="two corpus sizes, comma-separated")
    p.add_argument("--baseline", type=int, default=1000, help="a tiny corpus whose CPU seconds are the fixed cost")
    p.add_argument("--files", type=int, default=16, help="input files at every size")
    p.add_argument("--work", default="/tmp/tokenmill-bench-scale")
    args = p.parse_args()
    sizes = [int(x) for x in args.docs.split(",")]
    runs = [args.baseline, *sizes]
    from tokenmill.core.env import prepare_environment
    from tokenmill.spark_jobs.cluster import StandaloneCluster

    prepare_environment()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    results = {}
    conf_dir = spark_conf_dir(work)
    with StandaloneCluster(workers=1, cores_per_worker=2, memory_per_worker="6g", log_dir=work / "logs") as cluster:
        for n in runs:
            corpus = work / f"corpus-{n}"
            avg = build_corpus(corpus, n, args.files)
            print(
                f"{n:,} docs: {sum(f.stat().st_size for f in corpus.iterdir()) / 2**20:,.0f} MiB gzipped, "
                f"{avg:,.0f} bytes of text per document",
                flush=True,
            )
            r = run_job(corpus, work / f"out-{n}", cluster.url, work / f"checkpoints-{n}", conf_dir)
            shuffle = r["manifest"]["spark"]["shuffle"]
            r.update(avg=avg, shuffle_per_doc=shuffle["write_bytes"] / n)
            counts = r["manifest"]["counts"]
            print(
                f"{n:,} docs: {r['wall']:,.1f} s wall, {r['cpu']:,.1f} CPU s ({r['cpu'] / n * 1000:.2f} ms per doc), "
                f"driver peak RSS {r['rss'] / 2**20:,.0f} MiB, shuffle {shuffle['write_bytes'] / 2**20:,.1f} MiB = "
                f"{r['shuffle_per_doc']:,.0f} bytes per doc ({r['shuffle_per_doc'] / avg:.2f}x the average document); "
                f"kept {counts['kept']:,}, dropped {json.dumps(counts['dropped'])}",
                flush=True,
            )
            for stage in shuffle["top_stages"]:
                print(f"    stage {stage['stage']} {stage['name']}: {stage['bytes'] / n:,.0f} bytes per doc")
            results[n] = r
            shutil.rmtree(corpus, ignore_errors=True)
            shutil.rmtree(work / f"out-{n}", ignore_errors=True)
    small, big = (results[n] for n in sizes)
    rss_change = big["rss"] / small["rss"] - 1
    # A job's fixed CPU (JVM and Python worker start-up, planning, per-stage work) is the baseline run's, all of
    # it counted as fixed (an over-estimate by its few documents' share): what is left is the per-document cost.
    fixed = results[args.baseline]["cpu"]
    net = {n: (results[n]["cpu"] - fixed) / (n - args.baseline) for n in sizes}
    for n in sizes:
        print(
            f"{n:,} docs: {net[n] * 1000:.2f} ms CPU per doc above the {fixed:,.0f} CPU s "
            f"of the {args.baseline:,}-doc run"
        )
    cpu_change = net[sizes[1]] / net[sizes[0]] - 1
    worst_shuffle = max(r["shuffle_per_doc"] / r["avg"] for r in results.values())
    met = abs(rss_change) <= RSS_GOAL and abs(cpu_change) <= CPU_GOAL and worst_shuffle <= SHUFFLE_GOAL
    print(
        f"bench data_scale: {sizes[0]:,} -> {sizes[1]:,} docs: driver peak RSS {small['rss'] / 2**20:,.0f} -> "
        f"{big['rss'] / 2**20:,.0f} MiB ({rss_change:+.1%}), CPU per doc above a job's fixed cost "
        f"{net[sizes[0]] * 1000:.2f} -> {net[sizes[1]] * 1000:.2f} ms ({cpu_change:+.1%}; all-in "
        f"{small['cpu'] / sizes[0] * 1000:.2f} -> {big['cpu'] / sizes[1] * 1000:.2f} ms), shuffle per doc "
        f"{small['shuffle_per_doc'] / small['avg']:.2f}x / {big['shuffle_per_doc'] / big['avg']:.2f}x the average "
        f"document | goal driver RSS within {RSS_GOAL:.0%}, CPU per doc within {CPU_GOAL:.0%}, shuffle per doc <= "
        f"{SHUFFLE_GOAL:g}x the average document: {'met' if met else 'not met'}"
    )


if __name__ == "__main__":
    main()

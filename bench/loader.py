"""Microseconds per global causal-LM batch of the training loader, and a rank's RSS, at 10 M and > 4 B tokens.

    .venv/bin/python bench/loader.py [--repeats 5] [--batches 200] [--work /tmp/tokenmill-bench-loader]

Two token sets, each measured in a fresh process (a rank): 10 M tokens of real written shards (random ids, uint16,
10 shards, documents of 200 to 2000 tokens) and 5 * 2**30 tokens (> 4 B, more than 2**32) in sparse files (no
disk used; 5 shards of 1024 documents of 2**20 tokens). Each opens the split with ``open_split`` as
training does, then draws global batches of 8 windows of 1024 + 1 tokens (``PackedBatches``: without replacement,
at random steps, so windows land all over the stream) ``--repeats`` times ``--batches`` batches; the figure per
repeat is the mean microseconds per batch, reported as the median and spread (min-max) over repeats. RSS is the
process's VmRSS after the batches (its growth from before ``open_split`` in brackets, split into anonymous memory,
the loader's own, and the shards' file pages it touched, which the kernel may reclaim). Goal: under 1 ms per batch
on CPU, and RSS flat (within 50 MB) between the two token sets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

GLOBAL_BATCH, BLOCK = 8, 1024


def rss(field: str = "VmRSS") -> int:
    """Bytes of the process's resident memory: ``VmRSS`` in all, ``RssAnon`` its own allocations, ``RssFile``
    mapped file pages (the shards' pages touched: page cache, clean, the kernel reclaims them at will)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(f"{field}:"))


def write_real(root: Path, tokens: int = 10_000_000, shards: int = 10) -> dict:
    from tokenmill.core.indexed import IndexedShardWriter

    rng = np.random.default_rng(0)
    entries, per_shard = [], tokens // shards
    for k in range(shards):
        prefix = root / f"real-{k:05d}"
        with IndexedShardWriter(prefix, np.uint16) as writer:
            left = per_shard
            while left:
                n = min(left, int(rng.integers(200, 2000)))
                writer.add_document(rng.integers(1, 50_000, size=n, dtype=np.uint16))
                left -= n
            r = writer.finish()
        entries.append({"prefix": str(prefix), "documents": r["documents"], "tokens": r["tokens"]})
    return _manifest(root, entries)


def write_sparse(root: Path, shards: int = 5, doc: int = 1 << 20, docs: int = 1024) -> dict:
    from tokenmill.core.indexed import write_index

    entries = []
    for k in range(shards):
        prefix = root / f"sparse-{k:05d}"
        with open(f"{prefix}.bin", "wb") as fh:
            fh.truncate(doc * docs * 2)  # uint16, all holes
        write_index(f"{prefix}.idx", np.full(docs, doc), np.uint16)
        entries.append({"prefix": str(prefix), "documents": docs, "tokens": doc * docs})
    return _manifest(root, entries)


def _manifest(root: Path, shards: list[dict]) -> dict:
    np.save(root / "counts.npy", np.zeros(50_000, dtype=np.int64))
    split = {
        "documents": sum(s["documents"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
        "unigram_counts": str(root / "counts.npy"),
        "shards": shards,
    }
    return {"format": {"name": "megatron-indexed", "dtype": "uint16"}, "splits": {"train": split}}


def child(manifest_path: str, repeats: int, batches: int) -> None:
    """One rank: open the split, draw the batches, print a JSON line of figures."""
    import torch  # noqa: F401  (imported before the baseline, as in a training process)

    from tokenmill.training.data import PackedBatches, open_split

    manifest = json.loads(Path(manifest_path).read_text())
    before, anon = rss(), rss("RssAnon")
    train = open_split(manifest, "train")
    data = PackedBatches(train, BLOCK, seed=0)
    steps = np.random.default_rng(1).integers(0, data.windows_per_epoch // GLOBAL_BATCH, size=(repeats, batches))
    data.batch(0, GLOBAL_BATCH)  # warm up
    per_batch = []
    for row in steps:
        started = time.perf_counter()
        for step in row:
            x, y = data.batch(int(step), GLOBAL_BATCH)
        per_batch.append((time.perf_counter() - started) / batches * 1e6)
    assert x.shape == (GLOBAL_BATCH, BLOCK)
    figures = {"tokens": len(train), "us": per_batch, "rss": rss(), "growth": rss() - before}
    print(json.dumps({**figures, "anon_growth": rss("RssAnon") - anon, "file": rss("RssFile")}))


def measure(manifest: dict, path: Path, repeats: int, batches: int) -> dict:
    path.write_text(json.dumps(manifest))
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path), "--repeats", str(repeats), "--batches", str(batches)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--work", default="/tmp/tokenmill-bench-loader")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.repeats, args.batches)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    (work / "real").mkdir(parents=True)
    (work / "sparse").mkdir(parents=True)
    results = {
        "10M": measure(write_real(work / "real"), work / "real.json", args.repeats, args.batches),
        ">4B": measure(write_sparse(work / "sparse"), work / "sparse.json", args.repeats, args.batches),
    }
    shutil.rmtree(work, ignore_errors=True)
    figures = []
    for name, r in results.items():
        us = r["us"]
        print(
            f"{name:>4}: {r['tokens']:>14,} tokens  {statistics.median(us):7.0f} us/batch "
            f"(min {min(us):.0f}, max {max(us):.0f}, {len(us)} repeats)  RSS {r['rss'] / 2**20:6.1f} MiB "
            f"(+{r['growth'] / 2**20:.1f} MiB from open_split, of which anonymous "
            f"{r['anon_growth'] / 2**20:+.1f} MiB; file pages mapped {r['file'] / 2**20:.1f} MiB)"
        )
        figures.append(
            f"{name} tokens {statistics.median(us):.0f} us/batch [{min(us):.0f}-{max(us):.0f}], "
            f"RSS {r['rss'] / 2**20:.0f} MiB"
        )
    slowest = max(statistics.median(r["us"]) for r in results.values())
    flat = abs(results["10M"]["rss"] - results[">4B"]["rss"]) / 2**20
    met = slowest < 1000 and flat <= 50
    print(
        f"bench loader: {'; '.join(figures)}; RSS difference {flat:.1f} MiB "
        f"| goal < 1 ms per 8 x 1024 batch and RSS flat within 50 MB: {'met' if met else 'not met'}"
    )


if __name__ == "__main__":
    main()

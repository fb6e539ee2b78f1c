"""Near-duplicate detection quality: tokenmill's MinhashDeduplicator (Spark) against datasketch's MinHashLSH.

Corpus: real prose from the sample crawl (``data/sample/*.warc.gz``: main-content text extracted
with resiliparse, cut into passages of up to ``--passage-words`` words, passages of at least 200
words kept), plus planted near-duplicates. A planted variant is made by deleting, replacing
(with a word from another passage) and inserting words at random positions; the number of
edits is searched so that the variant's word-5-gram Jaccard with its original lands near a
target drawn uniformly from 0.3..1.0. Every figure below uses the *exact* Jaccard computed
afterwards, for every pair of documents that share a shingle (sparse matrix product), so
accidental near-duplicates in the crawl and variant-variant pairs count too.

Scoring, pairwise over clusters: every pair of documents put in one cluster is a merged pair.
True positive: merged, true Jaccard >= 0.8. False positive: merged, below 0.8 (including pairs
merged only transitively). False negative: true Jaccard >= 0.8, not merged.

All methods see the same shingles (tokenmill's word normalisation, word 5-grams) and the same
banding (b=14, r=8, 112 permutations). Wall times: tokenmill on local Spark after a warm-up run
(JVM and Python workers started; start-up printed separately), datasketch in this process; each
method runs ``--repeats`` times, the methods' order reversed every other round (the median wall time is shown with
its range, and the runs must agree).

Goal: tokenmill's default (``verify=exact``) F1 >= datasketch's best F1 (MinHashLSH + verify) and >= 0.95. Also
printed: the bytes tokenmill's MinHash step shuffles per document (Spark's status store, around the step alone: the
documents are in place before it, as in the data job), the cost of its verification. The scores are
deterministic for a given ``--seed`` (same corpus, same seeded permutations), so repeats change only the wall
times and the goal has no spread question; the last line says so, or warns if repeated runs disagreed.

Needs ``datasketch`` in the venv for its rows (``.venv/bin/pip install datasketch==2.0.0``; without it
those rows are skipped).

Reading the figures: ``verify=signature`` estimates Jaccard from 112 minimums, whose standard
error near 0.8 is about 0.04, so pairs within ~0.05 of the threshold fall either way; with the
planted similarities spread evenly over 0.3..1.0, a quarter of the true pairs sit in 0.8..0.85.
``verify=exact`` has no such noise; its remaining false positives come from transitivity (two
variants of one original, each >= 0.8 to it but not to each other, end in one cluster).

    .venv/bin/python bench/dedup_quality.py [--docs 2000] [--seed 0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tokenmill.core.env import prepare_environment  # noqa: E402

prepare_environment()

from tokenmill.spark_jobs.ledger import ledger_of  # noqa: E402
from tokenmill.spark_jobs.minhash import MinhashDeduplicator, connected_components, tokenize  # noqa: E402

THRESHOLD = 0.8
F1_GOAL = 0.95  # strict pairwise F1 at J >= THRESHOLD
BANDS, ROWS = 14, 8
NGRAM = 5
SCHEMA = "id string, url string, text string, status string, stage string, reason string, duplicate_of string"


# ----------------------------------------------------------------------------- corpus


def crawl_passages(sample_dir: Path, passage_words: int, min_words: int = 200) -> list[list[str]]:
    """Whitespace tokens of main-content passages of the sample crawl's HTML pages."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    from tokenmill.spark_jobs.readers import WarcReader

    passages = []
    files = sorted(sample_dir.glob("*.warc.gz"))
    if not files:
        raise SystemExit(f"no *.warc.gz files in {sample_dir}")
    for path in files:
        for record in WarcReader().read_file(str(path)):
            payload = record.get("payload")
            if record.get("error") or not payload or "html" not in (record.get("content_type") or "").lower():
                continue
            text = extract_plain_text(bytes_to_str(payload, detect_encoding(payload)), main_content=True)
            tokens = text.split()
            passages.extend(tokens[lo : lo + passage_words] for lo in range(0, len(tokens), passage_words))
    counts = tokenize([" ".join(p) for p in passages])[1]
    return [p for p, n in zip(passages, counts) if n >= min_words]


def words_of(texts: list[str]) -> list[list[str]]:
    """tokenmill's normalised words of each text (one vectorised call for all of them)."""
    words, counts = tokenize(texts)
    flat = words.to_pylist()
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [flat[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def shingles_of_words(words: list[str]) -> set[str]:
    """Word 5-grams (a text with fewer words is one shingle; one with none has none)."""
    if len(words) < NGRAM:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def _gram_tuples(words: list[str]) -> set[tuple]:
    """The same shingles as ``shingles_of_words``, as tuples (faster to build while searching edits)."""
    if len(words) < NGRAM:
        return {tuple(words)} if words else set()
    return set(zip(*(words[i:] for i in range(NGRAM))))


def exact_jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


class VariantMaker:
    """Edits a passage's whitespace tokens (delete / replace / insert) until a target Jaccard is reached.

    Each token's normalised words are computed once, so the Jaccard of an edited token list is exact
    and cheap: the variant's words are the concatenation of its tokens' words.
    """

    def __init__(self, donor_tokens: list[str], rng):
        self.rng = rng
        self.donors = donor_tokens
        self.donor_words = words_of(donor_tokens)

    def make(self, tokens: list[str], token_words: list[list[str]], target: float) -> tuple[str, float]:
        """A variant of ``tokens`` (whose words are ``token_words``, token by token)."""
        if target >= 1.0:
            return " ".join(tokens), 1.0
        rng = self.rng
        table = list(tokens) + self.donors
        table_words = token_words + self.donor_words
        base = _gram_tuples([w for ws in token_words for w in ws])
        n = len(tokens)
        kinds = rng.choice(3, size=n, p=[0.35, 0.4, 0.25])  # delete, replace, insert
        where = rng.random(n)
        donor = len(tokens) + rng.integers(0, len(self.donors), n)

        def apply(k: int) -> list[int]:
            out = list(range(len(tokens)))
            for kind, w, d in zip(kinds[:k], where[:k], donor[:k]):
                i = min(int(w * len(out)), len(out) - 1)
                if kind == 0 and len(out) > 1:
                    del out[i]
                elif kind == 1:
                    out[i] = int(d)
                else:
                    out.insert(i, int(d))
            return out

        cache: dict[int, tuple[list[int], float]] = {}

        def at(k: int) -> tuple[list[int], float]:
            if k not in cache:
                out = apply(k)
                cache[k] = (out, exact_jaccard(base, _gram_tuples([w for t in out for w in table_words[t]])))
            return cache[k]

        lo, hi = 0, 1
        while hi < n and at(hi)[1] > target:
            lo, hi = hi, min(hi * 2, n)
        while hi - lo > 1:  # first k whose Jaccard is at or below the target (nearly monotone in k)
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if at(mid)[1] > target else (lo, mid)
        best = min((lo, hi), key=lambda k: abs(at(k)[1] - target))
        out, j = at(best)
        return " ".join(table[t] for t in out), j


def build_corpus(passages: list[list[str]], n_docs: int, rng) -> tuple[list[tuple[str, str]], dict]:
    """``[(id, text)]`` of ``n_docs`` documents: originals, some of them with 1-3 planted variants."""
    variant_share = 0.4
    sizes = rng.choice([1, 2, 3], size=n_docs, p=[0.6, 0.3, 0.1])
    groups = []
    planted = 0
    for k in sizes:  # originals with variants until 40% of the corpus is variants
        if planted + k > variant_share * n_docs:
            break
        groups.append(int(k))
        planted += int(k)
    n_originals = n_docs - planted
    if n_originals > len(passages):
        raise SystemExit(
            f"--docs {n_docs} needs {n_originals} passages; the crawl gives {len(passages)}: "
            f"lower --docs or --passage-words"
        )
    chosen = rng.choice(len(passages), n_originals, replace=False)
    maker = VariantMaker([t for i in rng.choice(len(passages), 50) for t in passages[i]], rng)
    docs = [(f"d{j:05d}", " ".join(passages[i])) for j, i in enumerate(chosen)]
    planted_j = []
    originals = [passages[chosen[g]] for g in range(len(groups))]
    flat_words = words_of([t for tokens in originals for t in tokens])  # words of every token, in one call
    starts = np.concatenate([[0], np.cumsum([len(o) for o in originals])]).astype(int)
    for g, k in enumerate(groups):
        original = originals[g]
        token_words = flat_words[starts[g] : starts[g + 1]]
        for v in range(k):
            text, j = maker.make(original, token_words, float(rng.uniform(0.3, 1.0)))
            docs.append((f"v{g:05d}-{v}", text))
            planted_j.append(j)
    order = rng.permutation(len(docs))  # ids do not tell originals from variants
    docs = [(f"doc{rank:05d}", docs[i][1]) for rank, i in enumerate(order)]
    return docs, {
        "originals": n_originals,
        "with_variants": len(groups),
        "variants": planted,
        "planted_j": np.array(planted_j),
    }


def true_similarities(texts: list[str]):
    """Sparse upper-triangular matrix of exact Jaccard for every pair sharing a shingle; and the shingle sets."""
    import pandas as pd
    from scipy import sparse

    sets = [shingles_of_words(w) for w in words_of(texts)]
    flat = [s for ss in sets for s in ss]
    cols, _ = pd.factorize(pd.Series(flat, dtype=object))
    rows = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    a = sparse.csr_matrix((np.ones(len(flat), np.int32), (rows, cols)), shape=(len(sets), int(cols.max()) + 1))
    inter = sparse.triu(a @ a.T, k=1).tocoo()
    sizes = np.array([len(s) for s in sets])
    j = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    return {(int(r), int(c)): float(x) for r, c, x in zip(inter.row, inter.col, j)}, sets


# ----------------------------------------------------------------------------- methods


def clusters_from_edges(n: int, edges) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(x) for x in range(n)]


def run_datasketch(texts: list[str], sets: list[set], verify: bool) -> tuple[list[int], float]:
    from datasketch import MinHash, MinHashLSH

    started = time.time()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=BANDS * ROWS, params=(BANDS, ROWS))
    hashes = []
    for i, s in enumerate(sets):
        m = MinHash(num_perm=BANDS * ROWS, seed=1)
        m.update_batch([x.encode() for x in s])
        hashes.append(m)
        if s:
            lsh.insert(i, m)
    edges = []
    for i, m in enumerate(hashes):
        if not sets[i]:
            continue
        for j in lsh.query(m):
            if j > i and (not verify or m.jaccard(hashes[j]) >= THRESHOLD):
                edges.append((i, j))
    return clusters_from_edges(len(texts), edges), time.time() - started


#: verify mode -> shuffle bytes per document of the MinHash step (its last run), from Spark's status store
SHUFFLED: dict[str, float] = {}


def run_tokenmill(spark, docs: list[tuple[str, str]], verify: str | None) -> tuple[list[int], float]:
    """``verify=None``: banding alone (candidate pairs straight into connected components)."""
    from tokenmill.spark_jobs.progress import shuffle_bytes

    index = {doc_id: i for i, (doc_id, _) in enumerate(docs)}
    started = time.time()
    df = spark.createDataFrame([(d, None, t, "kept", None, None, None) for d, t in docs], SCHEMA)
    if verify is None:
        step = MinhashDeduplicator(num_bands=BANDS, rows_per_band=ROWS, ngram_size=NGRAM, threshold=THRESHOLD)
        sigs = step.signatures(df).localCheckpoint()
        comp = connected_components(step.candidate_pairs(sigs))
        got = {r["node"]: r["component"] for r in comp.collect()}
    else:
        step = MinhashDeduplicator(
            num_bands=BANDS, rows_per_band=ROWS, ngram_size=NGRAM, threshold=THRESHOLD, verify=verify
        )
        df = df.persist()
        df.count()  # the documents in place, as the data job has them before its dataset steps
        before = shuffle_bytes(spark.sparkContext)["write_bytes"]
        ledger = step.apply(ledger_of(df, [step]), df).filter("cluster_id is not null")
        got = {r["id"]: r["cluster_id"] for r in ledger.select("id", "cluster_id").collect()}
        SHUFFLED[verify] = (shuffle_bytes(spark.sparkContext)["write_bytes"] - before) / len(docs)
        df.unpersist()
    elapsed = time.time() - started
    return [index[got[d]] if d in got else i for i, (d, _) in enumerate(docs)], elapsed


# ----------------------------------------------------------------------------- scoring


def score(labels: list[int], truth: dict, threshold: float = THRESHOLD) -> dict:
    members: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        members.setdefault(c, []).append(i)
    merged = {
        (a, b) for group in members.values() if len(group) > 1 for x, a in enumerate(group) for b in group[x + 1 :]
    }
    positives = {p for p, j in truth.items() if j >= threshold}
    tp = len(merged & positives)
    fp = len(merged) - tp
    fn = len(positives) - tp
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "merged": merged}


def merge_rate_by_bin(merged: set, truth: dict, edges=(0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 1.01)) -> list[str]:
    cells = []
    for lo, hi in zip(edges, edges[1:]):
        pairs = [p for p, j in truth.items() if lo <= j < hi]
        rate = sum(p in merged for p in pairs) / len(pairs) if pairs else float("nan")
        cells.append(f"{rate:6.2f}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000, help="corpus size (originals + planted variants)")
    parser.add_argument("--passage-words", type=int, default=600, help="crawl pages are cut into passages this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", default=str(REPO_ROOT / "data" / "sample"))
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument(
        "--repeats", "--repeat", type=int, default=3, help="runs per method; the median wall time is reported"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    t0 = time.time()
    passages = crawl_passages(Path(args.sample), args.passage_words)
    docs, info = build_corpus(passages, args.docs, rng)
    texts = [t for _, t in docs]
    truth, sets = true_similarities(texts)
    positives = sum(j >= THRESHOLD for j in truth.values())
    words = [len(t.split()) for t in texts]
    print(
        f"corpus: {len(docs)} docs ({info['originals']} originals from {len(passages)} crawl passages, "
        f"{info['with_variants']} of them with {info['variants']} planted variants); "
        f"{int(np.median(words))} words median; {positives} pairs with Jaccard >= {THRESHOLD}, "
        f"{sum(0.5 <= j < THRESHOLD for j in truth.values())} in [0.5, {THRESHOLD}); built in {time.time() - t0:.1f}s"
    )
    pj = info["planted_j"]
    print(
        f"planted variant vs original, exact Jaccard: min {pj.min():.2f}, quartiles "
        f"{' '.join(f'{q:.2f}' for q in np.percentile(pj, [25, 50, 75]))}, max {pj.max():.2f}; "
        f"{(pj >= THRESHOLD).sum()} of {len(pj)} at or above {THRESHOLD}"
    )

    from tokenmill.spark_jobs.session import spark_session

    t0 = time.time()
    spark = spark_session(args.master, "4g", app_name="tokenmill-bench-dedup")
    spark.conf.set("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
    # At 2,000 documents every join side fits Spark's 10 MB broadcast threshold, and broadcast bytes are not shuffle
    # bytes: off, the joins shuffle as they would on a corpus of millions (the step's own hints still broadcast).
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    run_tokenmill(spark, docs[:300], "signature")  # warm-up: JVM code paths and Python workers
    print(f"spark: {spark.sparkContext.master}, start-up and warm-up {time.time() - t0:.1f}s")

    methods = [
        ("tokenmill minhash (verify=signature)", lambda: run_tokenmill(spark, docs, "signature")),
        ("tokenmill minhash (verify=exact)", lambda: run_tokenmill(spark, docs, "exact")),
        ("tokenmill banding only (no verify)", lambda: run_tokenmill(spark, docs, None)),
    ]
    try:
        import datasketch  # noqa: F401

        methods += [
            ("datasketch MinHashLSH (banding only)", lambda: run_datasketch(texts, sets, verify=False)),
            ("datasketch MinHashLSH + verify", lambda: run_datasketch(texts, sets, verify=True)),
        ]
    except ImportError:
        print("datasketch is not installed: its rows are skipped (.venv/bin/pip install datasketch==2.0.0)")
    runs: dict[str, list] = {name: [] for name, _ in methods}
    for r in range(args.repeats):
        for name, run in methods if r % 2 == 0 else methods[::-1]:  # order alternates: fair under drifting load
            runs[name].append(run())
    results, unstable = [], []
    for name, _ in methods:
        labels, seconds = runs[name][0][0], [r[1] for r in runs[name]]
        if any(r[0] != labels for r in runs[name]):
            print(f"warning: {name} gave different clusters on repeated runs")
            unstable.append(name)
        results.append((name, score(labels, truth), seconds))

    print(
        f"\nb={BANDS} r={ROWS} ({BANDS * ROWS} permutations), word {NGRAM}-grams, threshold {THRESHOLD}, "
        f"{len(docs)} docs"
    )
    print(
        f"{'method':40s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'TP':>6s} {'FP':>6s} {'FN':>5s} "
        f"{'wall s':>7s} {'range':>11s}"
        f"   (corpus: {len(docs)} docs, {positives} true pairs)"
    )
    for name, s, seconds in results:
        print(
            f"{name:40s} {s['precision']:9.3f} {s['recall']:7.3f} {s['f1']:6.3f} "
            f"{s['tp']:6d} {s['fp']:6d} {s['fn']:5d} {statistics.median(seconds):7.1f} "
            f"{f'{min(seconds):.1f}-{max(seconds):.1f}':>11s}"
        )
    bins = ["0.3-.5", ".5-.6", ".6-.7", ".7-.75", ".75-.8", ".8-.85", ".85-.9", ".9-1"]
    print(
        "\nshare of pairs merged, by true Jaccard (pairs per bin: "
        + ", ".join(f"{b} {n}" for b, n in zip(bins, _bin_counts(truth)))
        + ")"
    )
    print(f"{'method':40s} " + " ".join(f"{b:>6s}" for b in bins))
    for name, s, _ in results:
        print(f"{name:40s} " + " ".join(merge_rate_by_bin(s["merged"], truth)))
    avg_bytes = statistics.mean(len(t.encode()) for t in texts)
    print(
        f"\nshuffle bytes per document of tokenmill's MinHash step (average document {avg_bytes:,.0f} bytes): "
        + ", ".join(f"verify={k} {v:,.0f}" for k, v in SHUFFLED.items())
    )

    scores = {name: s for name, s, _ in results}
    ours = scores["tokenmill minhash (verify=exact)"]
    peer = scores.get("datasketch MinHashLSH + verify")
    if peer is None:
        print(
            f"bench dedup_quality: tokenmill verify=exact F1 {ours['f1']:.3f}, {len(docs)} docs, seed {args.seed} "
            f"| goal F1 >= datasketch's and >= {F1_GOAL}: undecided (datasketch not installed)"
        )
        return
    if unstable:
        note = f"repeated runs disagreed: {', '.join(unstable)}"
    else:
        note = f"deterministic for seed {args.seed}, {args.repeats} repeats agreed: no spread question"
    print(
        f"bench dedup_quality: tokenmill verify=exact F1 {ours['f1']:.3f} vs datasketch MinHashLSH + verify "
        f"{peer['f1']:.3f} ({ours['f1'] - peer['f1']:+.3f}; precision {ours['precision']:.3f} vs "
        f"{peer['precision']:.3f}, recall {ours['recall']:.3f} vs {peer['recall']:.3f}), {len(docs)} docs, "
        f"{note}, {SHUFFLED['exact']:,.0f} shuffle bytes per doc | goal F1 >= datasketch's and >= {F1_GOAL}: "
        f"{'met' if ours['f1'] >= max(peer['f1'], F1_GOAL) else 'not met'}"
    )


def _bin_counts(truth: dict, edges=(0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 1.01)) -> list[int]:
    return [sum(lo <= j < hi for j in truth.values()) for lo, hi in zip(edges, edges[1:])]


if __name__ == "__main__":
    main()

"""spark_jobs.minhash: signatures (numpy), verification, connected components and the dedup step (local Spark)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tokenmill.spark_jobs.ledger import apply_dataset_steps
from tokenmill.spark_jobs.minhash import (
    MERSENNE_61,
    MinhashDeduplicator,
    MinHasher,
    affine_mod_p,
    band_hashes,
    connected_components,
    estimated_jaccard,
    jaccard,
    permutation_coefficients,
    shingle_set,
    tokenize,
)
from tokenmill.spark_jobs.session import spark_settings

SCHEMA = "id string, url string, text string, status string, stage string, reason string, duplicate_of string"
SCHEMA_COLUMNS = [c.split()[0] for c in SCHEMA.split(", ")]
ADDED = ("cluster_id", "cluster_size")
REPO_ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- helpers


def random_words(rng: np.random.Generator, n: int, vocabulary: int = 20000) -> list[str]:
    return [f"w{i}" for i in rng.integers(0, vocabulary, n)]


def replace_words(words: list[str], positions, tag: str) -> list[str]:
    out = list(words)
    for k, p in enumerate(positions):
        out[p] = f"{tag}{k}"
    return out


def text(words: list[str]) -> str:
    return " ".join(words)


def exact_j(a: str, b: str) -> float:
    return jaccard(shingle_set(a), shingle_set(b))


def signature(t: str, num_perm: int = 112, seed: int = 1) -> np.ndarray:
    sig, has = MinHasher(num_perm, 5, seed).signatures([t])
    assert has[0]
    return sig[0]


def shares_band(a: np.ndarray, b: np.ndarray, bands: int = 14, rows: int = 8) -> bool:
    return bool((band_hashes(a[None], bands, rows) == band_hashes(b[None], bands, rows)).any())


def row(id, t, status="kept", stage=None, reason=None, duplicate_of=None):
    return (id, f"http://example.com/{id}", t, status, stage, reason, duplicate_of)


def reference_components(edges) -> dict:
    """Each node → the smallest node of its component, by relabelling both ends of every edge with the
    smaller of their labels until nothing changes: slow, but plainly right (and unlike the job's algorithm)."""
    label = {x: x for edge in edges for x in edge}
    changed = True
    while changed:
        changed = False
        for a, b in edges:
            low = min(label[a], label[b])
            if label[a] != low or label[b] != low:
                label[a] = label[b] = low
                changed = True
    return label


# ----------------------------------------------------------------------------- numpy side


def test_affine_mod_p_is_exact_against_python_integers():
    rng = np.random.default_rng(7)
    edges = [0, 1, 2, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, (1 << 61) - 3, MERSENNE_61 - 1]
    x = np.concatenate([rng.integers(0, MERSENNE_61, 300, dtype=np.uint64), np.array(edges, np.uint64)])
    a = np.concatenate([rng.integers(1, MERSENNE_61, 40, dtype=np.uint64), np.array([1, MERSENNE_61 - 1], np.uint64)])
    b = np.concatenate([rng.integers(0, MERSENNE_61, 40, dtype=np.uint64), np.array([0, MERSENNE_61 - 1], np.uint64)])
    got = affine_mod_p(x[:, None], a, b)
    want = [[(int(ai) * int(xi) + int(bi)) % MERSENNE_61 for ai, bi in zip(a, b)] for xi in x]
    assert got.tolist() == want


def test_permutations_are_fixed_by_seed_and_in_range():
    a1, b1 = permutation_coefficients(112, seed=1)
    a2, b2 = permutation_coefficients(112, seed=1)
    a3, _ = permutation_coefficients(112, seed=2)
    assert (a1 == a2).all() and (b1 == b2).all() and not (a1 == a3).all()
    assert ((a1 >= 1) & (a1 < MERSENNE_61)).all() and (b1 < MERSENNE_61).all()
    assert len(set(a1.tolist())) == 112


def test_tokenisation_ignores_case_punctuation_and_layout():
    words, counts = tokenize(["Hello,   WORLD!\n  It's  café-au-lait", "", None, "!!! ..."])
    assert words.to_pylist() == ["hello", "world", "its", "café", "au", "lait"]
    assert counts.tolist() == [6, 0, 0, 0]
    assert shingle_set("The quick, brown fox jumps over the lazy dog.") == shingle_set(
        "the QUICK brown -- fox\tjumps over the lazy dog"
    )


def test_punctuation_between_letters_or_digits_is_removed_before_the_split():
    words, _ = tokenize(["$923,091,136 in the U.S.A. (don't!) 3.14 a.b.c.d.e it\u2019s 1,2,3,4 end.Next 'quoted', x"])
    want = ["923091136", "in", "the", "usa", "dont", "314", "abcde", "its", "1234", "endnext", "quoted", "x"]
    assert words.to_pylist() == want


REPORT = (
    "The company reported revenue of {} for the fiscal year, against {} a year earlier, "
    "and said the board had approved a dividend of {} per share on Monday."
)


def test_copies_that_differ_only_in_number_formatting_are_identical():
    a = REPORT.format("$923,091,136", "$1,204,551,008", "0.25")
    for b in (
        REPORT.format("$923091136", "$1204551008", "0.25"),  # no thousands separators
        REPORT.format("$923.091.136", "$1.204.551.008", "0,25"),  # decimal-comma locale
        REPORT.format("$923'091'136", "$1'204'551'008", "0.25"),  # Swiss
    ):
        assert exact_j(a, b) == 1.0
        assert estimated_jaccard(signature(a), signature(b)) == 1.0
    for different in (
        REPORT.format("$923,091,137", "$1,204,551,008", "0.25"),
        REPORT.format("$923,091,136", "$1,204,551,008", "0.52"),
    ):
        assert exact_j(a, different) < 0.8


def test_short_documents_are_one_shingle_and_wordless_ones_get_no_signature():
    assert len(shingle_set("just four words here")) == 1
    assert shingle_set("just four words here") != shingle_set("just four words")
    assert len(shingle_set("exactly five words right here")) == 1
    assert len(shingle_set("one two three four five six seven")) == 3
    _, has = MinHasher().signatures(["two words", "", "  ?! ", "x"])
    assert has.tolist() == [True, False, False, True]


# Computed once with seed=1; if this changes, every stored signature/cluster becomes incomparable.
GOLDEN_TEXT = "Near-duplicate detection hashes every word 5-gram of a document, then keeps the minimum."
GOLDEN_PREFIX = [71603355295654003, 76560883192298252, 124832367710823497, 40151934278919001]


def test_signatures_are_stable_across_processes_and_hash_seeds():
    here = signature(GOLDEN_TEXT)
    assert here.tolist()[:4] == GOLDEN_PREFIX
    code = (
        "import json, sys; from tokenmill.spark_jobs.minhash import MinHasher; "
        "s, _ = MinHasher(112, 5, 1).signatures([sys.argv[1]]); print(json.dumps(s[0].tolist()))"
    )
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code, GOLDEN_TEXT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
        )
        assert json.loads(out.stdout) == here.tolist()


def test_estimated_jaccard_tracks_exact_jaccard():
    rng = np.random.default_rng(3)
    errors = []
    for edits in (1, 5, 10, 20, 35, 60, 100):
        base = random_words(rng, 400)
        other = replace_words(base, rng.choice(400, edits, replace=False), "x")
        exact = exact_j(text(base), text(other))
        est = estimated_jaccard(signature(text(base)), signature(text(other)))
        errors.append(abs(est - exact))
        assert abs(est - exact) < 0.15, (edits, exact, est)
    assert np.mean(errors) < 0.06
    # unrelated texts: nearly nothing in common
    assert estimated_jaccard(signature(text(random_words(rng, 300))), signature(text(random_words(rng, 300)))) < 0.05


# ----------------------------------------------------------------------------- planted corpus


def planted_pair_near(target: float, rng) -> tuple[str, str, float]:
    """A 400-word text and a variant whose exact word-5-gram Jaccard is about ``target``."""
    base = random_words(rng, 400)
    order = rng.permutation(400)
    lo, hi = 0, 400  # Jaccard falls as more positions are replaced: bisect for the first k at or below target
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if exact_j(text(base), text(replace_words(base, order[:mid], "y"))) > target else (lo, mid)
    other = text(replace_words(base, order[:hi], "y"))
    return text(base), other, exact_j(text(base), other)


def low_pair_sharing_a_band() -> tuple[str, str, float]:
    """A pair at exact Jaccard ~0.6 whose signatures share at least one band: banding alone would merge it."""
    for seed in range(200):
        a, b, j = planted_pair_near(0.6, np.random.default_rng(1000 + seed))
        sa, sb = signature(a), signature(b)
        if shares_band(sa, sb) and estimated_jaccard(sa, sb) < 0.75:
            return a, b, j
    raise AssertionError("no 0.6 pair sharing a band found")


def chain_of_near_duplicates() -> list[str]:
    """c1 ~ c2 ~ c3 ~ c4, each step ~0.9 Jaccard; c1 and c4 are well below 0.8."""
    rng = np.random.default_rng(11)
    words = random_words(rng, 600)
    chain = [words]
    for step in range(3):
        chain.append(replace_words(chain[-1], rng.choice(600, 6, replace=False), f"c{step}x"))
    return [text(w) for w in chain]


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(5)
    long_words = random_words(rng, 300)
    changed = replace_words(long_words, [150], "changed")
    p1, p2, pj = low_pair_sharing_a_band()
    chain = chain_of_near_duplicates()
    rows = [
        row("a1", text(long_words)),
        row("a2", text(changed)),  # one word changed
        row("a3", text(long_words).upper().replace(" ", ",  ")),  # same words, other case/punctuation
        row("a0", text(long_words), status="dropped", stage="quality", reason="gopher_word_count"),
        row("p1", p1),
        row("p2", p2),
        *[row(f"c{i + 1}", t) for i, t in enumerate(chain)],
        *[row(f"u{i}", text(random_words(rng, 200))) for i in range(5)],
        row("s1", "Hello world"),
        row("s2", "hello, WORLD!"),
        row("s3", "hello there"),
        row("e1", ""),
        row("e2", "  ... "),
        row("q1", None, status="quarantined", reason="unreadable_record"),
        row("d1", text(changed), status="dropped", stage="exact", reason="exact_duplicate", duplicate_of="a2"),
        row("n1", text(long_words), status=None),
    ]
    return {"rows": rows, "pair_j": pj, "chain": chain}


@pytest.fixture(scope="module")
def deduped(spark, corpus):
    df = apply_dataset_steps(spark.createDataFrame(corpus["rows"], SCHEMA), [MinhashDeduplicator()])
    return df.columns, [r.asDict() for r in df.collect()]


def by_id(rows):
    return {r["id"]: r for r in rows}


def test_rows_are_neither_lost_nor_duplicated_and_columns_are_added(corpus, deduped):
    columns, rows = deduped
    assert columns == SCHEMA_COLUMNS + list(ADDED)
    assert sorted(r["id"] for r in rows) == sorted(r[0] for r in corpus["rows"])


def test_near_duplicates_are_clustered_smallest_id_kept(deduped):
    out = by_id(deduped[1])
    assert out["a1"]["status"] == "kept" and out["a1"]["duplicate_of"] is None
    assert (out["a1"]["cluster_id"], out["a1"]["cluster_size"]) == ("a1", 3)
    for copy in ("a2", "a3"):
        assert out[copy]["status"] == "dropped"
        assert (out[copy]["stage"], out[copy]["reason"], out[copy]["duplicate_of"]) == (
            "minhash",
            "minhash_near_duplicate",
            "a1",
        )
        assert (out[copy]["cluster_id"], out[copy]["cluster_size"]) == ("a1", 3)
    # short texts: one shingle of all words, so equal word sequences match and others do not
    assert out["s2"]["duplicate_of"] == "s1" and out["s1"]["cluster_size"] == 2
    assert out["s3"]["status"] == "kept" and out["s3"]["cluster_id"] is None


def test_unrelated_and_wordless_documents_stay_kept_without_cluster(deduped):
    out = by_id(deduped[1])
    for i in ["u0", "u1", "u2", "u3", "u4", "e1", "e2"]:
        assert out[i]["status"] == "kept", i
        assert out[i]["cluster_id"] is None and out[i]["cluster_size"] is None and out[i]["duplicate_of"] is None


def test_pair_below_threshold_that_shares_a_band_is_not_merged(spark, corpus, deduped):
    assert 0.55 <= corpus["pair_j"] <= 0.65
    step = MinhashDeduplicator()
    docs = spark.createDataFrame([r for r in corpus["rows"] if r[0] in ("p1", "p2")], SCHEMA)
    sigs = step.signatures(docs)
    assert [tuple(r) for r in step.candidate_pairs(sigs).collect()] == [("p1", "p2")]  # banding alone: merged
    out = by_id(deduped[1])
    for i in ("p1", "p2"):
        assert out[i]["status"] == "kept" and out[i]["cluster_id"] is None


def test_big_buckets_are_split_and_every_member_keeps_a_link_to_the_smallest_id(spark):
    """Above ALL_PAIRS_MAX_BUCKET members, a bucket is split by id hash into sub-buckets of about that size
    (all pairs inside, or BUCKET_CENTERS centres past it), and every member is paired with the bucket's
    smallest id: partners per member stay bounded and the family stays one component."""
    step = MinhashDeduplicator()
    step.ALL_PAIRS_MAX_BUCKET, step.BUCKET_CENTERS = 4, 2
    same = text(random_words(np.random.default_rng(8), 50))
    n = 40
    docs = spark.createDataFrame([row(f"b{i:02d}", same) for i in range(n)] + [row("x", "a different text")], SCHEMA)
    pairs = sorted(tuple(r) for r in step.candidate_pairs(step.signatures(docs)).collect())
    assert all(src < dst for src, dst in pairs) and len(set(pairs)) == len(pairs)
    assert {dst for src, dst in pairs if src == "b00"} == {f"b{i:02d}" for i in range(1, n)}  # all linked to head
    partners = {}
    for src, dst in pairs:
        partners.setdefault(src, set()).add(dst)
        partners.setdefault(dst, set()).add(src)
    # 14 identical bands split the same way: besides the head, a member only meets its own sub-bucket
    assert max(len(v) for k, v in partners.items() if k != "b00") <= 1 + 3 * step.ALL_PAIRS_MAX_BUCKET
    assert len(pairs) < n * (n - 1) // 4  # far fewer than all pairs
    assert "x" not in partners


def test_chain_of_near_duplicates_is_one_cluster_even_past_the_threshold(corpus, deduped):
    """Clusters are connected components: c4 is dropped as a copy of c1 though J(c1, c4) < 0.8.

    Each link is well above the threshold, so all four collapse to c1. This is the documented
    cost of transitivity; it is what keeps one copy of a family of gradually edited pages.
    """
    c = corpus["chain"]
    for x, y in zip(c, c[1:]):
        assert exact_j(x, y) > 0.85
    assert exact_j(c[0], c[3]) < 0.75
    out = by_id(deduped[1])
    assert out["c1"]["status"] == "kept" and out["c1"]["cluster_size"] == 4
    for i in ("c2", "c3", "c4"):
        assert (out[i]["status"], out[i]["duplicate_of"], out[i]["cluster_id"]) == ("dropped", "c1", "c1")


def test_rows_not_kept_pass_through_untouched(corpus, deduped):
    out = by_id(deduped[1])
    for original in corpus["rows"]:
        if original[3] == "kept":
            continue
        got = out[original[0]]
        assert tuple(got[c] for c in SCHEMA_COLUMNS) == original
        assert got["cluster_id"] is None and got["cluster_size"] is None


def test_exact_verification_reaches_the_same_decisions(spark, corpus, deduped):
    df = apply_dataset_steps(spark.createDataFrame(corpus["rows"], SCHEMA), [MinhashDeduplicator(verify="exact")])
    exact = {r["id"]: (r["status"], r["duplicate_of"], r["cluster_id"], r["cluster_size"]) for r in df.collect()}
    estimated = {r["id"]: (r["status"], r["duplicate_of"], r["cluster_id"], r["cluster_size"]) for r in deduped[1]}
    assert exact == estimated


def test_spark_signatures_equal_driver_signatures_and_repeat(spark, corpus):
    rows = [r for r in corpus["rows"] if r[0] in ("a1", "c2", "s1", "e1")]
    step = MinhashDeduplicator()
    sigs = step.signatures(spark.createDataFrame(rows, SCHEMA))
    first = {r["id"]: (r["signature"], r["bands"]) for r in sigs.collect()}
    assert first == {r["id"]: (r["signature"], r["bands"]) for r in sigs.collect()}
    assert sorted(first) == ["a1", "c2", "s1"]  # e1 has no word
    for id_, t in [(r[0], r[2]) for r in rows if r[0] != "e1"]:
        sig = signature(t)
        assert first[id_][0] == sig.tolist()
        assert first[id_][1] == band_hashes(sig[None], 14, 8)[0].tolist()


def test_constructor_validates_its_config():
    step = MinhashDeduplicator()
    assert (step.name, step.num_bands, step.rows_per_band, step.ngram_size, step.threshold, step.seed, step.verify) == (
        "minhash",
        14,
        8,
        5,
        0.8,
        1,
        "exact",
    )
    assert step.num_perm == 112
    with pytest.raises(ValueError):
        MinhashDeduplicator(verify="bands")
    with pytest.raises(ValueError):
        MinhashDeduplicator(threshold=0)
    with pytest.raises(ValueError):
        MinhashDeduplicator(num_bands=0)


def test_missing_columns_are_reported(spark):
    with pytest.raises(ValueError, match="stage"):
        apply_dataset_steps(
            spark.createDataFrame([("a", "t", "kept")], "id string, text string, status string"),
            [MinhashDeduplicator()],
        )


# ----------------------------------------------------------------------------- connected components


KNOWN_EDGES = (
    [(i, i + 1) for i in range(49)]  # chain 0..49
    + [(i + 1, i) for i in range(0, 49, 3)]
    + [(10, 11), (10, 10)]  # reversed and repeated edges, a self-loop
    + [(2000, leaf) for leaf in range(1500, 1520)]  # star whose centre is its largest node
    + [(a, b) for a in range(3000, 3006) for b in range(3000, 3006) if a != b]  # clique, both directions
    + [(a, b) for a in range(3100, 3108) for b in range(a + 1, 3108)]  # clique, one direction
    + [(4000, 4000), (4001, 4001), (4001, 4001)]  # isolated self-loops
    + [(5003, 5001), (5002, 5003)]  # path whose minimum is in the middle
)
KNOWN_COMPONENTS = {
    **dict.fromkeys(range(50), 0),
    **dict.fromkeys([*range(1500, 1520), 2000], 1500),
    **dict.fromkeys(range(3000, 3006), 3000),
    **dict.fromkeys(range(3100, 3108), 3100),
    4000: 4000,
    4001: 4001,
    5001: 5001,
    5002: 5001,
    5003: 5001,
}


def random_graph(offset: int = 1_000_000, n: int = 400, m: int = 330) -> list[tuple[int, int]]:
    rng = np.random.default_rng(2)
    ids = offset + rng.permutation(n)  # node order unrelated to edge order
    return [(int(ids[a]), int(ids[b])) for a, b in rng.integers(0, n, (m, 2))]


@pytest.fixture(scope="module")
def components(spark):
    """One run over the known graphs and a random graph side by side (disjoint ids), AQE on, odd partitioning."""
    edges = KNOWN_EDGES + random_graph() + [(None, 7), (8, None)]  # rows with a null end are ignored
    with spark_settings(spark, {"spark.sql.adaptive.enabled": "true", "spark.sql.shuffle.partitions": "5"}):
        df = connected_components(spark.createDataFrame(edges, "src long, dst long"))
        return {r["node"]: r["component"] for r in df.collect()}


def test_connected_components_on_known_graphs(components):
    """A chain of 50, a star centred on its largest node, two cliques, self-loops, repeated and reversed edges."""
    assert {n: c for n, c in components.items() if n < 1_000_000} == KNOWN_COMPONENTS


def test_connected_components_match_a_reference_on_a_random_graph(components):
    want = reference_components(random_graph())
    assert {n: c for n, c in components.items() if n >= 1_000_000} == want
    assert len(set(want.values())) > 20  # many components of many sizes, not one giant one


def test_connected_components_of_no_edges_is_empty(spark):
    assert connected_components(spark.createDataFrame([], "src string, dst string")).count() == 0

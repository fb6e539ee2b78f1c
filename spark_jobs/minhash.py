"""Near-duplicate removal: MinHash signatures, LSH banding, candidate verification, connected components.

The pipeline, all of it Spark DataFrame operations except the signatures; the text is read once, where it lies,
and every shuffle after that moves ids, band hashes and the sets of candidate documents:

1. **Signatures** (``mapInArrow``, numpy on whole Arrow batches, no per-row Python): texts are
   lower-cased, ``.`` ``,`` ``'`` ``’`` between two letters or digits are removed (so ``$923,091,136``
   is one word, ``923091136``, like ``$923.091.136`` and ``$923091136``; ``don't`` is ``dont``), and the
   texts are split into words on every run of characters that are not letters, digits
   or combining marks (``[^\\pL\\pN\\pM]+``), so punctuation and layout whitespace do not
   matter. Shingles are word ``ngram_size``-grams; a document with fewer words is one shingle
   (all its words); a document with no word at all gets no signature and is never clustered.
   Words are hashed with pandas' SipHash-2-4 (fixed key, so independent of PYTHONHASHSEED and
   of the process), word hashes are combined into a 64-bit shingle hash (polynomial plus a
   splitmix64 finaliser) and reduced modulo the Mersenne prime p = 2^61 - 1. Each of the
   ``num_bands * rows_per_band`` permutations is the universal hash ``(a*x + b) mod p``,
   computed exactly in uint64 by splitting operands into 32-bit limbs (see ``affine_mod_p``);
   ``a`` and ``b`` come from BLAKE2b of (seed, index), so they never change with numpy's RNG.
   The signature is the per-permutation minimum, stored as ``array<bigint>`` (values < 2^61).
2. **Banding**: a band hash per ``rows_per_band`` consecutive minimums; documents sharing
   (band, band hash) form a bucket. Candidate pairs: every pair of a bucket of at most
   ``ALL_PAIRS_MAX_BUCKET`` members. A bigger bucket (its size from an aggregation, combined
   map-side) is split by a hash of the id into sub-buckets of about ``ALL_PAIRS_MAX_BUCKET``, each
   one task's work; inside a sub-bucket, all pairs (or, past that size, each member with the
   ``BUCKET_CENTERS`` smallest ids), and every member of the split bucket is also paired with the
   bucket's smallest id. So pairs and work stay linear in the bucket size (10^5 copies of a
   template page give about 10^5 x 33 pairs, spread over 3,000 tasks' worth of sub-buckets, not
   5*10^9 pairs in one task).
   *Effect on recall*: in a split bucket, a pair (u, v) in different sub-buckets is not verified
   *in that bucket*. u and v still end up in one component if both verify against the smallest
   id (the usual case: a big bucket is mostly one family of near-copies), or through a pairing in
   a sub-bucket or another band. What is lost is a true edge between two members that are
   dissimilar (below ``threshold``) to the smallest id, in different sub-buckets, in every band
   they share: only heterogeneous big buckets can do that.
3. **Verification**: a candidate pair becomes an edge only if its similarity reaches
   ``threshold``: the fraction of equal minimums over the *full* signature
   (``verify="signature"``), or the exact Jaccard of the two shingle-hash sets
   (``verify="exact"``; the low 32 bits of each shingle hash, so exact up to rare collisions).
   Only the documents of candidate pairs move their sets or signatures (``verified_edges``). Banding alone
   also pairs many documents at 0.5-0.8 similarity (at b=14, r=8 a 0.6 pair shares a band
   with probability 0.21); verification is what removes them.
4. **Connected components** of the verified edges (``connected_components``: alternating
   large-star / small-star, Kiveris et al. 2014), with the lineage cut every round.
5. In each component the smallest id is kept; every other member becomes ``dropped`` with
   stage ``minhash``, reason ``minhash_near_duplicate`` and ``duplicate_of`` the kept id. Components are
   transitive: a chain A~B~C~D of pairs above the threshold is one cluster even where
   J(A, D) is below it (see the tests).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import numpy as np

from tokenmill.spark_jobs.steps import DatasetStep

log = logging.getLogger("tokenmill.data")

MERSENNE_61 = (1 << 61) - 1

_P = np.uint64(MERSENNE_61)
_LOW32 = np.uint64(0xFFFFFFFF)
_LOW29 = np.uint64((1 << 29) - 1)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SM1 = np.uint64(0xBF58476D1CE4E5B9)
_SM2 = np.uint64(0x94D049BB133111EB)
_WORD_SEPARATORS = r"[^\pL\pN\pM]+"
# Punctuation inside a word (923,091,136 / 3.14 / u.s.a / don't) is removed before the split, so that a
# copy with other thousands separators or apostrophes has the same words. RE2 has no lookaround, so the
# pattern consumes both neighbours and one pass misses every other dot of "u.s.a"; after it, the ones left
# are two or more characters apart, so a second pass removes them all (checked against a lookaround
# regex on every string of up to 10 characters over "a.,' ").
_INNER_PUNCTUATION = r"([\pL\pN\pM])[.,'\x{2019}]([\pL\pN])"
_SIPHASH_KEY = "0123456789123456"
_CHUNK_SHINGLES = 1024  # (1024 x 112) uint64 temporaries stay in cache: ~2x faster than big blocks


# --------------------------------------------------------------------------- hashing (numpy)


def _fmix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z = z * _SM1
    z = z ^ (z >> np.uint64(27))
    z = z * _SM2
    return z ^ (z >> np.uint64(31))


def _mod_p(h: np.ndarray) -> np.ndarray:
    """``h mod (2^61 - 1)`` for any uint64 array."""
    x = (h & _P) + (h >> np.uint64(61))  # < 2^61 + 8
    return np.minimum(x, x - _P)  # x - p wraps to a huge value when x < p


def affine_mod_p(
    x: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    out: np.ndarray | None = None,
    tmp: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``(a * x + b) mod (2^61 - 1)`` exactly, broadcasting x of shape (n, 1) against a, b of shape (k,).

    All inputs must be uint64 below p. The 122-bit product never exists: with
    ``a = a1*2^32 + a0`` and ``x = x1*2^32 + x0`` (a1, x1 < 2^29),
    ``a*x = a1*x1*2^64 + (a1*x0 + a0*x1)*2^32 + a0*x0``, and modulo p = 2^61 - 1,
    2^64 = 8 and ``m*2^32 = (m >> 29) + (m & (2^29-1))*2^32``. Every partial sum stays below
    2^63. ``out``/``tmp`` are optional (n, k) scratch arrays (reused across chunks).
    """
    n, k = x.shape[0], a.shape[0]
    s = np.empty((n, k), np.uint64) if out is None else out[:n]
    t, u = (np.empty((n, k), np.uint64), np.empty((n, k), np.uint64)) if tmp is None else (tmp[0][:n], tmp[1][:n])
    x1, x0 = x >> np.uint64(32), x & _LOW32
    a1, a0 = a >> np.uint64(32), a & _LOW32
    np.multiply(a1, x1, out=s)
    np.left_shift(s, np.uint64(3), out=s)  # a1*x1*2^64 = 8*a1*x1  (< 2^61)
    np.multiply(a1, x0, out=t)
    np.multiply(a0, x1, out=u)
    t += u  # mid < 2^62
    np.right_shift(t, np.uint64(29), out=u)
    s += u
    np.bitwise_and(t, _LOW29, out=t)
    np.left_shift(t, np.uint64(32), out=t)
    s += t  # mid * 2^32 folded
    np.multiply(a0, x0, out=t)  # < 2^64, exact
    np.bitwise_and(t, _P, out=u)
    s += u
    np.right_shift(t, np.uint64(61), out=t)
    s += t  # a0*x0 folded
    s += b  # total < 2^63
    np.right_shift(s, np.uint64(61), out=t)
    np.bitwise_and(s, _P, out=s)
    s += t  # <= p + 4
    np.subtract(s, _P, out=t)
    np.minimum(s, t, out=s)
    return s


def permutation_coefficients(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``a`` in [1, p) and ``b`` in [0, p) for each permutation, from BLAKE2b(seed, index): stable forever."""

    def draw(kind: str, i: int, modulus: int) -> int:
        digest = hashlib.blake2b(f"tokenmill-minhash/{seed}/{kind}/{i}".encode(), digest_size=16).digest()
        return int.from_bytes(digest, "little") % modulus

    a = np.array([1 + draw("a", i, MERSENNE_61 - 1) for i in range(num_perm)], dtype=np.uint64)
    b = np.array([draw("b", i, MERSENNE_61) for i in range(num_perm)], dtype=np.uint64)
    return a, b


def tokenize(texts) -> tuple[object, np.ndarray]:
    """Words of each text (Arrow, vectorised): ``(words, counts)`` with words grouped by text in order.

    Lower-cased; ``.`` ``,`` ``'`` ``’`` between two letters/digits removed (``923,091,136`` → ``923091136``,
    ``U.S.`` → ``us``, ``don't`` → ``dont``); then split on every run of characters that are not letters,
    digits or combining marks. ``texts`` is a ``pyarrow`` string array (or a list of str); nulls count as
    texts with no word.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(texts, (pa.Array, pa.ChunkedArray)):
        texts = pa.array(list(texts), type=pa.string())
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    lowered = pc.utf8_lower(texts)
    for _ in range(2):
        lowered = pc.replace_substring_regex(lowered, _INNER_PUNCTUATION, r"\1\2")
    parts = pc.split_pattern_regex(lowered, _WORD_SEPARATORS)
    parent = pc.list_parent_indices(parts)
    flat = pc.list_flatten(parts)
    nonempty = pc.greater(pc.binary_length(flat), 0)  # splitting leaves "" at the ends
    words = pc.filter(flat, nonempty)
    counts = np.bincount(pc.filter(parent, nonempty).to_numpy(zero_copy_only=False), minlength=len(texts))
    return words, counts.astype(np.int64)


def word_hashes(words) -> np.ndarray:
    """64-bit SipHash-2-4 (pandas' fixed key) of each word: the same in every process and run."""
    import pandas as pd
    import pyarrow.compute as pc

    if len(words) == 0:
        return np.zeros(0, np.uint64)
    encoded = pc.dictionary_encode(words)  # hash each distinct word once
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False)
    hashes = pd.util.hash_array(distinct, encoding="utf8", hash_key=_SIPHASH_KEY, categorize=False)
    return hashes.astype(np.uint64)[encoded.indices.to_numpy(zero_copy_only=False)]


def shingle_hashes(texts, ngram_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes (uint64 < 2^61 - 1) of every text, grouped by text: ``(values, counts)``.

    A text with ``ngram_size`` words or more has one shingle per word n-gram (repeats included);
    one with 1..ngram_size-1 words has a single shingle of all its words; one with none has none.
    """
    words, word_counts = tokenize(texts)
    w = word_hashes(words)
    offsets = np.concatenate([[0], np.cumsum(word_counts)[:-1]]).astype(np.int64)
    counts = np.where(word_counts > 0, np.maximum(word_counts - ngram_size + 1, 1), 0)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.uint64), counts
    doc = np.repeat(np.arange(len(counts)), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    start = offsets[doc] + (np.arange(total) - first[doc])
    width = np.minimum(word_counts, ngram_size)[doc]
    h = np.zeros(total, np.uint64)
    last = len(w) - 1
    for j in range(ngram_size):
        step = h * _MIX + w[np.minimum(start + j, last)]
        h = np.where(j < width, step, h)
    h = _fmix64(h ^ (width.astype(np.uint64) * _SM2))
    return _mod_p(h), counts


def shingle_set(text: str, ngram_size: int = 5) -> set[int]:
    """The set of shingle hashes of one text (for exact Jaccard in tests and benchmarks)."""
    values, _ = shingle_hashes([text], ngram_size)
    return set(values.tolist())


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


class MinHasher:
    """MinHash signatures of texts, numpy-vectorised over a whole batch of texts."""

    def __init__(self, num_perm: int = 112, ngram_size: int = 5, seed: int = 1):
        self.num_perm = num_perm
        self.ngram_size = ngram_size
        self.seed = seed
        self.a, self.b = permutation_coefficients(num_perm, seed)

    def signatures_of_shingles(self, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(len(counts), num_perm) uint64 minimums; rows of texts without shingles are all p."""
        sig = np.full((len(counts), self.num_perm), _P, np.uint64)
        if len(values) == 0:
            return sig
        doc = np.repeat(np.arange(len(counts)), counts)
        chunk = min(_CHUNK_SHINGLES, len(values))
        out = np.empty((chunk, self.num_perm), np.uint64)
        tmp = (np.empty_like(out), np.empty_like(out))
        for lo in range(0, len(values), chunk):
            hi = min(lo + chunk, len(values))
            hashed = affine_mod_p(values[lo:hi, None], self.a, self.b, out=out, tmp=tmp)
            d = doc[lo:hi]
            seg = np.flatnonzero(np.concatenate([[True], d[1:] != d[:-1]]))
            part = np.minimum.reduceat(hashed, seg, axis=0)
            rows = d[seg]
            sig[rows] = np.minimum(sig[rows], part)
        return sig

    def signatures(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """``(signatures, has_signature)``: one row per text; texts with no word have no signature."""
        values, counts = shingle_hashes(texts, self.ngram_size)
        return self.signatures_of_shingles(values, counts), counts > 0


def band_hashes(signatures: np.ndarray, num_bands: int, rows_per_band: int) -> np.ndarray:
    """(n, num_bands) int64: a 64-bit hash of each band's ``rows_per_band`` minimums."""
    n = signatures.shape[0]
    bands = signatures[:, : num_bands * rows_per_band].reshape(n, num_bands, rows_per_band)
    h = np.zeros((n, num_bands), np.uint64)
    for j in range(rows_per_band):
        h = _fmix64(h * _MIX + bands[:, :, j])
    return h.view(np.int64)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(np.asarray(sig_a) == np.asarray(sig_b)))


# --------------------------------------------------------------------------- Spark side


class _SignatureBatches:
    """``mapInArrow`` body: (id, text) batches in; (id, signature, bands[, shingles]) out, for texts with words."""

    def __init__(self, num_bands: int, rows_per_band: int, ngram_size: int, seed: int, with_shingles: bool):
        self.num_bands = num_bands
        self.rows_per_band = rows_per_band
        self.with_shingles = with_shingles
        self.hasher = MinHasher(num_bands * rows_per_band, ngram_size, seed)

    def __call__(self, batches: Iterator) -> Iterator:
        import pyarrow as pa

        for batch in batches:
            ids = batch.column(0)
            values, counts = shingle_hashes(batch.column(1), self.hasher.ngram_size)
            sig = self.hasher.signatures_of_shingles(values, counts)
            has = counts > 0
            keep = np.flatnonzero(has)
            n = len(keep)
            sig = sig[keep].astype(np.int64)
            bands = band_hashes(sig.view(np.uint64), self.num_bands, self.rows_per_band)
            columns = {
                "id": ids.take(pa.array(keep)),
                "signature": _list_array(sig.reshape(-1), np.full(n, sig.shape[1])),
                "bands": _list_array(bands.reshape(-1), np.full(n, self.num_bands)),
            }
            if self.with_shingles:
                columns["shingles"] = _distinct_shingles(values, counts, keep)
            yield pa.RecordBatch.from_pydict(columns)


def _list_array(values: np.ndarray, lengths: np.ndarray, dtype: str = "int64"):
    import pyarrow as pa

    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(dtype)))


def _distinct_shingles(values: np.ndarray, counts: np.ndarray, keep: np.ndarray):
    """Each kept text's distinct shingle hashes cut to their low 32 bits, sorted, as a list<int> array.

    32 bits halve what verification moves; two distinct shingles of one pair of documents share their low
    32 bits with probability about n^2 / 2^33 (1e-4 for 1,000-shingle documents), one shingle in the
    Jaccard ratio: far below the threshold's resolution."""
    values = (values & _LOW32).astype(np.uint32).view(np.int32)
    doc = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((values, doc))
    v, d = values[order], doc[order]
    first = np.ones(len(v), bool)
    first[1:] = (v[1:] != v[:-1]) | (d[1:] != d[:-1])
    v, d = v[first], d[first]
    distinct_counts = np.bincount(d, minlength=len(counts))
    return _list_array(v, distinct_counts[keep], "int32")  # texts without shingles hold no values: no gaps


#: The session setting that names the job's reliable checkpoint folder (``data.checkpoint_dir``); empty: local.
CHECKPOINT_CONF = "tokenmill.checkpointDir"


def _materialize(df):
    """Cut the lineage: a reliable checkpoint (it survives a lost executor) when the job named a checkpoint folder
    (``CHECKPOINT_CONF``, set with the context's checkpoint dir by the data job), else a local one (kept by the
    executors that computed it: fine on one machine)."""
    if df.sparkSession.conf.get(CHECKPOINT_CONF, ""):
        return df.checkpoint(eager=True)
    return df.localCheckpoint(eager=True)


def connected_components(edges, max_iterations: int = 100):
    """Connected components of an undirected graph given as a DataFrame with columns ``src``, ``dst``.

    Returns a DataFrame ``(node, component)``: one row per node that appears in ``edges`` (self-loops
    included, rows with a null end ignored), ``component`` being the smallest node of its component
    (Spark's ordering of the column type). Edge direction and duplicate edges do not matter.

    Alternates large-star and small-star (Kiveris et al., "Connected Components in MapReduce and
    Beyond", 2014) until the graph is a forest of stars, each centred on its component's minimum,
    with the edge list materialised (checkpoint / localCheckpoint) every round so plans stay small.
    Only deterministic operations (min, joins, distinct), so adaptive query execution and
    re-execution of a stage cannot change the answer. Nothing is collected to the driver.
    """
    from pyspark.sql import functions as F

    given = _materialize(edges.select(F.col("src"), F.col("dst")).dropna())  # the input is computed once
    nodes = given.select(F.col("src").alias("node")).union(given.select(F.col("dst").alias("node"))).distinct()
    # Edges are kept oriented (larger, smaller), without self-loops or repeats.
    e = (
        given.filter(F.col("src") != F.col("dst"))
        .select(F.greatest("src", "dst").alias("src"), F.least("src", "dst").alias("dst"))
        .distinct()
    )
    rounds = 0
    while not _is_star_forest(e):
        if rounds == max_iterations:
            raise RuntimeError(f"connected_components did not converge in {max_iterations} rounds")
        e = _materialize(_small_star(_large_star(e)))
        rounds += 1
    log.info("connected_components: converged after %d large-star/small-star round(s)", rounds)
    star = e.select(F.col("src").alias("node"), F.col("dst").alias("component"))
    return nodes.join(star, "node", "left").select(
        "node", F.coalesce(F.col("component"), F.col("node")).alias("component")
    )


def _large_star(e):
    """Every node links its strictly larger neighbours to the minimum of its closed neighbourhood."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    both = e.select(F.col("src").alias("u"), F.col("dst").alias("v")).union(
        e.select(F.col("dst").alias("u"), F.col("src").alias("v"))
    )
    m = F.least(F.col("u"), F.min("v").over(Window.partitionBy("u")))
    # Not de-duplicated here: small-star (always next) takes a min per node and de-duplicates its output.
    return (
        both.withColumn("m", m).filter(F.col("v") > F.col("u")).select(F.col("v").alias("src"), F.col("m").alias("dst"))
    )


def _small_star(e):
    """Every node u links itself and its smaller neighbours to the minimum of those (edges are (larger, smaller))."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    with_min = e.withColumn("m", F.min("dst").over(Window.partitionBy("src")))
    return (
        with_min.select("src", F.col("m").alias("dst"))
        .union(with_min.filter(F.col("dst") != F.col("m")).select(F.col("dst").alias("src"), F.col("m").alias("dst")))
        .distinct()
    )


def _is_star_forest(e) -> bool:
    """True when every node has at most one smaller neighbour and no centre is itself a leaf."""
    from pyspark.sql import functions as F

    ends = e.select(F.col("src").alias("n"), F.lit(1).alias("out"), F.lit(0).alias("into")).union(
        e.select(F.col("dst").alias("n"), F.lit(0).alias("out"), F.lit(1).alias("into"))
    )
    per_node = ends.groupBy("n").agg(F.sum("out").alias("out"), F.max("into").alias("into"))
    return per_node.filter((F.col("out") > 1) | ((F.col("out") > 0) & (F.col("into") > 0))).isEmpty()


class MinhashDeduplicator(DatasetStep):
    """Near-duplicate removal over the kept documents (see the module docstring for the method).

    Sets ``cluster_id`` (string: the kept, smallest id of the document's cluster) and ``cluster_size``
    (int) in the ledger; both stay null for documents in no cluster of two or more (and for every row
    whose status is not ``kept``, which passes through untouched). Reads the text once, narrowly, to
    make signatures; every shuffle after that moves ids, band hashes and (``verify: exact``) 32-bit
    shingle sets. ``apply`` runs Spark jobs itself (signatures and components are materialised).
    """

    name = "minhash"
    reason = "minhash_near_duplicate"
    ALL_PAIRS_MAX_BUCKET = 32  # (sub-)buckets up to this size: all pairs
    BUCKET_CENTERS = 4  # bigger sub-buckets: each member is paired with this many smallest ids
    BROADCAST_IDS = 2_000_000  # candidate documents up to this many: their ids are broadcast (~100 MB at most)

    def __init__(
        self,
        num_bands: int = 14,
        rows_per_band: int = 8,
        ngram_size: int = 5,
        threshold: float = 0.8,
        seed: int = 1,
        verify: str = "exact",
    ):
        if verify not in ("signature", "exact"):
            raise ValueError(f"minhash.verify must be 'signature' or 'exact', not {verify!r}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"minhash.threshold must be in (0, 1], not {threshold!r}")
        for key, value in (("num_bands", num_bands), ("rows_per_band", rows_per_band), ("ngram_size", ngram_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"minhash.{key} must be a positive integer, not {value!r}")
        self.num_bands = int(num_bands)
        self.rows_per_band = int(rows_per_band)
        self.ngram_size = int(ngram_size)
        self.threshold = float(threshold)
        self.seed = int(seed)
        self.verify = verify

    @property
    def num_perm(self) -> int:
        return self.num_bands * self.rows_per_band

    # -- the stages, each usable on its own (tests, benchmarks) ---------------------------------

    def signatures(self, docs):
        """``(id, signature array<bigint>, bands array<bigint>[, shingles array<int>])`` of docs with words."""
        schema = "id string, signature array<bigint>, bands array<bigint>"
        if self.verify == "exact":
            schema += ", shingles array<int>"
        body = _SignatureBatches(
            self.num_bands, self.rows_per_band, self.ngram_size, self.seed, with_shingles=self.verify == "exact"
        )
        return docs.select("id", "text").mapInArrow(body, schema)

    def candidate_pairs(self, sigs):
        """Distinct ``(src, dst)`` id pairs, src < dst, that share at least one (band, band hash) bucket.

        Bounded work per task however big a bucket grows: bucket sizes come from an aggregation (combined
        map-side), a bucket of more than ``ALL_PAIRS_MAX_BUCKET`` members is split by a hash of the id into
        sub-buckets of about that size (each handled by its own task), and every member of a split bucket is
        also paired with the bucket's smallest id, which keeps the sub-buckets of one family connected.
        Inside a sub-bucket: all pairs up to ``ALL_PAIRS_MAX_BUCKET`` members, else each member with the
        ``BUCKET_CENTERS`` smallest ids. So a member has at most about ``ALL_PAIRS_MAX_BUCKET`` + 1 partners
        per band."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        most = self.ALL_PAIRS_MAX_BUCKET
        key = ["band", "band_hash"]
        members = sigs.select("id", F.posexplode("bands").alias("band", "band_hash"))
        # Few in practice (templated pages, boilerplate): joined back as a broadcast when they are.
        big = (
            members.groupBy(*key)
            .agg(F.count(F.lit(1)).alias("size"), F.min("id").alias("head"))
            .filter(F.col("size") > most)
            .select(*key, F.ceil(F.col("size") / most).cast("long").alias("splits"), "head")
        )
        members = members.join(big, key, "left").withColumn(
            "sub", F.when(F.col("splits").isNull(), F.lit(0)).otherwise(F.pmod(F.xxhash64("id"), F.col("splits")))
        )
        sub_bucket = Window.partitionBy("band", "band_hash", "sub")
        # Materialised: the pairs below read it three times; after the filter it holds bucket-sharing ids only.
        members = _materialize(
            members.withColumn("size", F.count(F.lit(1)).over(sub_bucket))
            .withColumn("rank", F.row_number().over(sub_bucket.orderBy("id")))
            .filter((F.col("size") > 1) | F.col("head").isNotNull())
            .select("id", *key, "sub", "size", "rank", "head")
        )
        centers = members.filter((F.col("size") <= most) | (F.col("rank") <= self.BUCKET_CENTERS))
        within = (
            centers.select(*key, "sub", F.col("id").alias("src"))
            .join(members.select(*key, "sub", F.col("id").alias("dst")), [*key, "sub"])
            .filter(F.col("src") < F.col("dst"))
        )
        to_head = members.filter(F.col("head").isNotNull() & (F.col("head") < F.col("id"))).select(
            F.col("head").alias("src"), F.col("id").alias("dst")
        )
        return within.select("src", "dst").union(to_head).distinct()

    def verified_edges(self, pairs, sigs):
        """The candidate pairs whose similarity reaches ``threshold``, with that ``similarity``."""
        from pyspark.sql import functions as F

        col = "shingles" if self.verify == "exact" else "signature"
        # Only the documents in a candidate pair move their sets. Up to BROADCAST_IDS of them, their ids are
        # broadcast, so the other documents' sets stay where they are; past that, a shuffle join moves every
        # set once (adaptive execution would shuffle both sides before it could choose a broadcast itself).
        ends = _materialize(
            pairs.select(F.col("src").alias("id")).union(pairs.select(F.col("dst").alias("id"))).distinct()
        )
        if ends.count() <= self.BROADCAST_IDS:
            ends = F.broadcast(ends)
        values = sigs.select("id", col).join(ends, "id", "left_semi")
        left = values.select(F.col("id").alias("src"), F.col(col).alias("a"))
        right = values.select(F.col("id").alias("dst"), F.col(col).alias("b"))
        joined = pairs.join(left, "src").join(right, "dst")
        if self.verify == "exact":
            inter = F.size(F.array_intersect("a", "b"))
            union = F.size("a") + F.size("b") - inter
            similarity = inter / union
        else:
            equal = F.aggregate(F.zip_with("a", "b", lambda x, y: (x == y).cast("int")), F.lit(0), lambda s, x: s + x)
            similarity = equal / F.lit(self.num_perm)
        return joined.select("src", "dst", similarity.alias("similarity")).filter(
            F.col("similarity") >= F.lit(self.threshold - 1e-9)
        )

    def clusters(self, docs, kept_ids=None):
        """``(id, cluster_id, cluster_size)`` of the kept documents that are in a cluster of two or more.

        ``kept_ids`` (a frame with column ``id``), when given, narrows ``docs``' kept rows to those ids."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        kept = docs.filter(F.col("status") == "kept")
        # Materialised where the text is (no shuffle): bands and shingle sets are read again below.
        sigs = _materialize(
            self.signatures(kept).select("id", "bands", "shingles" if self.verify == "exact" else "signature")
        )
        banded = sigs.select("id", "bands")
        if kept_ids is not None:  # ids and bands only: the rows an earlier dataset step dropped leave here
            banded = banded.join(kept_ids, "id", "left_semi")
        pairs = _materialize(self.candidate_pairs(banded))
        edges = self.verified_edges(pairs, sigs).select("src", "dst")
        components = connected_components(edges)
        return components.select(
            F.col("node").alias("id"),
            F.col("component").alias("cluster_id"),
            F.count(F.lit(1)).over(Window.partitionBy("component")).cast("int").alias("cluster_size"),
        )

    def apply(self, ledger, docs):
        from pyspark.sql import functions as F

        columns = [c for c in ledger.columns if c not in ("cluster_id", "cluster_size")]
        is_kept = F.coalesce(F.col("status") == "kept", F.lit(False))
        kept, rest = ledger.filter(is_kept), ledger.filter(~is_kept)
        clusters = self.clusters(docs, kept.select("id"))

        marked = kept.select(*columns).join(clusters, "id", "left")
        is_copy = F.coalesce(F.col("cluster_id") != F.col("id"), F.lit(False))

        def when_copy(value, column):
            return F.when(is_copy, F.lit(value) if isinstance(value, str) else value).otherwise(F.col(column))

        replaced = {
            "status": when_copy("dropped", "status"),
            "stage": when_copy(self.name, "stage"),
            "reason": when_copy(self.reason, "reason"),
            "duplicate_of": when_copy(F.col("cluster_id"), "duplicate_of"),
        }
        marked = marked.select(*[replaced.get(c, F.col(c)).alias(c) for c in columns], "cluster_id", "cluster_size")
        return marked.unionByName(rest.select(*columns, "cluster_id", "cluster_size"))

"""Token shards as flat, memory-mapped files: the indexed format Megatron-LM, Megatron-DeepSpeed and GPT-NeoX read.

A shard is two files next to each other:

- ``<prefix>.bin``: every document's token ids, back to back, little-endian, in one dtype, nothing else;
- ``<prefix>.idx``: the index, byte for byte what megatron-core 0.16.1 (``megatron/core/datasets/indexed_dataset.py``)
  writes for a non-multimodal dataset::

      offset  size       field
      0       9          magic b"MMIDIDX\\x00\\x00"
      9       8          version, <u8, always 1
      17      1          dtype code, <u1 (Megatron's DType: uint8 1, int8 2, int16 3, int32 4, int64 5,
                         float64 6, float32 7, uint16 8)
      18      8          sequence count S, <u8
      26      8          document count field D + 1, <u8 (the length of the document indices below)
      34      4 S        sequence lengths in tokens, <i4
      34+4S   8 S        sequence pointers: byte offset of each sequence in .bin, <i8
      34+12S  8 (D + 1)  document indices: a document is sequences [di[d], di[d+1]); di[0] = 0, di[D] = S, <i8

  (Multimodal datasets append one int8 mode per sequence; plain token shards have none.)

tokenmill writes one sequence per document, so S = D and the document indices are ``0, 1, ..., D``.

On top of the shards: ``TokenStream`` (many shards as one virtual token stream, read by window without loading it)
and ``WindowOrder`` (a stateless, per-epoch permutation of the stream's windows), so a batch is a pure function of
``(seed, step)`` at any scale and a run resumes exactly.
"""

from __future__ import annotations

import array
import hashlib
import mmap
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document indices count
# Megatron's DType enum codes. It has no uint32: a vocabulary above 65536 ids is stored as int32 (as Megatron does).
DTYPE_CODES = {
    np.dtype(np.uint8): 1,
    np.dtype(np.int8): 2,
    np.dtype(np.int16): 3,
    np.dtype(np.int32): 4,
    np.dtype(np.int64): 5,
    np.dtype(np.float64): 6,
    np.dtype(np.float32): 7,
    np.dtype(np.uint16): 8,
}
_DTYPES = {code: dtype.newbyteorder("<") for dtype, code in DTYPE_CODES.items()}
_TOKEN_LIMITS = {np.dtype(np.uint16): 1 << 16, np.dtype(np.int32): 1 << 31}  # the dtypes the writer writes
_MAX_SEQUENCE = (1 << 31) - 1  # sequence lengths are int32 in the index
_CHUNK = 1 << 20  # index entries per write: the index of a huge shard is streamed, not built in memory


def dtype_for(vocab_size: int) -> np.dtype:
    """The token dtype of a shard: uint16 when every id fits (``vocab_size <= 65536``), else int32.

    int32 and not uint32 because Megatron's dtype codes have no uint32; ids below 2**31 fit either way.
    """
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size > _TOKEN_LIMITS[np.dtype(np.int32)]:
        raise ValueError(f"vocab_size {vocab_size} does not fit int32 token ids")
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def bin_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(prefix)}.bin")


def idx_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(prefix)}.idx")


def _temp_name(path: Path) -> Path:
    # Unique per writer, in the same folder, so os.replace is a rename on one file system.
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")


def write_index(path: str | os.PathLike, sequence_lengths: Sequence[int] | np.ndarray, dtype) -> str:
    """Write the ``.idx`` of a shard whose ``.bin`` holds sequences of ``sequence_lengths`` tokens of ``dtype``, one
    sequence per document, to ``path`` (as is: no temp name). Returns the file's sha256 hex digest.

    Streams the pointers and document indices in chunks, so memory stays at the lengths themselves.
    """
    dtype = np.dtype(dtype)
    lengths = np.asarray(sequence_lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths.size and (lengths.min() < 0 or lengths.max() > _MAX_SEQUENCE)):
        raise ValueError("sequence lengths must be a flat list of ints in [0, 2**31)")
    count = len(lengths)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:

        def put(data: bytes) -> None:
            digest.update(data)
            fh.write(data)

        put(_HEADER.pack(MAGIC, VERSION, DTYPE_CODES[dtype], count, count + 1))
        for lo in range(0, count, _CHUNK):
            put(lengths[lo : lo + _CHUNK].astype("<i4").tobytes())
        # Pointers are byte offsets (int64: a shard may hold more than 2**31 bytes); the running total carries over.
        offset = 0
        for lo in range(0, count, _CHUNK):
            part = lengths[lo : lo + _CHUNK] * dtype.itemsize
            ends = np.cumsum(part)
            put((ends - part + offset).astype("<i8").tobytes())
            offset += int(ends[-1])
        # count + 1 document indices, from 0 to count: document d is sequence d.
        for lo in range(0, count + 1, _CHUNK):
            put(np.arange(lo, min(lo + _CHUNK, count + 1), dtype="<i8").tobytes())
    return digest.hexdigest()


class IndexedShardWriter:
    """Writes one shard, ``<prefix>.bin`` and ``<prefix>.idx``, a document at a time.

    Tokens go to the ``.bin`` (under a temporary name) as they come, hashed on the way; only the per-document lengths
    stay in memory (4 bytes a document). ``finish()`` writes the ``.idx`` and renames both into place, ``.bin`` first,
    so a reader never sees a finished ``.idx`` next to a partial ``.bin``. As a context manager, a clean exit finishes
    (if ``finish()`` was not called) and an exception removes the temporary files and publishes nothing.
    """

    def __init__(self, prefix: str | os.PathLike, dtype):
        self.dtype = np.dtype(dtype)
        if self.dtype not in _TOKEN_LIMITS:
            raise ValueError(f"token dtype must be uint16 or int32 (see dtype_for), got {self.dtype}")
        self._limit = _TOKEN_LIMITS[self.dtype]
        self._disk_dtype = self.dtype.newbyteorder("<")
        self.bin_path, self.idx_path = bin_path(prefix), idx_path(prefix)
        self._bin_tmp, self._idx_tmp = _temp_name(self.bin_path), _temp_name(self.idx_path)
        self._lengths = array.array("i")  # C int: 4 bytes on every platform numpy and torch run on
        self._tokens = 0
        self._sha = hashlib.sha256()
        self._fh = open(self._bin_tmp, "xb", buffering=1 << 20)
        self.result: dict | None = None

    def __enter__(self) -> IndexedShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self.result is None:
            self.finish()

    def add_document(self, ids: np.ndarray | Sequence[int]) -> None:
        """Append one document (one sequence) of token ids; every id must fit the shard's dtype."""
        if self.result is not None or self._fh.closed:
            raise RuntimeError("the shard is already finished")
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError(f"a document is a flat array of integer token ids, got {ids.dtype} of shape {ids.shape}")
        if len(ids) > _MAX_SEQUENCE:
            raise ValueError(f"a document of {len(ids)} tokens does not fit the index's int32 lengths")
        if ids.size and (ids.min() < 0 or ids.max() >= self._limit):
            raise ValueError(f"token ids must be in [0, {self._limit}) for {self.dtype}")
        data = ids.astype(self._disk_dtype, copy=False).tobytes()
        self._sha.update(data)
        self._fh.write(data)
        self._lengths.append(len(ids))
        self._tokens += len(ids)

    def finish(self) -> dict:
        """Write the index, publish both files; returns the shard's manifest entry (paths, counts, dtype, hashes)."""
        if self.result is not None:
            return self.result
        try:
            self._fh.close()
            idx_sha = write_index(self._idx_tmp, np.frombuffer(self._lengths, dtype=np.int32), self.dtype)
            os.replace(self._bin_tmp, self.bin_path)
            os.replace(self._idx_tmp, self.idx_path)
        except BaseException:
            self.abort()
            raise
        self.result = {
            "bin": str(self.bin_path),
            "idx": str(self.idx_path),
            "documents": len(self._lengths),
            "tokens": self._tokens,
            "dtype": self.dtype.name,
            "sha256": self._sha.hexdigest(),
            "idx_sha256": idx_sha,
        }
        return self.result

    def abort(self) -> None:
        """Close and remove the temporary files; an existing shard at the prefix is left as it was."""
        self._fh.close()
        for tmp in (self._bin_tmp, self._idx_tmp):
            tmp.unlink(missing_ok=True)


class IndexedShard:
    """One shard, read-only: the ``.bin`` memory-mapped (nothing is read until used), the index mapped too.

    ``tokens`` is the flat array of all the shard's tokens; ``document(i)`` a zero-copy view of one document. Reads
    any non-multimodal file of the format, also ones with several sequences per document (Megatron's sentence split).
    """

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = os.fspath(prefix)
        path = idx_path(prefix)
        index = np.memmap(path, dtype=np.uint8, mode="r")
        if index.size < _HEADER.size:
            raise ValueError(f"{path}: too short for an index")
        magic, version, code, count, doc_count = _HEADER.unpack(index[: _HEADER.size].tobytes())
        if magic != MAGIC or version != VERSION:
            raise ValueError(f"{path}: not a version {VERSION} MMIDIDX index")
        if code not in _DTYPES:
            raise ValueError(f"{path}: unknown dtype code {code}")
        self.dtype = _DTYPES[code]
        buffer, at = index.data, _HEADER.size
        self.sequence_lengths = np.frombuffer(buffer, dtype="<i4", count=count, offset=at)
        self.sequence_pointers = np.frombuffer(buffer, dtype="<i8", count=count, offset=at + 4 * count)
        self.document_indices = np.frombuffer(buffer, dtype="<i8", count=doc_count, offset=at + 12 * count)
        if doc_count < 1 or self.document_indices[0] != 0 or self.document_indices[-1] != count:
            raise ValueError(f"{path}: document indices must run from 0 to the sequence count {count}")

        size = bin_path(prefix).stat().st_size
        expected = (
            int(self.sequence_pointers[-1]) + int(self.sequence_lengths[-1]) * self.dtype.itemsize if count else 0
        )
        if size != expected:  # a .bin from another write, or truncated
            raise ValueError(f"{bin_path(prefix)}: {size} bytes, the index says {expected}")
        # np.memmap cannot map an empty file.
        self.tokens = np.memmap(bin_path(prefix), dtype=self.dtype, mode="r") if size else np.empty(0, self.dtype)
        if size and hasattr(mmap, "MADV_RANDOM"):
            # Training reads scattered windows: no read-around of neighbouring pages on a fault, which would read
            # (and map) up to hundreds of KB from disk for a 2 KB window.
            self.tokens._mmap.madvise(mmap.MADV_RANDOM)

    @classmethod
    def in_memory(cls, tokens: np.ndarray, document_lengths: Sequence[int] | np.ndarray) -> IndexedShard:
        """A shard held in memory (small streams and tests): ``tokens`` split into documents of these lengths, one
        sequence each, with the index arrays a file would have; it reads like a memory-mapped one."""
        tokens = np.asarray(tokens)
        lengths = np.asarray(document_lengths, dtype=np.int64)
        if lengths.sum() != len(tokens):
            raise ValueError(f"document lengths sum to {lengths.sum()}, the tokens are {len(tokens)}")
        shard = cls.__new__(cls)
        shard.prefix, shard.dtype, shard.tokens = "<memory>", tokens.dtype, tokens
        shard.sequence_lengths = lengths.astype(np.int32)
        shard.sequence_pointers = (np.cumsum(lengths) - lengths) * tokens.dtype.itemsize
        shard.document_indices = np.arange(len(lengths) + 1, dtype=np.int64)
        return shard

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def num_sequences(self) -> int:
        return len(self.sequence_lengths)

    @property
    def num_documents(self) -> int:
        return len(self.document_indices) - 1

    def document(self, i: int) -> np.ndarray:
        """Document ``i``'s tokens: a read-only view into the memory map (copy it to keep it past the shard)."""
        if not 0 <= i < self.num_documents:
            raise IndexError(f"document {i} of {self.num_documents}")
        first, stop = int(self.document_indices[i]), int(self.document_indices[i + 1])
        if first == stop:
            return self.tokens[:0]
        start = int(self.sequence_pointers[first]) // self.dtype.itemsize
        end = int(self.sequence_pointers[stop - 1]) // self.dtype.itemsize + int(self.sequence_lengths[stop - 1])
        return self.tokens[start:end]


class TokenStream:
    """Many shards' tokens as one stream, in the order given, without loading them.

    Keeps the shards' memory maps and their cumulative token and document offsets (O(shards)); a window copies
    only its tokens, a document's bounds come from its shard's memory-mapped index (never from scanning tokens).
    Windows are int64 (what torch indexes embeddings and targets with: ``torch.from_numpy(w)`` needs no conversion),
    whatever the shards' dtype, so shards of uint16 and int32 mix.
    """

    def __init__(self, shards: Iterable[IndexedShard | str | os.PathLike]):
        self.shards = [s if isinstance(s, IndexedShard) else IndexedShard(s) for s in shards]
        # offsets[k] is the stream position of shard k's first token; offsets[-1] the stream's length.
        self.offsets = np.zeros(len(self.shards) + 1, dtype=np.int64)
        np.cumsum([s.num_tokens for s in self.shards], out=self.offsets[1:])
        # doc_offsets[k] is the global number of shard k's first document; doc_offsets[-1] the document count.
        self.doc_offsets = np.zeros(len(self.shards) + 1, dtype=np.int64)
        np.cumsum([s.num_documents for s in self.shards], out=self.doc_offsets[1:])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_documents(self) -> int:
        return int(self.doc_offsets[-1])

    def document_bounds(self, docs: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, stops)`` int64: global document ``d`` is stream tokens ``[start, stop)``.

        Documents are numbered across shards in stream order; the bounds come from each shard's memory-mapped
        sequence pointers and lengths (a binary search over the shards, a few index entries read per document).
        """
        d = np.atleast_1d(np.asarray(docs, dtype=np.int64))
        if d.size and (d.min() < 0 or d.max() >= self.num_documents):
            raise IndexError(f"documents must be in [0, {self.num_documents})")
        starts, stops = np.empty(d.shape, np.int64), np.empty(d.shape, np.int64)
        shard = np.searchsorted(self.doc_offsets, d, side="right") - 1
        for k in np.unique(shard):
            rows = shard == k
            s = self.shards[k]
            local = d[rows] - self.doc_offsets[k]
            first = np.asarray(s.document_indices[local], dtype=np.int64)
            last = np.asarray(s.document_indices[local + 1], dtype=np.int64) - 1
            size = s.dtype.itemsize
            # An empty document (no sequences) sits where the next one starts: at its first sequence, or the end.
            at = np.where(
                first < s.num_sequences,
                np.asarray(s.sequence_pointers[np.minimum(first, max(s.num_sequences - 1, 0))]) // size,
                s.num_tokens,
            )
            end = np.where(
                last >= first,
                np.asarray(s.sequence_pointers[np.maximum(last, 0)]) // size
                + np.asarray(s.sequence_lengths[np.maximum(last, 0)], dtype=np.int64),
                at,
            )
            starts[rows], stops[rows] = at + self.offsets[k], end + self.offsets[k]
        return starts, stops

    def document_of(self, positions: int | np.ndarray) -> np.ndarray:
        """The global document (int64 array) holding each stream position: binary searches in the shards' indexes."""
        p = np.atleast_1d(np.asarray(positions, dtype=np.int64))
        if p.size and (p.min() < 0 or p.max() >= len(self)):
            raise IndexError(f"positions must be in [0, {len(self)})")
        out = np.empty(p.shape, np.int64)
        shard = np.searchsorted(self.offsets, p, side="right") - 1
        for k in np.unique(shard):
            rows = shard == k
            s = self.shards[k]
            byte = (p[rows] - self.offsets[k]) * s.dtype.itemsize
            seq = np.searchsorted(s.sequence_pointers, byte, side="right") - 1
            # The last sequence starting at or before the byte; empty sequences share a pointer with the next one.
            doc = np.searchsorted(s.document_indices, seq, side="right") - 1
            out[rows] = doc + self.doc_offsets[k]
        return out

    def _check(self, starts: np.ndarray, length: int) -> None:
        if length < 0:
            raise ValueError(f"window length must be >= 0, got {length}")
        if starts.size and (starts.min() < 0 or starts.max() + length > len(self)):
            raise IndexError(f"windows of {length} tokens from {starts.min()}..{starts.max()}: stream has {len(self)}")

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` of the stream as int64, crossing shard boundaries where needed."""
        start = int(start)
        self._check(np.array([start]), length)
        out = np.empty(length, dtype=np.int64)
        k = int(np.searchsorted(self.offsets, start, side="right")) - 1
        done = 0
        while done < length:
            while self.offsets[k + 1] <= start + done:  # skip empty shards
                k += 1
            local = start + done - int(self.offsets[k])
            take = min(length - done, self.shards[k].num_tokens - local)
            out[done : done + take] = self.shards[k].tokens[local : local + take]
            done += take
        return out

    def windows(self, starts: np.ndarray | Sequence[int], length: int) -> np.ndarray:
        """``(len(starts), length)`` int64: row r is ``window(starts[r], length)``.

        One slice per window inside a shard; the few that straddle a boundary go through ``window``.
        """
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        self._check(starts, length)
        out = np.empty((len(starts), length), dtype=np.int64)
        shard = (np.searchsorted(self.offsets, starts, side="right") - 1).tolist()
        offsets = self.offsets.tolist()
        # A slice copy per row: contiguous reads, cheaper than a fancy-index gather at training batch sizes.
        for r, (start, k) in enumerate(zip(starts.tolist(), shard)):
            local = start - offsets[k]
            if start + length <= offsets[k + 1]:
                out[r] = self.shards[k].tokens[local : local + length]
            else:
                out[r] = self.window(start, length)
        return out


def num_windows(num_tokens: int, block_size: int) -> int:
    """How many training windows a stream of ``num_tokens`` holds for causal LM over ``block_size`` positions.

    Window ``w`` is tokens ``[w * block_size, w * block_size + block_size + 1)``: ``block_size + 1`` tokens (inputs
    and the next-token targets), stride ``block_size``, so consecutive windows share one token and every token but
    the stream's first is a target exactly once per epoch. Hence ``(num_tokens - 1) // block_size`` windows.
    """
    return max(0, (num_tokens - 1) // block_size)


_M64 = (1 << 64) - 1


def _mix_int(x: int) -> int:
    """splitmix64's step on a Python int: derives the round keys."""
    return _finalise_int((x + 0x9E3779B97F4A7C15) & _M64)


def _finalise_int(x: int) -> int:
    """splitmix64's finaliser on a Python int in [0, 2**64): ``_mix`` on one value."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping multiplication is what numpy arrays do)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class WindowOrder:
    """The order an epoch visits ``n_windows`` windows in: ``index(epoch, i)`` is the window at position ``i``.

    For each epoch a bijection on ``[0, n_windows)``, a pure function of ``(seed, epoch, i)`` with O(1) state: a
    keyed Feistel network on ``[0, 2**k)`` (the smallest power of two >= n_windows, so < 2 n_windows) with
    cycle-walking: values >= n_windows are permuted again until they land inside, which keeps it a bijection on
    ``[0, n_windows)`` (each cycle of the big permutation, restricted to the small range). Fewer than 2 rounds of
    walking are needed on average. Each Feistel round splits ``x`` into a high part ``L`` and a low part ``R`` and
    maps it to ``R, L ^ F(R)``, invertible whatever ``F`` is; ``F`` is splitmix64 keyed per (seed, epoch, round).
    """

    ROUNDS = 8

    def __init__(self, n_windows: int, seed: int):
        if n_windows < 1:
            raise ValueError(f"need at least one window, got {n_windows}")
        self.n_windows = int(n_windows)
        self.seed = int(seed)
        self.bits = max(1, (self.n_windows - 1).bit_length())

    def _keys(self, epoch: int) -> list[np.uint64]:
        base = _mix_int(_mix_int(self.seed & _M64) ^ (epoch & _M64))
        return [np.uint64(_mix_int(base + r)) for r in range(self.ROUNDS)]

    def _feistel(self, x: np.ndarray, keys: list[np.uint64]) -> np.ndarray:
        high, low = self.bits - self.bits // 2, self.bits // 2  # widths of L and R; they swap every round
        for key in keys:
            r = x & np.uint64((1 << low) - 1)
            l_ = x >> np.uint64(low)
            f = _mix(r ^ key) & np.uint64((1 << high) - 1)
            x = (r << np.uint64(high)) | (l_ ^ f)
            high, low = low, high
        return x

    def _feistel_int(self, x: int, keys: list[np.uint64]) -> int:
        """``_feistel`` on one Python int, bit for bit (cheaper than numpy's per-call overhead for a few values)."""
        high, low = self.bits - self.bits // 2, self.bits // 2
        for key in keys:
            r, l_ = x & ((1 << low) - 1), x >> low
            f = _finalise_int(r ^ int(key)) & ((1 << high) - 1)
            x = (r << high) | (l_ ^ f)
            high, low = low, high
        return x

    _SMALL = 64  # at most this many positions go through the Python-int path

    def index(self, epoch: int, i: int | np.ndarray) -> int | np.ndarray:
        """The window at position ``i`` (int or int array) of epoch ``epoch``."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        scalar = np.ndim(i) == 0
        pos = np.atleast_1d(np.asarray(i, dtype=np.int64))
        if pos.size and (pos.min() < 0 or pos.max() >= self.n_windows):
            raise IndexError(f"positions must be in [0, {self.n_windows})")
        keys = self._keys(int(epoch))
        if pos.size <= self._SMALL:
            out = []
            for v in pos.reshape(-1).tolist():
                v = self._feistel_int(v, keys)
                while v >= self.n_windows:  # cycle-walking
                    v = self._feistel_int(v, keys)
                out.append(v)
            return out[0] if scalar else np.array(out, dtype=np.int64).reshape(np.shape(i))
        x = self._feistel(pos.astype(np.uint64), keys)
        outside = np.nonzero(x >= self.n_windows)[0]
        while outside.size:  # cycle-walking
            x[outside] = self._feistel(x[outside], keys)
            outside = outside[x[outside] >= self.n_windows]
        x = x.astype(np.int64)
        return int(x[0]) if scalar else x.reshape(np.shape(i))

    def windows_of_step(self, step: int, global_batch: int) -> np.ndarray:
        """The ``global_batch`` window numbers of optimiser step ``step`` (int64).

        Batch position ``p = step * global_batch + j`` is position ``p % n_windows`` of epoch ``p // n_windows``, so a
        step's batch depends on ``(seed, step)`` only (exact resume), epochs run back to back, and a batch may
        straddle two (or, with a batch larger than an epoch, more) epochs.
        """
        p = int(step) * int(global_batch) + np.arange(global_batch, dtype=np.int64)
        epochs, pos = np.divmod(p, self.n_windows)
        out = np.empty(global_batch, dtype=np.int64)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            out[sel] = self.index(int(epoch), pos[sel])
        return out

#!/usr/bin/env bash
# One prepared check for a single-GPU machine (H100 / H200): GPT-2 small (124M) trained by
# tokenmill.training.train in bf16 with DeepSpeed ZeRO-2 on one process, for a few hundred steps on synthetic
# tokens, printing tokens/s and MFU. Made to finish inside 10 minutes, installs included, on a
# machine that may have no package access at all.
#
# What it runs on a GPU for the first time (2026-12-04; none of it has run on one yet): the per-step stop and
# checkpoint agreement as an all-reduce of a tensor on the engine's device over nccl (training/distributed.py), the
# chunked output layer + cross entropy of GPT (training/models/layers.py linear_cross_entropy, bf16 matmuls, float32
# log-softmax), torch's fused AdamW (its CUDA kernel), and train.precision auto (the default since 2026-12-05):
# the device's bf16 answer (compute capability >= 8.0) and the ranks' all-reduce of it over nccl. bf16 keeps the
# configured ZeRO-2 on one process (only fp32 on one rank runs as stage 0, distributed.zero_stage). The report's tokens/s and MFU are the figures to compare
# with the unfused loss (train at an earlier commit) if the chunk loop turns out slower on a GPU than on a CPU.
#
#   bench/gpu_check.sh              run it (from anywhere; it works in the repo this file is in)
#   bench/gpu_check.sh --dry-run    print the plan, the config overrides and the launch command; run nothing
#   bench/gpu_check.sh --cpu-smoke  the same phases on CPU with a debug-sized model (checks the script
#                                   itself where there is no GPU: fp32, 20 steps, under a minute)
#
# Phases, each time-boxed (seconds, overridable): env (TIMEOUT_ENV), data (TIMEOUT_DATA),
# train (TIMEOUT_TRAIN, cut to what is left of DEADLINE=570 for the whole check), then a report. A
# failure or timeout stops the check with a non-zero exit and a line saying which phase failed and why.
#
# env: uses the Python that already has torch (PYTHON, else the repo's .venv, else python3): when
#   torch sees a GPU and deepspeed, tokenizers, pyarrow, numpy, pyyaml, safetensors and matplotlib
#   import, nothing is installed. Missing packages are installed from the wheels in WHEELHOUSE
#   (default: <repo>/wheelhouse, built beforehand by bench/wheelhouse.sh on a machine with registry
#   access) with `pip install --no-index` into that interpreter's environment, or, where that
#   environment refuses, into WORK_DIR/site (the wheelhouse's requirements.txt, on PYTHONPATH).
#   torch itself comes from there only when it is missing and the wheelhouse has it (WITH_TORCH=1).
#   For a CUDA image that has everything but DeepSpeed, a wheelhouse of a few MB is enough:
#     SET="deepspeed hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions" \
#         NO_DEPS=1 bench/wheelhouse.sh
#   tokenmill is not installed: it runs from the repo (PYTHONPATH), as tokenmill.training.launch does;
#   training imports no Spark, so pyspark need not be there.
# data: no Spark, no crawl: a byte-level BPE tokenizer.json of exactly VOCAB ids (the project's
#   special tokens first, then the 256 byte symbols, then two-symbol merges) and train/validation
#   indexed (Megatron .bin/.idx) token shards of random ids, with the tokenize manifest training reads.
# train: `python -m torch.distributed.run --standalone --nproc-per-node=1 -m tokenmill.training.train ...`,
#   the command `tokenmill train` launches, on a config resolved by tokenmill.core.config from the
#   --set overrides --dry-run prints (no MLflow run: tracking is off for the check).
# report: median / max tokens/s and MFU over the logged windows (train/tokens_per_s and train/mfu in
#   the train manifest's history, else the log lines), peak GPU memory, validation loss, timings.
#
# Settings (environment): STEPS (300), MICRO_BATCH (16 sequences), BLOCK (1024), VOCAB (50304),
# PRECISION (auto: the product's default, bf16 on a GPU of compute capability >= 8.0), ZERO_STAGE (2), LOG_EVERY (10), TRAIN_TOKENS (8000000), WORK_DIR
# (${TMPDIR:-/tmp}/tokenmill-gpu-check: tokens, config, model, checkpoint; about 2 GB),
# RESULTS_DIR (default WORK_DIR: gpu_check.json, train.log and train_manifest.json are copied
# there), PIP_EXTRA_ARGS (added to the pip install line).
set -euo pipefail

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

DRY_RUN=0
CPU_SMOKE=0
while (($#)); do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --cpu-smoke) CPU_SMOKE=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK_DIR=${WORK_DIR:-${TMPDIR:-/tmp}/tokenmill-gpu-check}
RESULTS_DIR=${RESULTS_DIR:-$WORK_DIR}
WHEELHOUSE=${WHEELHOUSE:-$REPO/wheelhouse}
PIP_EXTRA_ARGS=${PIP_EXTRA_ARGS:-}
if ((CPU_SMOKE)); then
    FLAVOR=${FLAVOR:-debug}; PRECISION=${PRECISION:-fp32}; STEPS=${STEPS:-20}; MICRO_BATCH=${MICRO_BATCH:-4}
    BLOCK=${BLOCK:-64}; VOCAB=${VOCAB:-1024}; TRAIN_TOKENS=${TRAIN_TOKENS:-200000}; LOG_EVERY=${LOG_EVERY:-5}
else
    FLAVOR=${FLAVOR:-gpt2-small}; PRECISION=${PRECISION:-auto}; STEPS=${STEPS:-300}; MICRO_BATCH=${MICRO_BATCH:-16}
    BLOCK=${BLOCK:-1024}; VOCAB=${VOCAB:-50304}; TRAIN_TOKENS=${TRAIN_TOKENS:-8000000}; LOG_EVERY=${LOG_EVERY:-10}
fi
ZERO_STAGE=${ZERO_STAGE:-2}
WARMUP=${WARMUP:-$((STEPS / 10 < 30 ? STEPS / 10 : 30))}
TIMEOUT_ENV=${TIMEOUT_ENV:-150}
TIMEOUT_DATA=${TIMEOUT_DATA:-60}
TIMEOUT_TRAIN=${TIMEOUT_TRAIN:-330}
DEADLINE=${DEADLINE:-570}  # the whole check; the train phase gets at most what is left of it minus 30 s

TOKENS_DIR=$WORK_DIR/tokens
TOKENS_MANIFEST=$TOKENS_DIR/manifest.json
RUN_CONFIG=$WORK_DIR/config.yaml
TRAIN_OUT=$WORK_DIR/train
TRAIN_LOG=$WORK_DIR/train.log

# Everything tokenmill.training.train is told, as `tokenmill --set` overrides over the built-in defaults.
OVERRIDES=(
    run.name=gpu-check
    "run.output_dir=$WORK_DIR/runs"
    "model.flavor=$FLAVOR"
    "model.block_size=$BLOCK"
    "train.precision=$PRECISION"
    "train.zero_stage=$ZERO_STAGE"
    train.nproc=1
    "train.micro_batch_size=$MICRO_BATCH"
    train.grad_accum_steps=1
    "train.max_steps=$STEPS"
    "train.warmup_steps=$WARMUP"
    "train.log_every=$LOG_EVERY"
    train.eval_every=0
    train.eval_max_blocks=16
    train.checkpoint_every=0
    train.resume=false
    train.sample_tokens=8
    tracking.register_model=false
)
# Modules the training ranks import, and the distributions that provide them.
REQUIRED_MODULES="torch:torch deepspeed:deepspeed tokenizers:tokenizers pyarrow:pyarrow numpy:numpy yaml:pyyaml
safetensors:safetensors matplotlib:matplotlib"

LAUNCH=(-m torch.distributed.run --standalone --nproc-per-node=1 -m tokenmill.training.train
        --run-config "$RUN_CONFIG" --tokens-manifest "$TOKENS_MANIFEST" --out-dir "$TRAIN_OUT")

SUMMARY="model $FLAVOR, block $BLOCK, precision $PRECISION, ZeRO-$ZERO_STAGE, micro batch $MICRO_BATCH x $BLOCK tokens, $STEPS steps, 1 process"

if ((DRY_RUN)); then
    modules=""
    for pair in $REQUIRED_MODULES; do modules+="${pair%%:*} "; done
    mode="" need="torch with a CUDA GPU"
    if ((CPU_SMOKE)); then mode=" [CPU smoke]" need="torch (CPU is enough)"; fi
    cat <<EOF
gpu_check --dry-run: nothing is installed, written or run.
  repo          $REPO
  work dir      $WORK_DIR   (results copied to $RESULTS_DIR)
  run           $SUMMARY$mode
  time          at most ${DEADLINE}s in all
1. env   (limit ${TIMEOUT_ENV}s): pick the Python that has torch (\$PYTHON, $REPO/.venv/bin/python, python3);
         require $need and the modules: ${modules% };
         install missing ones: pip install --no-index --find-links $WHEELHOUSE <distributions>
2. data  (limit ${TIMEOUT_DATA}s): tokenizer.json with $VOCAB ids, $TRAIN_TOKENS random train tokens and
         validation tokens as indexed shards, tokenize manifest $TOKENS_MANIFEST
3. train (limit ${TIMEOUT_TRAIN}s): resolve the config with tokenmill.core.config into $RUN_CONFIG:
$(printf '           --set %s\n' "${OVERRIDES[@]}")
         then run (cwd $REPO, PYTHONPATH=$REPO):
           <python> ${LAUNCH[*]}
4. report: tokens/s and MFU (train/tokens_per_s, train/mfu) from $TRAIN_OUT/manifest.json,
         written to $RESULTS_DIR/gpu_check.json
EOF
    exit 0
fi

T_START=$SECONDS
declare -A TIMING=()
PHASE=setup
report_timings() {
    local t=""
    for p in env data train report; do
        [[ -n ${TIMING[$p]:-} ]] && t+="$p ${TIMING[$p]}s, "
    done
    echo "gpu_check: timings: ${t}total $((SECONDS - T_START))s"
}
die() {
    echo "gpu_check: FAILED in phase $PHASE: $*" >&2
    report_timings >&2
    exit 1
}
begin() {
    PHASE=$1
    PHASE_START=$SECONDS
    echo "gpu_check: == $1 (limit ${2}s)"
}
finish() { TIMING[$PHASE]=$((SECONDS - PHASE_START)); echo "gpu_check: == $PHASE done in ${TIMING[$PHASE]}s"; }

command -v timeout >/dev/null || die "the 'timeout' command (coreutils) is missing"
mkdir -p "$WORK_DIR" "$RESULTS_DIR"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# ------------------------------------------------------------------------------------------ env
begin env "$TIMEOUT_ENV"
PY=""
if [[ -n ${PYTHON:-} ]]; then
    PY=$(command -v "$PYTHON") || die "PYTHON=$PYTHON is not an executable"
else
    for candidate in "$REPO/.venv/bin/python" python3 python; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' 2>/dev/null; then
            PY=$(command -v "$candidate")
            break
        fi
    done
    if [[ -z $PY ]]; then
        for candidate in "$REPO/.venv/bin/python" python3 python; do
            if command -v "$candidate" >/dev/null; then PY=$(command -v "$candidate"); break; fi
        done
    fi
fi
[[ -n $PY ]] || die "no Python interpreter found (set PYTHON)"

probe() {
    # Prints shell assignments: PY_VERSION, TORCH_VERSION, CUDA_OK, DEVICE, MISSING (distributions).
    timeout 120 "$PY" - "$REQUIRED_MODULES" <<'PYEOF'
import importlib.util, shlex, sys
out = {"PY_VERSION": "%d.%d" % sys.version_info[:2], "TORCH_VERSION": "", "CUDA_OK": "0", "DEVICE": "cpu"}
missing = []
for pair in sys.argv[1].split():
    module, dist = pair.split(":")
    if importlib.util.find_spec(module) is None:
        missing.append(dist)
if "torch" not in missing:
    import torch
    out["TORCH_VERSION"] = torch.__version__
    if torch.cuda.is_available():
        out["CUDA_OK"] = "1"
        out["DEVICE"] = torch.cuda.get_device_name(0)
out["MISSING"] = " ".join(missing)
for k, v in out.items():
    print(f"{k}={shlex.quote(v)}")
PYEOF
}
assignments=$(probe) || die "$PY could not report its packages"
eval "$assignments"
echo "gpu_check: python $PY ($PY_VERSION), torch ${TORCH_VERSION:-missing}, device $DEVICE"
if [[ -n $MISSING ]]; then
    echo "gpu_check: missing: $MISSING"
    compgen -G "$WHEELHOUSE/*.whl" >/dev/null ||
        die "missing $MISSING and no wheels in $WHEELHOUSE: build them with bench/wheelhouse.sh on a machine" \
            "with registry access (PY_VERSIONS must include $PY_VERSION) and bring wheelhouse/ with the repo"
    if [[ " $MISSING " == *" torch "* ]] && ! compgen -G "$WHEELHOUSE/torch-*.whl" >/dev/null; then
        die "torch is not installed for $PY and $WHEELHOUSE has no torch wheel: use the machine's own torch" \
            "(PYTHON=...) or build the wheelhouse with WITH_TORCH=1"
    fi
    # shellcheck disable=SC2086  # MISSING and PIP_EXTRA_ARGS are word lists
    if ! timeout "$TIMEOUT_ENV" "$PY" -m pip install --no-index --find-links "$WHEELHOUSE" --no-cache-dir \
        --disable-pip-version-check --progress-bar off $PIP_EXTRA_ARGS $MISSING; then
        # A read-only or externally managed environment: put exactly the wheelhouse's pins in a folder
        # of our own, ahead of the environment's packages on PYTHONPATH.
        [[ -f $WHEELHOUSE/requirements.txt ]] ||
            die "pip install --no-index --find-links $WHEELHOUSE $MISSING failed (see above), and there is no" \
                "$WHEELHOUSE/requirements.txt to install into a separate folder instead"
        echo "gpu_check: installing into $PY's environment failed; installing the wheelhouse's pins into $WORK_DIR/site"
        # shellcheck disable=SC2086
        timeout "$TIMEOUT_ENV" "$PY" -m pip install --no-index --find-links "$WHEELHOUSE" --no-cache-dir \
            --disable-pip-version-check --progress-bar off --no-deps --upgrade --target "$WORK_DIR/site" \
            $PIP_EXTRA_ARGS -r "$WHEELHOUSE/requirements.txt" ||
            die "pip install --target $WORK_DIR/site -r $WHEELHOUSE/requirements.txt failed or timed out; see above"
        export PYTHONPATH="$PYTHONPATH:$WORK_DIR/site"
    fi
    assignments=$(probe) || die "$PY could not report its packages after the install"
    eval "$assignments"
    [[ -z $MISSING ]] || die "still missing after the install: $MISSING"
fi
if ((!CPU_SMOKE)) && [[ $CUDA_OK != 1 ]]; then
    die "torch $TORCH_VERSION at $PY sees no CUDA GPU (for a run without a GPU use --cpu-smoke)"
fi
versions=$(timeout 120 "$PY" -c 'import deepspeed, tokenizers, pyarrow, yaml, safetensors, matplotlib, torch
print(f"deepspeed {deepspeed.__version__}, tokenizers {tokenizers.__version__}, pyarrow {pyarrow.__version__}")' \
    2>"$WORK_DIR/imports.err") || die "the training packages do not import: $(tail -n 3 "$WORK_DIR/imports.err")"
versions=${versions##*$'\n'}  # DeepSpeed may log to stdout on import: keep the last line
echo "gpu_check: $versions"

# tokenmill.training.train reads its config with tokenmill.core.config, which imports no stage (no Spark).
config_check='from tokenmill.core.config import load_config; load_config()'
err=$(timeout 120 "$PY" -c "$config_check" 2>&1) || die "tokenmill.core.config does not load: $(echo "$err" | tail -n 1)"
finish

# ----------------------------------------------------------------------------------------- data
begin data "$TIMEOUT_DATA"
rm -rf "$TOKENS_DIR"
timeout "$TIMEOUT_DATA" "$PY" - "$TOKENS_DIR" "$VOCAB" "$TRAIN_TOKENS" "$BLOCK" <<'PYEOF' || die "synthetic tokens were not written (exit $?)"
"""Synthetic tokenize output in the format the tokenize job (spark_jobs/tokenize.py) writes."""
import sys
import time
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from tokenmill.core.indexed import IndexedShardWriter, dtype_for
from tokenmill.core.manifest import sha256_file, write_manifest
from tokenmill.core.tokenizer import SPECIAL_TOKENS, special_ids

started = time.time()
out, vocab_size, train_tokens, block = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out.mkdir(parents=True, exist_ok=True)

# Byte-level BPE with exactly vocab_size ids: specials, the 256 byte symbols, then two-symbol merges.
symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
if not len(SPECIAL_TOKENS) + len(symbols) < vocab_size <= len(SPECIAL_TOKENS) + len(symbols) * (len(symbols) + 1):
    sys.exit(f"VOCAB={vocab_size} is out of range for a byte-level BPE with {len(SPECIAL_TOKENS)} special tokens")
vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
vocab.update({s: len(SPECIAL_TOKENS) + i for i, s in enumerate(symbols)})
merges = []
for a in symbols:
    for b in symbols:
        if len(vocab) == vocab_size:
            break
        vocab[a + b] = len(vocab)
        merges.append((a, b))
tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.add_special_tokens(SPECIAL_TOKENS)
tok.encode_special_tokens = True
assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
specials = special_ids(tok)
tok_path = out / "tokenizer.json"
tok.save(str(tok_path))

# Documents of 4 blocks of random ordinary ids, each ended by <|endoftext|>, one indexed shard per split.
rng = np.random.default_rng(1234)
dtype = dtype_for(vocab_size)
doc_len = 4 * block
splits = {}
for split, n_tokens in (("train", train_tokens), ("validation", max(64 * (block + 1), 50_000))):
    n_docs = max(1, -(-n_tokens // doc_len))
    counts = np.zeros(vocab_size, dtype=np.int64)
    (out / split).mkdir(exist_ok=True)
    with IndexedShardWriter(out / split / "part-00000", dtype) as writer:
        for _ in range(n_docs):
            doc = rng.integers(len(SPECIAL_TOKENS), vocab_size, size=doc_len, dtype=np.int64)
            doc[-1] = specials["eot"]
            writer.add_document(doc)
            counts += np.bincount(doc, minlength=vocab_size)
    shard = writer.finish()
    np.save(out / split / "unigram_counts.npy", counts)
    splits[split] = {
        "documents": shard["documents"],
        "tokens": shard["tokens"],
        "unigram_counts": str(out / split / "unigram_counts.npy"),
        "shards": [{"prefix": str(out / split / "part-00000"), **{k: shard[k] for k in
                    ("documents", "tokens", "sha256", "idx_sha256")}}],
    }

write_manifest(out / "manifest.json", {
    "stage": "tokenize",
    "data_manifest": None,
    "synthetic": {"writer": "bench/gpu_check.sh", "ids": "uniform random over the non-special ids", "seed": 1234},
    "tokenizer": {"path": str(tok_path), "sha256": sha256_file(tok_path), "vocab_size": tok.get_vocab_size(),
                  "eot_id": specials["eot"], "kind": "synthetic byte-level BPE", "special_tokens": specials,
                  "sample": {"fraction": 0.0, "documents": 0, "bytes": 0}},
    "format": {"name": "megatron-indexed", "dtype": dtype.name},
    "splits": splits,
    "config": {"vocab_size": vocab_size, "min_frequency": None, "validation_fraction": None, "from_pretrained": None,
               "sample_bytes": None},
    "timings": {"total_s": round(time.time() - started, 2)},
})
print(f"gpu_check: {splits['train']['tokens']} train / {splits['validation']['tokens']} validation tokens, "
      f"vocabulary {vocab_size}, in {time.time() - started:.1f}s")
PYEOF
finish

# ---------------------------------------------------------------------------------------- train
left=$((DEADLINE - (SECONDS - T_START) - 30))
((left > 0)) || die "no time left before DEADLINE=${DEADLINE}s for training"
((TIMEOUT_TRAIN <= left)) || TIMEOUT_TRAIN=$left
begin train "$TIMEOUT_TRAIN"
rm -rf "$TRAIN_OUT" "$TRAIN_LOG"
mkdir -p "$TRAIN_OUT"
err=$(timeout 120 "$PY" - "$RUN_CONFIG" "${OVERRIDES[@]}" <<'PYEOF' 2>&1
import sys
from pathlib import Path

from tokenmill.core.config import dump_config, load_config, resolve_paths
from tokenmill.core.env import REPO_ROOT
from tokenmill.training.models import architecture

cfg = resolve_paths(load_config(None, sys.argv[2:]), REPO_ROOT)
architecture(cfg.model)  # the model section is valid before any GPU time is spent
dump_config(cfg, Path(sys.argv[1]))
PYEOF
) || die "the config did not resolve: $(echo "$err" | tail -n 1)"
echo "gpu_check: $SUMMARY"
echo "gpu_check: config $RUN_CONFIG; launching: $PY ${LAUNCH[*]}"
if (cd "$REPO" && timeout --kill-after=30 "$TIMEOUT_TRAIN" "$PY" "${LAUNCH[@]}") 2>&1 | tee "$TRAIN_LOG"; then
    :
else
    rc=$?
    cp "$TRAIN_LOG" "$RESULTS_DIR/" 2>/dev/null || true
    if ((rc == 124 || rc == 137)); then
        die "training did not finish within ${TIMEOUT_TRAIN}s (lower STEPS or raise TIMEOUT_TRAIN); log: $TRAIN_LOG"
    fi
    cause=$(grep -E '^\s*[A-Za-z_.]+(Error|Exception)\b' "$TRAIN_LOG" | grep -v ChildFailedError | tail -n 1 || true)
    die "training exited with code $rc: ${cause:-see $TRAIN_LOG}"
fi
finish

# --------------------------------------------------------------------------------------- report
begin report 30
timeout 30 "$PY" - "$TRAIN_OUT/manifest.json" "$TRAIN_LOG" "$RESULTS_DIR/gpu_check.json" "$DEVICE" "$SUMMARY" \
    "torch $TORCH_VERSION, $versions, python $PY_VERSION" <<'PYEOF' ||
"""Summarise throughput and MFU from the train manifest's history (or the log lines if it is missing)."""
import json
import re
import statistics
import sys
from pathlib import Path

manifest_path, log_path, out_path, device, summary, packages = sys.argv[1:7]
windows = []
manifest = None
if Path(manifest_path).is_file():
    manifest = json.loads(Path(manifest_path).read_text())
    for h in manifest.get("history", []):
        windows.append({"step": h["step"], "tokens_per_s": h.get("train/tokens_per_s"), "mfu": h.get("train/mfu"),
                        "gpu_memory_gib": h.get("train/gpu_memory_gib")})
else:
    line = re.compile(r"step (\d+)/\d+.*?([\d.]+) tokens/s(?:\s+mfu ([\d.]+)%)?")
    for m in map(line.search, Path(log_path).read_text().splitlines()):
        if m:
            windows.append({"step": int(m.group(1)), "tokens_per_s": float(m.group(2)),
                            "mfu": float(m.group(3)) / 100 if m.group(3) else None, "gpu_memory_gib": None})
if not windows:
    sys.exit("gpu_check: no tokens/s in the train manifest or the log")
# The first windows hold start-up (allocator warm-up, kernel selection): leave out the first fifth.
steady = windows[len(windows) // 5:] or windows


def stats(key):
    values = [w[key] for w in steady if w[key] is not None]
    return {"median": statistics.median(values), "max": max(values)} if values else None


result = {
    "device": device, "run": summary, "packages": packages, "windows": len(windows), "steady_windows": len(steady),
    "tokens_per_s": stats("tokens_per_s"), "mfu": stats("mfu"),
    "peak_gpu_memory_gib": max((w["gpu_memory_gib"] or 0) for w in windows) or None,
    "num_params": manifest["model"]["num_params"] if manifest else None,
    "val_loss": manifest.get("val_loss") if manifest else None,
    "precision": manifest.get("precision") if manifest else None,
}
Path(out_path).write_text(json.dumps(result, indent=2))
tps, mfu = result["tokens_per_s"], result["mfu"]
print(f"gpu_check: RESULT on {device}: {summary}")
print(f"gpu_check:   software         {packages}")
if result["precision"]:
    print(f"gpu_check:   precision        {result['precision']} (what the ranks ran; train.precision auto resolves on them)")
if result["num_params"]:
    print(f"gpu_check:   parameters       {result['num_params'] / 1e6:.1f}M")
print(f"gpu_check:   tokens/s         median {tps['median']:,.0f}  max {tps['max']:,.0f}  "
      f"(last {len(steady)} of {len(windows)} logged windows)")
if mfu:
    print(f"gpu_check:   MFU              median {mfu['median']:.1%}  max {mfu['max']:.1%}")
else:
    print("gpu_check:   MFU              not logged (no train/mfu in the history: no peak FLOP/s known for this "
          "device, or a tokenmill.training.train without MFU; train.peak_flops sets the peak)")
if result["peak_gpu_memory_gib"]:
    print(f"gpu_check:   peak GPU memory  {result['peak_gpu_memory_gib']:.1f} GiB")
if result["val_loss"] is not None:
    print(f"gpu_check:   validation loss  {result['val_loss']:.4f} (random tokens: about ln(vocab) is expected)")
print(f"gpu_check:   summary          {out_path}")
PYEOF
    die "could not summarise the run"
if [[ $RESULTS_DIR != "$WORK_DIR" ]]; then
    cp "$TRAIN_LOG" "$RESULTS_DIR/train.log"
    [[ -f $TRAIN_OUT/manifest.json ]] && cp "$TRAIN_OUT/manifest.json" "$RESULTS_DIR/train_manifest.json"
fi
finish
report_timings

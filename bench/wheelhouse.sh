#!/usr/bin/env bash
# Build wheelhouse/: the wheels bench/gpu_check.sh installs on a GPU machine that has no package access.
# Run it on a machine WITH registry access, in the repo, after `make install` (the pins and their
# dependencies are read from requirements/constraints.txt and from the installed .venv).
#
#   bench/wheelhouse.sh              download into <repo>/wheelhouse
#   bench/wheelhouse.sh --dry-run    print the pinned list and the pip commands; download nothing
#
# Settings (environment):
#   SET=train     (default) what tokenmill.training.train imports, with every dependency: deepspeed, tokenizers,
#                 pyarrow, numpy, pyyaml, safetensors, matplotlib (+ pydantic, hjson, ...): ~150 MB for
#                 two Python versions. SET=deepspeed: DeepSpeed and its dependencies only. SET=all:
#                 every pin in requirements/constraints.txt (Spark, Prefect, MLflow, the bench peers;
#                 several hundred MB, pyspark alone ~400 MB). Or SET="name ..." for the named
#                 distributions (at their pinned versions).
#   NO_DEPS=1     fetch only the roots of SET, not their dependencies. For a GPU image that already has
#                 torch, numpy, pyarrow, tokenizers, ... (the usual CUDA images), the few MB it lacks:
#                   SET="deepspeed hjson pydantic pydantic-core annotated-types typing-inspection
#                        typing-extensions" NO_DEPS=1 PY_VERSIONS=3.12 bench/wheelhouse.sh
#   PY_VERSIONS   CPython versions to fetch compiled wheels for (default "3.11 3.12": the project's 3.11
#                 and the 3.12 that GPU images with a preinstalled CUDA torch often carry). Pure-Python
#                 wheels are shared.
#   WITH_TORCH=1  also download torch (TORCH_SPEC, default torch==2.13.0 as in the Makefile) with its CUDA
#                 dependencies (nvidia-*, triton): several GB. Off by default: the GPU machine's own CUDA
#                 torch is preferred, and gpu_check.sh uses it when it imports.
#   WHEELHOUSE    output folder (default <repo>/wheelhouse); PYTHON (default <repo>/.venv/bin/python);
#   JOBS          parallel downloads (default 8).
#
# Targets linux x86_64 (manylinux). Distributions published only as source (DeepSpeed among them) are
# built here into wheels with `pip wheel --no-build-isolation` (DeepSpeed with DS_BUILD_OPS=0: its
# ops are compiled at run time when needed); a built wheel that is not pure Python fits only this
# machine's Python and platform, and the script says so. wheelhouse/requirements.txt lists what was
# fetched. Keep wheelhouse/ out of git; bring it along with the repo copy to the GPU machine.
set -euo pipefail

DRY_RUN=0
case ${1:-} in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "wheelhouse: unknown argument $1" >&2; exit 2 ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
OUT=${WHEELHOUSE:-$REPO/wheelhouse}
SET=${SET:-train}
NO_DEPS=${NO_DEPS:-0}
PY_VERSIONS=${PY_VERSIONS:-3.11 3.12}
WITH_TORCH=${WITH_TORCH:-0}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
JOBS=${JOBS:-8}
CONSTRAINTS=$REPO/requirements/constraints.txt

die() { echo "wheelhouse: $*" >&2; exit 1; }
[[ -x $PYTHON ]] || die "no Python at $PYTHON: run 'make install' first, or set PYTHON"
[[ -f $CONSTRAINTS ]] || die "missing $CONSTRAINTS"

# linux x86_64 platform tags pip should accept; it matches --platform values exactly.
PLATFORM_ARGS=()
for n in $(seq 17 39); do PLATFORM_ARGS+=(--platform "manylinux_2_${n}_x86_64"); done
PLATFORM_ARGS+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)

# name==version for every distribution to fetch: the roots of SET and their dependencies, by the
# installed metadata (markers evaluated for each of PY_VERSIONS), pinned by constraints.txt where listed.
PINS=$("$PYTHON" - "$CONSTRAINTS" "$SET" "$PY_VERSIONS" "$NO_DEPS" <<'PYEOF'
import re
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon

constraints, which, py_versions, no_deps = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4] == "1"
pins = {}
for line in open(constraints):
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
    if m:
        pins[canon(m.group(1))] = m.group(2)
installed = {canon(d.metadata["Name"]): d for d in metadata.distributions()}
named = {"train": ["deepspeed", "tokenizers", "pyarrow", "numpy", "pyyaml", "safetensors", "matplotlib"],
         "deepspeed": ["deepspeed"], "all": sorted(pins)}
roots = named.get(which, which.split())


def torch_family(name):
    # torch and what only its CUDA build needs: fetched by WITH_TORCH=1 with torch's own resolution.
    return name in ("torch", "triton") or name.startswith("nvidia-")


def wanted(req, extras):
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e, "python_version": v, "python_full_version": v + ".0"})
               for e in (extras or ("",)) for v in py_versions)


chosen, seen, stack = {}, set(), [(canon(r), ()) for r in roots]
while stack:
    name, extras = stack.pop()
    if torch_family(name) or (name, extras) in seen:
        continue
    seen.add((name, extras))
    dist = installed.get(name)
    version = pins.get(name) or (dist.version if dist else None)
    if version is None:
        print(f"wheelhouse: {name} is neither pinned nor installed: fetching its newest version, without "
              "its own dependencies", file=sys.stderr)
    chosen[name] = version
    for text in (dist.requires or []) if dist and not no_deps else []:
        req = Requirement(text)
        if wanted(req, extras):
            stack.append((canon(req.name), tuple(sorted(req.extras))))
for name in sorted(chosen):
    print(f"{name}=={chosen[name]}" if chosen[name] else name)
PYEOF
) || die "could not list the pinned distributions with $PYTHON"

count=$(wc -l <<<"$PINS")
torch_note="left out"
if [[ $WITH_TORCH == 1 ]]; then torch_note="included: $TORCH_SPEC"; fi
echo "wheelhouse: SET=$SET$([[ $NO_DEPS == 1 ]] && echo " (no dependencies)"), $count distributions (torch $torch_note), CPython $PY_VERSIONS, linux x86_64 -> $OUT"

if ((DRY_RUN)); then
    echo "wheelhouse --dry-run: nothing is downloaded. Would fetch:"
    sed 's/^/  /' <<<"$PINS"
    for v in $PY_VERSIONS; do
        echo "  for each: $PYTHON -m pip download --no-deps --only-binary=:all: --python-version $v" \
             "--implementation cp --abi cp${v/./} --abi abi3 --abi none --platform manylinux_2_{17..39}_x86_64 ..." \
             "-d $OUT NAME==VERSION"
        if [[ $WITH_TORCH == 1 ]]; then
            echo "  $PYTHON -m pip download --only-binary=:all: --python-version $v ... -d $OUT $TORCH_SPEC"
        fi
    done
    echo "  then, for pins with no wheel on the index: DS_BUILD_OPS=0 $PYTHON -m pip wheel --no-deps" \
         "--no-build-isolation -w $OUT NAME==VERSION"
    exit 0
fi

mkdir -p "$OUT"
FAILED=$(mktemp)
trap 'rm -f "$FAILED"' EXIT
started=$SECONDS

download_one() {  # $1 python version, $2 name==version; records failures in $FAILED
    local v=$1 pin=$2
    if ! "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version "$v" --implementation cp --abi "cp${v/./}" --abi abi3 --abi none \
        "${PLATFORM_ARGS[@]}" -d "$OUT" "$pin" >/dev/null 2>&1; then
        echo "$pin" >>"$FAILED"
    fi
}
export -f download_one
export PYTHON OUT FAILED
export PLATFORM_ARGS_STR="${PLATFORM_ARGS[*]}"

for v in $PY_VERSIONS; do
    echo "wheelhouse: downloading wheels for CPython $v ($JOBS at a time)"
    # shellcheck disable=SC2016  # expanded by the inner bash
    xargs -P "$JOBS" -I{} bash -c 'PLATFORM_ARGS=($PLATFORM_ARGS_STR); download_one "$0" "$1"' "$v" {} <<<"$PINS"
done

if [[ -s $FAILED ]]; then
    mapfile -t no_wheel < <(sort -u "$FAILED")
    echo "wheelhouse: no wheel on the index for ${#no_wheel[@]} pin(s): ${no_wheel[*]}; building them here"
    for pin in "${no_wheel[@]}"; do
        DS_BUILD_OPS=0 "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
            -w "$OUT" "$pin" || die "could not build a wheel for $pin"
        name=${pin%%==*}
        built=$(find "$OUT" -maxdepth 1 -iname "$(tr '-' '_' <<<"$name")-*.whl" -newer "$FAILED" | head -n1)
        if [[ -n $built && $built != *-none-any.whl ]]; then
            echo "wheelhouse: warning: $(basename "$built") is compiled: it fits only $("$PYTHON" -c 'import sys; print("CPython %d.%d" % sys.version_info[:2])') on this platform"
        fi
    done
fi

if [[ $WITH_TORCH == 1 ]]; then
    for v in $PY_VERSIONS; do
        echo "wheelhouse: downloading $TORCH_SPEC and its CUDA dependencies for CPython $v (several GB)"
        "$PYTHON" -m pip download --disable-pip-version-check --only-binary=:all: --python-version "$v" \
            --implementation cp --abi "cp${v/./}" --abi abi3 --abi none "${PLATFORM_ARGS[@]}" -d "$OUT" \
            "$TORCH_SPEC" || die "could not download $TORCH_SPEC for CPython $v"
    done
fi

{
    echo "# Written by bench/wheelhouse.sh (SET=$SET, NO_DEPS=$NO_DEPS, CPython $PY_VERSIONS, WITH_TORCH=$WITH_TORCH)."
    echo "$PINS"
    if [[ $WITH_TORCH == 1 ]]; then echo "$TORCH_SPEC"; fi
} >"$OUT/requirements.txt"
echo "wheelhouse: $(find "$OUT" -maxdepth 1 -name '*.whl' | wc -l) wheels, $(du -sh "$OUT" | cut -f1), in $((SECONDS - started))s: $OUT"

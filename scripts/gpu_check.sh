#!/usr/bin/env bash
# The prepared GPU check (the speed and latency goals of fast mode on a GPU): one command on a GPU machine with no network, or a CPU smoke run.
#
#   scripts/gpu_check.sh --fetch-wheels       here (network): download the wheels the GPU machine lacks
#                                             into gpu_wheels/ (git-ignored; carry it), fail over 64 MiB
#   scripts/gpu_check.sh [--out DIR]          on the GPU machine: install the carried wheels offline
#                                             beside the system's torch, then the full check
#   scripts/gpu_check.sh --cpu-smoke [--out DIR]   the same sections on the CPU, tiny stack (CI)
#
# Options: --out DIR (default $OUT, else out/gpu_check), --wheels DIR (default gpu_wheels),
# --python PY (default: .venv/bin/python if present, else python3), --limit SECONDS (the driver's time
# limit; default 450 for the full check, 170 for the smoke run). Writes DIR/gpu_check.json and
# DIR/gpu_check.log. Exit status: 0 every section ran, 1 a section failed, 2 bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the GPU machine's image lacks among this package's needs (its own list of installed packages,
# 2026-11-17, has torch, transformers, tokenizers, safetensors, huggingface-hub, numpy, pillow, tqdm,
# regex, requests, filelock, zipp, but not diffusers, av or importlib_metadata). Versions: the ones
# of the Python that fetches them (the development venv), so both machines run the same code.
WHEELS="diffusers av importlib_metadata"
WHEEL_LIMIT_BYTES=$((64 * 1024 * 1024))  # what one call may carry to the GPU machine, tree included

usage() {  # usage [STATUS]: the comment above, to stderr; exit STATUS (2: bad usage)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

mode=gpu
out="${OUT:-out/gpu_check}"
wheels=gpu_wheels
python=""
limit=""
while [ $# -gt 0 ]; do
    case "$1" in
        --fetch-wheels) mode=fetch ;;
        --cpu-smoke) mode=smoke ;;
        --out|--wheels|--python|--limit)
            [ $# -ge 2 ] || { echo "gpu_check.sh: $1 needs a value" >&2; usage; }
            case "$1" in
                --out) out="$2" ;; --wheels) wheels="$2" ;; --python) python="$2" ;; --limit) limit="$2" ;;
            esac
            shift ;;
        -h|--help) usage 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1'" >&2; usage ;;
    esac
    shift
done
if [ -n "$limit" ] && ! [[ "$limit" =~ ^[0-9]+$ ]]; then
    echo "gpu_check.sh: --limit must be whole seconds, got '$limit'" >&2
    usage
fi
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi

fetch_wheels() {
    local pins="" name version
    for name in $WHEELS; do
        version=$("$python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") \
            || { echo "gpu_check.sh: $name is not installed in $python: install the package's extras first" >&2; exit 1; }
        pins="$pins $name==$version"
    done
    rm -rf "$wheels" && mkdir -p "$wheels"
    echo "downloading for CPython 3.12, manylinux x86_64:$pins" >&2
    # shellcheck disable=SC2086
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$wheels" $pins
    local wheel_bytes tree_bytes total
    wheel_bytes=$(find "$wheels" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
        | awk '{s += $1} END {print s + 0}')
    total=$((wheel_bytes + tree_bytes))
    ls -l "$wheels" >&2
    awk -v w="$wheel_bytes" -v t="$tree_bytes" -v l="$WHEEL_LIMIT_BYTES" 'BEGIN {
        printf "wheels %.1f MiB + working tree %.1f MiB = %.1f MiB (limit %d MiB)\n", w / 2^20, t / 2^20, (w + t) / 2^20, l / 2^20 }'
    if [ "$total" -gt "$WHEEL_LIMIT_BYTES" ]; then
        echo "gpu_check.sh: what would travel is over 64 MiB: carry fewer wheels" >&2
        exit 1
    fi
    echo "carry '$wheels' to the GPU machine and run: bash scripts/gpu_check.sh --out \$OUT" >&2
}

install_wheels() {
    # Into a folder put first on PYTHONPATH, not a venv: the GPU machine's python3 is itself a venv
    # (/opt/torch/.venv), and a venv made from it with --system-site-packages would see the base
    # interpreter's packages, not that venv's torch. --no-deps: their needs are the image's packages;
    # the check's environment section records what does not import.
    site=/tmp/tpos-gpu-check-site
    if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
        echo "warning: no wheels in $wheels (run --fetch-wheels here and carry it): using $python as it is" >&2
        return
    fi
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$wheels"/*.whl || echo "warning: installing the carried wheels failed (see pip's message above)" >&2
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
}

case "$mode" in
    fetch) fetch_wheels; exit 0 ;;
    smoke) args=(--cpu-smoke); limit="${limit:-170}" ;;
    gpu) install_wheels; args=(--compute-device cuda); limit="${limit:-450}" ;;
esac
mkdir -p "$out"
log="$out/gpu_check.log"
echo "gpu check ($mode) with $python, limit ${limit} s, output in $out" | tee "$log"
set +e
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore \
    timeout --signal=INT --kill-after=20 "$limit" "$python" scripts/gpu_check.py "${args[@]}" --out "$out" 2>&1 \
    | grep --line-buffered -v -e 'should be kept in float32' -e 'requires torchvision' | tee -a "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -eq 124 ] || [ "$status" -eq 130 ] || [ "$status" -eq 137 ]; then
    echo "gpu_check.sh: the check ran past its ${limit} s limit; $out/gpu_check.json holds the sections it finished" \
        | tee -a "$log" >&2
    exit 1
fi
exit "$status"

#!/usr/bin/env bash
# Create .venv and install tpos-live into it. Usage: scripts/install.sh [EXTRAS], e.g. "test".
# torch is pinned here so pip takes the local CPU wheel where one is provided and the
# normal build elsewhere, instead of resolving a newer multi-GB release on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c "import ensurepip" 2>/dev/null; then
    echo "installing python3-venv (Debian/Ubuntu) ..." >&2
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
target="."; [ -n "$extras" ] && target=".[$extras]"
.venv/bin/python -m pip install -q -e "$target"
echo "installed tpos-live into .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))" >&2

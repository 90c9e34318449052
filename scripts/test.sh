#!/usr/bin/env bash
# Install tpos-live with its test extras into .venv, then run the linter, the import contracts, the test
# suite and the GPU check's CPU smoke run.
# The live-capture tests talk to a real PulseAudio null sink through PortAudio, the app's tests run
# Qt offscreen, and the output window's threaded OpenGL path runs under Xvfb with Mesa: the Debian
# packages for all three are installed first (sudo when not root).
set -euo pipefail
cd "$(dirname "$0")/.."
system_packages="libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins
    libgl1 libegl1 libfontconfig1 libxkbcommon0 libglib2.0-0 libdbus-1-3
    xvfb xauth libgl1-mesa-dri libglx-mesa0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
    libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1"
missing=$(for p in $system_packages; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
    echo "installing Debian packages for the audio and app tests: $missing" >&2
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
scripts/install.sh test
.venv/bin/ruff check .
.venv/bin/lint-imports  # the layers, Qt only in the app, no import cycles (pyproject.toml [tool.importlinter])
.venv/bin/python -m pytest -q "$@"
# The GPU check's sections on the CPU (tiny stack; under 3 minutes): they keep working where no GPU is.
bash scripts/gpu_check.sh --cpu-smoke --python .venv/bin/python --out "${TMPDIR:-/tmp}/tpos-gpu-check-smoke"

#!/usr/bin/env bash
# Install tpos-live with its test extras into .venv, then run the linter and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"

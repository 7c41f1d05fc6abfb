#!/usr/bin/env bash
# tools/test.sh - the test command: install what is missing, build everything
# (the CUDA code too when nvcc is present), run every CPU test.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh build data
JOBS=${JOBS:-$(nproc)}
make -j"$JOBS"
make test

#!/usr/bin/env bash
# tools/test.sh - the test command: install what is missing, build everything
# (the CUDA code too when nvcc is present, MPI and NCCL code when found), run
# every CPU test, the multi-process MPI test included.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh build data mpi
JOBS=${JOBS:-$(nproc)}
make -j"$JOBS"
make test

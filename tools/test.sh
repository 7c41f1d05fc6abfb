#!/usr/bin/env bash
# tools/test.sh - the test command: install what is missing, build everything
# (the CUDA code too when nvcc is present, MPI and NCCL code when found), run
# every CPU test, the multi-process MPI test and the examples' test included.
# Then build the engine once more without CUDA, MPI and NCCL and link the C
# example against it with nothing but -fopenmp -lpthread -lm, statically too:
# the embeddable library must need nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh build data mpi
JOBS=${JOBS:-$(nproc)}
make -j"$JOBS"
make test
make -j"$JOBS" CUDA=0 MPI=0 NCCL=0 examples
echo "tools/test.sh: the C example links with libnala.a, -fopenmp -lpthread -lm alone (build/release-nocuda/examples)"

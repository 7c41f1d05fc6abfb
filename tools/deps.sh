#!/usr/bin/env bash
# tools/deps.sh - install the Debian/Ubuntu packages nala needs, when missing.
#
#   tools/deps.sh build        compiler, make, Catch2, stb, zlib, OpenBLAS (benchmarks only)
#   tools/deps.sh data         the Fashion-MNIST dataset package
#   tools/deps.sh mpi          Open MPI (data-parallel training and its multi-process test)
#   tools/deps.sh fuzz         clang with its libFuzzer and sanitizer runtimes
#
# Runs apt-get as root, or through sudo; otherwise prints the exact command
# to run and exits non-zero. Nothing is installed that is already present.
set -euo pipefail

want=()
need_pkg() {  # need_pkg PACKAGE TEST-COMMAND...
  local pkg=$1; shift
  if ! "$@" >/dev/null 2>&1; then want+=("$pkg"); fi
}

for what in "$@"; do
  case "$what" in
    build)
      need_pkg g++ command -v g++
      need_pkg make command -v make
      need_pkg catch2 test -f /usr/include/catch2/catch.hpp
      need_pkg libstb-dev test -f /usr/include/stb/stb_image.h
      need_pkg zlib1g-dev test -f /usr/include/zlib.h
      need_pkg libopenblas-dev sh -c 'ls /usr/include/*/cblas.h /usr/include/cblas.h 2>/dev/null | grep -q .'
      ;;
    fuzz)
      need_pkg clang command -v clang++
      need_pkg libclang-rt-dev sh -c 'ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null | grep -q .'
      ;;
    mpi)
      need_pkg libopenmpi-dev command -v mpicxx
      need_pkg openmpi-bin command -v mpirun
      ;;
    data)
      need_pkg dataset-fashion-mnist test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
      ;;
    *) echo "usage: tools/deps.sh build|data|mpi|fuzz ..." >&2; exit 2 ;;
  esac
done

[ ${#want[@]} -eq 0 ] && exit 0
echo "nala: installing missing packages: ${want[*]}"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo"
else
  echo "nala: cannot install as this user. Run:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${want[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${want[@]}"

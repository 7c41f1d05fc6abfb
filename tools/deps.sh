#!/usr/bin/env bash
# tools/deps.sh - install the Debian/Ubuntu packages nala needs, when missing.
#
#   tools/deps.sh build        compiler, make, Catch2, stb, zlib, rsvg-convert (the plot render test)
#   tools/deps.sh data         the Fashion-MNIST dataset package
#   tools/deps.sh mpi          Open MPI (data-parallel training and its multi-process test)
#   tools/deps.sh fuzz         clang with its libFuzzer and sanitizer runtimes
#   tools/deps.sh bench        OpenBLAS, the yardstick of bench/bench_gemm (optional)
#   tools/deps.sh --missing GROUP...   only print the packages that are missing
#
# The packages and the test for each are in tools/deps.list, which the
# Makefile reads too. Runs apt-get as root, or through sudo; otherwise prints
# the exact command to run and exits non-zero. Nothing is installed that is
# already present.
set -euo pipefail
cd "$(dirname "$0")"

present() {  # present TEST: the test of one deps.list line
  case "$1" in
    cmd:*) command -v "${1#cmd:}" >/dev/null 2>&1 ;;
    *) compgen -G "$1" >/dev/null ;;
  esac
}

only_list=0
if [ "${1:-}" = --missing ]; then only_list=1; shift; fi
[ $# -gt 0 ] || { echo "usage: tools/deps.sh [--missing] build|data|mpi|fuzz|bench ..." >&2; exit 2; }
want=()
for what in "$@"; do
  grep -qE "^$what[[:space:]]" deps.list || { echo "tools/deps.sh: unknown group '$what' (see tools/deps.list)" >&2; exit 2; }
  while read -r group pkg test; do
    [ "$group" = "$what" ] || continue
    present "$test" || want+=("$pkg")
  done < <(grep -vE '^[[:space:]]*(#|$)' deps.list)
done

if [ $only_list -eq 1 ]; then
  [ ${#want[@]} -eq 0 ] || echo "${want[*]}"
  exit 0
fi
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
# The tests again: a package that installed but does not provide its file is a bad deps.list line.
for what in "$@"; do
  while read -r group pkg test; do
    [ "$group" = "$what" ] || continue
    present "$test" || { echo "nala: $pkg is installed but $test is still missing" >&2; exit 1; }
  done < <(grep -vE '^[[:space:]]*(#|$)' deps.list)
done

#!/usr/bin/env bash
# Checks the XNOR-popcount kernels with the standalone driver
# torch_geometric_binary/deploy/csrc/test_xnor_kernels.cpp (no torch), which
# compares every instruction set of a build against a direct reference, bit
# for bit (dots, threshold bits, OR pooling):
#   1. natively (g++, or $CXX): the x86 kernels (AVX-512 VPOPCNTDQ, AVX2,
#      POPCNT where the CPU has them) and the portable ones;
#   2. for AArch64 (the Cortex-A72 of a Raspberry Pi 4, BiPointNet's
#      deployment target): cross-compiled with aarch64-linux-gnu-g++
#      -O2 -march=armv8-a and run under qemu-aarch64 (user-mode emulation),
#      which checks the NEON kernels' results. Emulation says nothing about
#      their speed.
# Installs nothing. Without the cross tools (Debian/Ubuntu:
#   apt-get install -y g++-aarch64-linux-gnu qemu-user)
# step 2 is skipped with a message and the script still exits 0; without a
# native compiler step 1 is skipped likewise. Exits non-zero on a build
# failure or a mismatch.
#
# Usage: bash scripts/check_arm.sh [--native-only|--arm-only] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."

native=1
arm=1
quick=()
for arg in "$@"; do
  case "$arg" in
    --native-only) arm=0 ;;
    --arm-only) native=0 ;;
    --quick) quick=(--quick) ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "check_arm.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done

src=torch_geometric_binary/deploy/csrc/test_xnor_kernels.cpp
flags=(-O2 -std=c++17 -Wall -Wextra)
work=$(mktemp -d "${TMPDIR:-/tmp}/check_arm.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ "$native" = 1 ]; then
  cxx="${CXX:-g++}"
  if command -v "$cxx" >/dev/null 2>&1; then
    echo "== native ($(uname -m)): $cxx ${flags[*]}"
    "$cxx" "${flags[@]}" -o "$work/test_native" "$src"
    "$work/test_native" "${quick[@]}"
  else
    echo "== native: SKIPPED ('$cxx' not found)"
  fi
fi

if [ "$arm" = 1 ]; then
  cross="${CROSS_CXX:-aarch64-linux-gnu-g++}"
  qemu="${QEMU_AARCH64:-qemu-aarch64}"
  missing=()
  command -v "$cross" >/dev/null 2>&1 || missing+=("$cross")
  command -v "$qemu" >/dev/null 2>&1 || missing+=("$qemu")
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== aarch64: SKIPPED (not installed: ${missing[*]}; on Debian/Ubuntu:" \
         "apt-get install -y g++-aarch64-linux-gnu qemu-user)"
  else
    aflags=("${flags[@]}" -march=armv8-a)
    echo "== aarch64 under $qemu: $cross ${aflags[*]} -static"
    # Static if the cross libc has static libraries, else dynamic with the
    # cross sysroot as the emulated loader's prefix.
    if "$cross" "${aflags[@]}" -static -o "$work/test_arm" "$src" \
        2>"$work/static.log"; then
      "$qemu" "$work/test_arm" "${quick[@]}"
    else
      sysroot="${QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}"
      echo "   (static link failed; dynamic, QEMU_LD_PREFIX=$sysroot)"
      "$cross" "${aflags[@]}" -o "$work/test_arm" "$src"
      QEMU_LD_PREFIX="$sysroot" "$qemu" -L "$sysroot" "$work/test_arm" \
        "${quick[@]}"
    fi
  fi
fi
echo "check_arm.sh: done"

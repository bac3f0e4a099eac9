#!/bin/sh
# The ARM NEON path, run: the kernel, golden and batch tests cross-built for AArch64 and run under
# qemu-aarch64 on the neon and the scalar path: test_kernels (both paths) under ASan + UBSan;
# test_model with a 2-thread pool starting on neon, and single-threaded starting on scalar (its
# golden runs go over both paths each time); test_batch on neon (the multi-position GEMV). Counts
# its own checks and theirs into one "N passed, N failed, N skipped" line. Without
# aarch64-linux-gnu-gcc or qemu-aarch64 (Debian: gcc-aarch64-linux-gnu libc6-dev-arm64-cross
# qemu-user) it is one skip. GCC's ASan does not see NEON loads and stores (intrinsics), so
# test_kernels also checks that nothing past its outputs is written.
pass=0; fail=0; skip=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
CC=aarch64-linux-gnu-gcc
for t in $CC qemu-aarch64; do
  if ! command -v $t >/dev/null 2>&1; then
    echo "skip - NEON tests under qemu: $t not found (Debian: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"
    echo "0 passed, 0 failed, 1 skipped"; exit 0
  fi
done
d=build/aarch64; rm -rf $d; mkdir -p $d
WARN="-std=c99 -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes"
SAN="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
# the target's shared libraries (libasan, libc) for qemu: the directory above the cross libc's lib/
QEMU_LD_PREFIX=$(dirname "$(dirname "$($CC -print-file-name=libc.so.6)")"); export QEMU_LD_PREFIX

# build: name, then flags; run: program, then the kernel path it starts on (CODI_KERNEL). Each
# leaves its output and exit status in $d for report().
build() { n=$1; shift; $CC $WARN "$@" -o $d/$n -lm > $d/$n.log 2>&1; echo $? > $d/$n.rc; }
run() {
  [ -x $d/$1 ] || return
  CODI_KERNEL=$2 ASAN_OPTIONS=detect_leaks=0 qemu-aarch64 $d/$1 > $d/$1.$2.out 2>&1; echo $? > $d/$1.$2.rc
}
clang_check() {   # clang's arm_neon.h, and the header as C++ (C headers only: no AArch64 libstdc++ here)
  { clang --target=aarch64-linux-gnu $WARN -O2 -c -o $d/clang.o tests/test_kernels.c &&
    clang++ --target=aarch64-linux-gnu -nostdinc++ -std=c++11 -Wall -Wextra -fsyntax-only tests/test_cpp.cpp; } > $d/clang.log 2>&1
  echo $? > $d/clang.rc
}
{ build test_kernels_san $SAN tests/test_kernels.c -pthread; run test_kernels_san neon
  if command -v clang >/dev/null 2>&1; then clang_check; fi
  build test_batch -O2 -static tests/test_batch.c; run test_batch neon; } &
{ build test_model -O2 -static tests/test_model.c; run test_model scalar
  build test_threads -O2 -static -DCODI_THREADS -DTEST_THREADS=2 -pthread tests/test_model.c; } &
wait                  # two chains on two cores; then the 2-thread run alone
run test_threads neon

for n in test_kernels_san test_model test_threads test_batch; do
  if [ "$(cat $d/$n.rc)" -ne 0 ]; then bad "aarch64 build of $n"; cat $d/$n.log
  elif [ -s $d/$n.log ]; then bad "aarch64 build of $n has warnings"; cat $d/$n.log
  else ok "aarch64 build of $n: no warnings (gcc $($CC -dumpversion))"; fi
done
if [ -f $d/clang.rc ]; then
  if [ "$(cat $d/clang.rc)" -eq 0 ] && [ ! -s $d/clang.log ]; then ok "aarch64 clang builds (C99 and C++11): no warnings"
  else bad "aarch64 clang builds (C99 and C++11)"; cat $d/clang.log; fi
fi
# report: a run's lines (named "aarch64 ...") and its counts, added to this script's
report() {
  p=$1; path=$2; out=$d/$p.$path.out
  [ -f $d/$p.$path.rc ] || { bad "aarch64 $p ($path) did not run"; return; }
  echo "# qemu-aarch64 $p, CODI_KERNEL=$path"
  grep -v -E '^[0-9]+ passed, [0-9]+ failed' $out | sed -E 's/^(not ok|ok|skip) - /\1 - aarch64 /'
  rc=$(cat $d/$p.$path.rc); line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' $out | tail -n 1)
  if [ -z "$line" ]; then bad "aarch64 $p ($path) ended without a summary (exit $rc)"; return; fi
  set -- $(echo "$line" | sed -E 's/^([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?.*/\1 \2 \4/')
  pass=$((pass + $1)); fail=$((fail + $2)); skip=$((skip + ${3:-0}))
  if [ "$rc" -ne 0 ] && [ "$2" -eq 0 ]; then bad "aarch64 $p ($path) exited $rc"; fi
}
report test_kernels_san neon
if grep -q '^# paths this CPU runs: scalar neon' $d/test_kernels_san.neon.out 2>/dev/null; then ok "aarch64: the neon path is built in and runs"
else bad "aarch64: the neon path is built in and runs"; fi
report test_threads neon
report test_model scalar
report test_batch neon
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]

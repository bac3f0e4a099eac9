#!/bin/sh
# The build switches (codi_lens.h's manual, CONFIGURATION MACROS): tests/switch_probe.c compiled under
# CODI_NO_SIMD, its old name CODI_SCALAR, CODI_NO_TORCH, CODI_NO_RESEARCH and all three, each with zero
# warnings, run on codi-nano (exported to safetensors) with the same answer ids as the full build and
# logits within 1e-3; CODI_NO_TORCH refuses a torch checkpoint naming the switch; CODI_NO_RESEARCH
# leaves the research API undeclared. -O0 keeps the compiles short; the README's table has -O2 figures
# (tools/switch_sizes.sh). Run from the repository root.
CC=${CC:-cc}
WARN="-std=c99 -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes"
dir=build/switches
mkdir -p $dir
pass=0; fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }

build() {   # name, flags: compile, 0 warnings
  if $CC $WARN -O0 $2 -o $dir/$1 tests/switch_probe.c -lm > $dir/$1.log 2>&1 && [ ! -s $dir/$1.log ]; then
    ok "$1 (${2:-no switch}) builds without a warning ($(wc -c < $dir/$1 | tr -d ' ') bytes at -O0)"
  else
    bad "$1 (${2:-no switch}) build: $(head -c 600 $dir/$1.log)"; return 1
  fi
}

build full "" || { echo "$pass passed, $fail failed, 0 skipped"; exit 1; }
$dir/full --export models/codi-nano/codi_nano.bin $dir/nano.safetensors > $dir/export.out 2>&1 || bad "export codi-nano: $(cat $dir/export.out)"
$dir/full $dir/nano.safetensors $dir/full.f32 > $dir/full.out 2>&1 || bad "full build run: $(cat $dir/full.out)"
$dir/full models/codi-nano/codi_nano.bin $dir/bin.f32 $dir/full.f32 > $dir/bin.out 2>&1 &&
  [ "$(grep answer $dir/bin.out)" = "$(grep answer $dir/full.out)" ] &&
  ok "full build: the .bin and its safetensors export give the same answer ($(grep diff $dir/bin.out))" ||
  bad "full build: .bin vs export: $(cat $dir/bin.out)"

for cfg in "no_simd -DCODI_NO_SIMD" "scalar -DCODI_SCALAR" "no_torch -DCODI_NO_TORCH" "no_research -DCODI_NO_RESEARCH" \
           "minimal -DCODI_NO_SIMD -DCODI_NO_TORCH -DCODI_NO_RESEARCH"; do
  name=${cfg%% *}; flags=${cfg#* }
  build $name "$flags" || continue
  if $dir/$name $dir/nano.safetensors $dir/$name.f32 $dir/full.f32 > $dir/$name.out 2>&1 &&
     [ "$(grep answer $dir/$name.out)" = "$(grep answer $dir/full.out)" ]; then
    ok "$name: the full build's answer, logits within 1e-3 ($(grep kernel $dir/$name.out); $(grep diff $dir/$name.out))"
  else
    bad "$name: $(cat $dir/$name.out) (full: $(cat $dir/full.out))"
  fi
  case "$flags" in *NO_SIMD*|*SCALAR*)
    grep -q "kernel scalar" $dir/$name.out && ok "$name: only the scalar kernels" || bad "$name: kernel $(grep kernel $dir/$name.out)" ;; esac
done

grep -q "^lens save_dir: ok" $dir/full.out && grep -q "^lens save_dir: build/switches/params.pt: a PyTorch file, but this library was built with CODI_NO_TORCH" $dir/no_torch.out &&
  ok "CODI_NO_TORCH: writing a tuned lens's params.pt fails naming the switch (the full build writes it)" ||
  bad "tuned lens params.pt: full: $(grep lens $dir/full.out); no_torch: $(grep lens $dir/no_torch.out)"
out=$($dir/no_torch models/codi-nano/codi_nano.bin $dir/x.f32 2>&1)
[ $? -ne 0 ] && echo "$out" | grep -q "codi_nano.bin: a PyTorch checkpoint, but this library was built with CODI_NO_TORCH" &&
  ok "CODI_NO_TORCH refuses a torch checkpoint ($out)" || bad "CODI_NO_TORCH on a .bin: $out"

printf '#define CODI_LENS_IMPLEMENTATION\n#include "codi_lens.h"\nint main(void) { return codi_tuned_lens_new(0) != 0; }\n' > $dir/research_use.c
if $CC $WARN -O0 -Werror=implicit-function-declaration -DCODI_NO_RESEARCH -I. -o $dir/research_use $dir/research_use.c -lm > $dir/research_use.log 2>&1; then
  bad "CODI_NO_RESEARCH still declares codi_tuned_lens_new"
elif grep -q "codi_tuned_lens_new" $dir/research_use.log; then
  ok "CODI_NO_RESEARCH: the research API is not declared (codi_tuned_lens_new is an error)"
else
  bad "CODI_NO_RESEARCH: $(head -c 400 $dir/research_use.log)"
fi
$CC $WARN -O0 -I. -o $dir/research_use $dir/research_use.c -lm > $dir/research_use.log 2>&1 &&
  ok "without it the same program builds" || bad "research_use without the switch: $(head -c 400 $dir/research_use.log)"
echo "$pass passed, $fail failed, 0 skipped"
[ $fail -eq 0 ]

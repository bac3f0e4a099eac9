# codi_lens: `make` builds build/codi and the tools, `make demo` runs the demo,
# `make test` runs every test (also under AddressSanitizer + UBSan), `make bench` benchmarks.
CC      ?= cc
CFLAGS  ?= -O2 -march=native
WARN    = -std=c99 -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes
SAN     = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
THREADS = -DCODI_THREADS -pthread
HDR     = codi_lens.h

all: build/codi build/random_codi

build:
	mkdir -p build

build/codi: tools/codi.c $(HDR) | build
	$(CC) $(WARN) $(CFLAGS) $(THREADS) -o $@ tools/codi.c -lm

build/random_codi: tools/random_codi.c | build
	$(CC) $(WARN) -O2 -o $@ tools/random_codi.c -lm

# Test programs: each prints ok/not ok lines and "N passed, N failed, N skipped".
TESTS = test_model test_steering test_errors test_threads
build/%_san: tests/%.c $(HDR) tests/test_util.h | build
	$(CC) $(WARN) $(SAN) -o $@ $< -lm -pthread

build/test_threads_san: tests/test_model.c $(HDR) tests/test_util.h | build
	$(CC) $(WARN) $(SAN) $(THREADS) -DTEST_THREADS=2 -o $@ tests/test_model.c -lm

build/test_cpp: tests/test_cpp.cpp $(HDR) | build
	c++ -std=c++11 -Wall -Wextra -O1 -o $@ tests/test_cpp.cpp -lm

test: $(TESTS:%=build/%_san) build/codi build/test_cpp build/check_trace_san
	@sh tests/run_all.sh $(TESTS:%=build/%_san) build/test_cpp tests/test_cli.sh

demo: build/codi
	sh tools/demo.sh

bench: build/codi build/random_codi
	sh tools/bench.sh

clean:
	rm -rf build

.PHONY: all test demo bench clean

# sqserve - build, set-up, tests and benchmarks.
#
#   make run        set up what is missing, build, serve the default model on :8080
#   make test       set up, build, C unit tests (cmocka), a bounded fuzz run, pytest
#   make test-slow-machine  timing-sensitive API tests on one core shared with a busy loop
#   make sanitize   ASan/UBSan build in build/sanitize/
#   make fuzz       libFuzzer targets (FUZZ_SECONDS=N each) -> build/fuzz/
#   make bench-cpu  prompt/generation tokens/s -> docs/perf.md
#   make bench-serve  HTTP load at concurrency 1/4/16/64 -> docs/perf.md
#   make bench-grammar  constrained vs unconstrained decode step (JSON Schema grammar)
#   make soak       64 streaming clients x 5 min on the GGUF and the .sqm -> docs/soak.md
#   make accuracy   SQ-format vs baselines accuracy grid -> docs/accuracy.md
#   make accuracy-compare  issue 15's GPTQ / SmoothQuant / static-mask rows -> docs/accuracy.md
#   make fixtures   regenerate golden fixtures with the independent reference
#   make image-test build deploy/Dockerfile.cpu with buildah, run it with podman, check it

CC      ?= gcc
PKGS    := libmicrohttpd jansson libuv libpcre2-8 libxxhash openblas lapacke
BUILD   ?= build
OPT     ?= -O2
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-psabi
CFLAGS  := -std=c11 $(OPT) -g $(WARN) -D_GNU_SOURCE -pthread -MMD -MP \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(EXTRA_CFLAGS)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -lpthread
LDFLAGS := -pthread $(EXTRA_LDFLAGS)

# ISA-specific kernels: compiled with their own flags, chosen at run time.
ISA_avx2   := -mavx2 -mfma -mf16c -ffp-contract=fast
ISA_avx512 := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma -mf16c \
              -ffp-contract=fast -mprefer-vector-width=512
# Attention's FP32 kernels give the same bits on every ISA (k_attn.inc says
# why): no FMA contraction, whatever the ISA flags before it say.
FP_SAME := -ffp-contract=off

MODEL   := models/SmolLM2-135M-Instruct.Q4_1.gguf
VENV    := .venv
PY      := $(VENV)/bin/python
THREADS ?= $(shell nproc)
# parallel compile jobs of make run / make test
JOBS    ?= $(shell nproc)

LIB_SRC := $(wildcard engine/*/*.c) $(wildcard kernels/cpu/*.c) \
           $(filter-out server/main.c,$(wildcard server/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/openapi.o $(BUILD)/obj/gen/version.o
# `sqserve --version`, /health, /version: git describe at build time; a tree
# without git history (a source tarball, a Docker build context) says so;
# make SQSERVE_VERSION=... (or the Dockerfiles' build argument) sets it
SQSERVE_VERSION := $(or $(SQSERVE_VERSION),$(shell git describe --tags --always --dirty 2>/dev/null),0.1.0-nogit)
MAIN_OBJ:= $(BUILD)/obj/server/main.o
UNIT_SRC:= $(wildcard tests/unit/test_*.c)
UNIT_BIN:= $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# helpers the pytest suites drive (tests/tools/*.c), not test suites themselves
TOOL_SRC:= $(wildcard tests/tools/*.c)
TOOL_BIN:= $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)

# ---- CUDA: on when a GPU is present, or asked for with CUDA=1 --------------
# kernels/cuda/*.cu go into the library for sm_90a (wgmma, Hopper) plus
# compute_90 PTX; cudart is linked statically so the binary starts on
# machines without a GPU (--device cuda then fails with a clear message).
# By default the kernels are built only where `nvidia-smi -L` lists a GPU
# and nvcc is installed: an nvcc alone (no GPU to run on) is not a reason
# to spend minutes compiling them. CUDA=1 builds them anyway (the CUDA
# image, a build host without a GPU); CUDA=0 leaves them out. `make all`
# prints one line saying which and why.
NVCC    ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc))
ifeq ($(origin CUDA),undefined)
HAVE_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
CUDA     := $(if $(and $(HAVE_GPU),$(NVCC)),1,0)
CUDA_WHY := $(if $(HAVE_GPU),$(if $(NVCC),on: nvidia-smi -L lists a GPU,off: a GPU is present but nvcc is missing),off: no GPU (nvidia-smi -L lists none); CUDA=1 builds the kernels anyway)
else
CUDA_WHY := $(if $(filter 1,$(CUDA)),on,off): CUDA=$(CUDA) was asked for
endif
CU_ARCH := -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_90,code=compute_90
NVFLAGS := -O3 -std=c++17 -g -lineinfo $(CU_ARCH) -Werror all-warnings -MMD -MP \
           -Xcompiler -Wall,-Wextra,-Wno-unused-parameter $(EXTRA_NVFLAGS)
GPU_BIN :=
ifeq ($(CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CFLAGS  += -DSQ_CUDA
CU_LIBS := -L$(CUDA_HOME)/lib64 -lcublas -lcudart_static -ldl -lrt -lstdc++
LDLIBS  += $(CU_LIBS)
CU_SRC  := $(wildcard kernels/cuda/*.cu)
LIB_OBJ += $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
GPU_SRC := $(wildcard tests/gpu/*.c tests/gpu/*.cu)
GPU_BIN := $(patsubst tests/gpu/%,$(BUILD)/gpu/%,$(basename $(GPU_SRC)))
endif
# CUTLASS's headers (kc_i8_gemm.cu), fetched from PyPI on first use. Its
# device asserts are calls that serialize the wgmma pipeline: NDEBUG there.
# The version is the fetch script's; its stamp is a prerequisite, so a new
# version rebuilds the kernel.
CUTLASS_DIR := .deps/cutlass-$(shell sed -n 's/^VERSION=//p' kernels/cuda/fetch-cutlass.sh)
$(CUTLASS_DIR)/.fetched:
	@kernels/cuda/fetch-cutlass.sh
$(BUILD)/obj/kernels/cuda/kc_i8_gemm.o: NVFLAGS += -isystem $(CUTLASS_DIR)/include -DNDEBUG
$(BUILD)/obj/kernels/cuda/kc_i8_gemm.o: $(CUTLASS_DIR)/.fetched
# objects built with and without CUDA differ (-DSQ_CUDA): rebuild on a switch
BUILD_CONF := $(BUILD)/.config
$(shell mkdir -p $(BUILD); echo "CUDA=$(CUDA)" | cmp -s - $(BUILD_CONF) 2>/dev/null || echo "CUDA=$(CUDA)" > $(BUILD_CONF))

.PHONY: all deps deps-run model run image-test test unit pytest sanitize fuzz fuzz-bins fuzz-test-prep test-slow-machine gpu-bins bench-cpu bench-serve bench-grammar soak accuracy accuracy-compare fixtures clean

all: $(BUILD)/sqserve
	@echo "build: CUDA kernels $(CUDA_WHY)"

$(BUILD)/sqserve: $(MAIN_OBJ) $(BUILD)/libsqserve.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libsqserve.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(LIB_OBJ) $(MAIN_OBJ): $(BUILD_CONF)

$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c -o $@ $<

# GPU tests and benchmarks (tests/gpu/run.sh runs them on a GPU machine)
gpu-bins: $(GPU_BIN)

$(BUILD)/gpu/%: tests/gpu/%.c $(BUILD)/libsqserve.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libsqserve.a $(LDLIBS) -lcublasLt

$(BUILD)/gpu/%: tests/gpu/%.cu $(BUILD)/libsqserve.a
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -o $@ $< $(BUILD)/libsqserve.a $(LDLIBS) -lcublasLt

$(BUILD)/obj/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_avx2) $(if $(findstring k_attn_,$@),$(FP_SAME)) -c -o $@ $<

$(BUILD)/obj/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ISA_avx512) $(if $(findstring k_attn_,$@),$(FP_SAME)) -c -o $@ $<

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(if $(findstring k_attn_,$@),$(FP_SAME)) -c -o $@ $<

# /openapi.json is served from the binary: embed server/openapi.json as bytes
$(BUILD)/gen/openapi.c: server/openapi.json
	@mkdir -p $(dir $@)
	{ echo 'const char OPENAPI_JSON[] = {'; od -An -v -tx1 $< | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '0};'; } > $@

$(BUILD)/obj/gen/openapi.o: $(BUILD)/gen/openapi.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# rewritten only when the version changes, so a build with nothing new relinks nothing
$(BUILD)/gen/version.c: FORCE
	@mkdir -p $(dir $@)
	@printf 'const char SQSERVE_VERSION[] = "%s";\n' '$(subst ','',$(SQSERVE_VERSION))' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

$(BUILD)/obj/gen/version.o: $(BUILD)/gen/version.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

FORCE:

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libsqserve.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libsqserve.a $(LDLIBS) -lcmocka

$(BUILD)/tools/%: tests/tools/%.c $(BUILD)/libsqserve.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libsqserve.a $(LDLIBS)

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(GPU_BIN:=.d) $(UNIT_BIN:=.d) $(TOOL_BIN:=.d)

# ---- set-up ---------------------------------------------------------------
# run: the build tools and libraries; deps (test and the other targets):
# also the test tools, with the Python ones in .venv
deps:
	@deploy/install-deps.sh test

deps-run:
	@deploy/install-deps.sh run

model: $(MODEL)
$(MODEL):
	@models/fetch-model.sh

# ---- main job -------------------------------------------------------------
run: deps-run model
	@$(MAKE) --no-print-directory -j$(JOBS) all
	$(BUILD)/sqserve serve -m $(MODEL) --host 127.0.0.1 --port 8080

# ---- tests ----------------------------------------------------------------
test: deps model
	@$(MAKE) --no-print-directory -j$(JOBS) all unit-bins gpu-bins
	@$(MAKE) --no-print-directory -j$(JOBS) sanitize
	@$(MAKE) --no-print-directory fuzz-test-prep
	@FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_TARGETS="$(FUZZ_TARGETS)" tests/run-tests.sh $(BUILD)

unit-bins: $(UNIT_BIN) $(TOOL_BIN)

# the timing-sensitive API suites pinned to one core with a busy loop on it
# (tests/slow-machine.sh; docs/testing.md): no test may depend on speed
test-slow-machine: deps model
	@$(MAKE) --no-print-directory all
	@tests/slow-machine.sh $(BUILD)

SAN_FLAGS := BUILD=build/sanitize OPT=-O1 CUDA=0 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined"

sanitize:
	@$(MAKE) --no-print-directory $(SAN_FLAGS) build/sanitize/sqserve unit-bins

# The CPU image built and run (deploy/image-test.sh says how); exit 77 is
# "cannot run here" (no root, buildah, podman or network): a skip, said so.
image-test:
	@deploy/image-test.sh; rc=$$?; [ $$rc -ne 77 ] || rc=0; exit $$rc

# ---- fuzzing (libFuzzer: clang from Debian) --------------------------------
# tests/fuzz/fuzz_*.c against build/fuzz/libsqserve.a, everything built with
# -fsanitize=fuzzer-no-link,address,undefined except k_ops.c and k_cpu.c (their run-time
# ISA probes use a __builtin_cpu_supports feature clang 14 does not know:
# built by gcc, uninstrumented). `make fuzz FUZZ_SECONDS=N` runs each
# target N seconds on its seed corpus (the hand-written seeds committed, the
# model files written by tests/fuzz/make_seeds.py) and prints the
# executions and coverage; crashes land in build/fuzz/crashes/. The
# regression inputs (built by tests/fuzz/regressions.py) run in `make test`.
# `make test` also runs each target for FUZZ_RUNS executions (a count, not
# a time, with a fixed seed: a slow machine runs the same inputs) when
# clang can build libFuzzer targets (tests/fuzz/have-libfuzzer.sh), and
# says it skipped them otherwise.
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?= 5000
FUZZ_TARGETS := gguf sqm tok chat request grammar
FUZZ_BINS := $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)
FUZZ_MAKE := BUILD=build/fuzz FUZZ=1 OPT=-O1 CUDA=0 WARN=-Wall \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  EXTRA_LDFLAGS="-fsanitize=fuzzer,address,undefined"
ifeq ($(FUZZ),1)
CC := clang
$(BUILD)/obj/kernels/cpu/k_ops.o: CC := gcc
$(BUILD)/obj/kernels/cpu/k_ops.o: CFLAGS := $(filter-out -fsanitize% -fno-sanitize%,$(CFLAGS))
$(BUILD)/obj/kernels/cpu/k_cpu.o: CC := gcc
$(BUILD)/obj/kernels/cpu/k_cpu.o: CFLAGS := $(filter-out -fsanitize% -fno-sanitize%,$(CFLAGS))
endif

fuzz-bins:
	@$(MAKE) --no-print-directory $(FUZZ_MAKE) $(FUZZ_BINS)

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(BUILD)/libsqserve.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libsqserve.a $(LDLIBS)

fuzz-test-prep:
	@if why=$$(tests/fuzz/have-libfuzzer.sh); then \
	  $(MAKE) --no-print-directory fuzz-bins && PYTHONPATH=tests $(PY) tests/fuzz/make_seeds.py $(BUILD)/sqserve; \
	else echo "fuzz targets not built: $$why"; fi

fuzz: deps model
	@$(MAKE) --no-print-directory all fuzz-bins
	@PYTHONPATH=tests $(PY) tests/fuzz/make_seeds.py $(BUILD)/sqserve
	@tests/fuzz/run-fuzz.sh build/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# ---- benchmarks and fixtures ----------------------------------------------
bench-cpu: deps model
	@$(MAKE) --no-print-directory all
	@tests/bench/bench-cpu.sh $(BUILD)/sqserve $(MODEL) docs/perf.md

bench-serve: deps model
	@$(MAKE) --no-print-directory all
	@tests/bench/bench-serve.sh $(BUILD)/sqserve $(MODEL) docs/perf.md

# STEPS decode steps, THREADS threads (default: all cores); prints a table
STEPS ?= 256
bench-grammar: deps model
	@$(MAKE) --no-print-directory $(BUILD)/bench/bench_grammar
	@$(BUILD)/bench/bench_grammar $(MODEL) $(STEPS) $(THREADS)

$(BUILD)/bench/%: tests/bench/%.c $(BUILD)/libsqserve.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libsqserve.a $(LDLIBS)

soak: deps model
	@$(MAKE) --no-print-directory all
	@tests/bench/soak.sh $(BUILD)/sqserve $(MODEL) docs/soak.md

accuracy: deps model
	@$(MAKE) --no-print-directory all
	@tests/bench/accuracy.sh $(BUILD)/sqserve $(MODEL) docs/accuracy.md

accuracy-compare: deps model
	@$(MAKE) --no-print-directory all
	@.venv/bin/python tests/bench/quant_compare.py $(BUILD)/sqserve $(MODEL) docs/accuracy.md

fixtures: model
	@tests/reference/make_fixtures.sh $(MODEL)

clean:
	rm -rf build

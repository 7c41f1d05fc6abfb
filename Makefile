# nala - plain make.
#
#   make                 libraries, the nala program, tests and benchmarks (CUDA code too when nvcc is found)
#   make test            build and run the CPU tests
#   make test-cuda       build and run the CUDA tests (needs a GPU)
#   make bench           build the benchmark programs
#   make lab             build the kernel lab (kernels/lab/: one program per op, versions 1..N)
#   make lab-check       run every lab version once at small sizes against its reference (part of make test)
#   make lab-check-cuda  the same for the CUDA lab programs (part of make test-cuda; needs a GPU)
#   make DEBUG=1 ...     -O0 -g, in build/debug
#   make SANITIZE=1 ...  ASan + UBSan, in build/sanitize (-O1, line tables: the reports' file:line)
#   make OMP=0 ...       without OpenMP
#   make CUDA=0 ...      skip CUDA even when nvcc is present; CUDA=1 requires it
#   make CUDA_ARCH=90    GPU architecture (default: read from nvidia-smi, else 90); PTX is embedded too
#   make MPI=0 / NCCL=0  skip MPI / NCCL (data-parallel training) even when found; =1 requires them
#   NCCL_HOME=dir        where nccl.h and libnccl are (default: the CUDA toolkit, then /usr)
#   make ARCH=...        host -march (default native)
#   THIRD_PARTY=dir      extra include dir holding catch2/catch.hpp and stb/stb_image.h
#                        (default: ./third_party_headers, then /usr/include)

# dep_test PACKAGE: the test tools/deps.list gives for a Debian package (a path or glob)
dep_test = $(shell awk '$$2=="$(1)" {print $$3}' tools/deps.list)

CXX      ?= g++
ARCH     ?= native
OMP      ?= 1
DEBUG    ?= 0
SANITIZE ?= 0
THIRD_PARTY ?= third_party_headers

ifeq ($(SANITIZE),1)
  VARIANT := sanitize
  OPTFLAGS := -O1 -g1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDSAN := -fsanitize=address,undefined
else ifeq ($(DEBUG),1)
  VARIANT := debug
  OPTFLAGS := -O0 -g
else
  VARIANT := release
  OPTFLAGS := -O3 -g1 -DNDEBUG
endif

CXXFLAGS := -std=c++17 $(OPTFLAGS) -march=$(ARCH) -Wall -Wextra -Wno-unused-parameter -MMD -MP -I. -fPIC
LDFLAGS  := $(LDSAN)
LDLIBS   := -lpthread

# ---- OpenMP: detected by compiling an empty program with -fopenmp
ifeq ($(OMP),1)
  HAVE_OMP := $(shell echo 'int main(){}' | $(CXX) -fopenmp -x c++ - -o /dev/null 2>/dev/null && echo 1)
  ifeq ($(HAVE_OMP),1)
    CXXFLAGS += -fopenmp
    LDFLAGS  += -fopenmp
  else
    $(warning OpenMP not found: building single-threaded kernels)
  endif
else
  CXXFLAGS += -Wno-unknown-pragmas
endif

# ---- CUDA: nvcc on PATH or in /usr/local/cuda
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifeq ($(CUDA),0)
  USE_CUDA :=
else ifneq ($(NVCC),)
  USE_CUDA := 1
else ifeq ($(CUDA),1)
  $(error CUDA=1 but nvcc was not found; install the CUDA toolkit or put nvcc on PATH)
endif
# A build without CUDA lives apart (build/<variant>-nocuda), so switching
# CUDA=0/1 never mixes objects compiled with and without it.
BUILD := build/$(VARIANT)$(if $(USE_CUDA),,-nocuda)

ifeq ($(USE_CUDA),1)
  CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
  CUDA_ARCH ?= $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
  ifeq ($(CUDA_ARCH),)
    CUDA_ARCH := 90
  endif
  # --default-stream per-thread: kernels launched without a stream go to the
  # thread's default stream, which CUDA graphs can capture (kernels/cuda/graph.cu).
  NVCCFLAGS := -std=c++17 -O3 -I. -Xcompiler -fopenmp,-fPIC --expt-relaxed-constexpr --default-stream per-thread \
               -gencode=arch=compute_$(CUDA_ARCH),code=sm_$(CUDA_ARCH) \
               -gencode=arch=compute_$(CUDA_ARCH),code=compute_$(CUDA_ARCH) -MMD -MP
  ifeq ($(DEBUG),1)
    NVCCFLAGS += -g -G
  endif
  CXXFLAGS += -DNALA_CUDA -I$(CUDA_HOME)/include
  LDLIBS   += -L$(CUDA_HOME)/lib64 -lcudart
endif

# ---- MPI and NCCL: only the optional data-parallel library (distributed/,
# libnala_dist.a) is compiled with their flags, and only the programs that
# use it (nala, the tests, bench_scaling) link them; libnala.a never does.
#
# MPI (optional: data-parallel training under mpirun): Open MPI's mpicxx
# says how to compile and link (Debian: libopenmpi-dev, openmpi-bin). Used
# when Open MPI's own mpicxx and mpi.h (tools/deps.list) are both there.
MPICXX ?= $(shell command -v mpicxx.openmpi 2>/dev/null || command -v mpicxx 2>/dev/null)
MPI_H  := $(wildcard $(call dep_test,libopenmpi-dev))
ifneq ($(MPI),0)
  ifneq ($(and $(MPICXX),$(MPI_H)),)
    MPI_CFLAGS := $(shell $(MPICXX) --showme:compile 2>/dev/null)
    MPI_LIBS   := $(filter-out -lmpi_cxx,$(shell $(MPICXX) --showme:link 2>/dev/null))
  endif
  ifneq ($(MPI_LIBS),)
    USE_MPI := 1
    DIST_CXXFLAGS += -DNALA_MPI $(MPI_CFLAGS)
    DIST_LDLIBS   += $(MPI_LIBS)
  else ifeq ($(MPI),1)
    $(error MPI=1 but mpicxx was not found; apt-get install libopenmpi-dev openmpi-bin)
  endif
endif

# ---- NCCL (optional, with CUDA: the gradient all-reduce between GPUs)
ifeq ($(USE_CUDA),1)
  ifneq ($(NCCL),0)
    NCCL_HOME ?= $(firstword $(foreach d,$(CUDA_HOME) /usr,$(if $(wildcard $(d)/include/nccl.h),$(d))))
    NCCL_LIB  := $(firstword $(wildcard $(foreach l,lib64 lib lib/x86_64-linux-gnu,$(NCCL_HOME)/$(l)/libnccl.so $(NCCL_HOME)/$(l)/libnccl.so.2)))
    ifneq ($(NCCL_LIB),)
      USE_NCCL := 1
      DIST_CXXFLAGS += -DNALA_NCCL -I$(NCCL_HOME)/include
      DIST_LDLIBS   += $(NCCL_LIB) -Xlinker -rpath -Xlinker $(dir $(NCCL_LIB))
    else ifeq ($(NCCL),1)
      $(error NCCL=1 but nccl.h / libnccl were not found; set NCCL_HOME)
    endif
  endif
else ifeq ($(NCCL),1)
  $(error NCCL=1 needs CUDA)
endif

# ---- third-party headers (Debian: catch2, libstb-dev). The system paths come
# from tools/deps.list, the list tools/deps.sh installs from, so the build and
# the installer test the same file.
CATCH_INC := $(firstword $(wildcard $(THIRD_PARTY)/catch2/catch.hpp $(call dep_test,catch2)))
STB_INC   := $(firstword $(wildcard $(THIRD_PARTY)/stb/stb_image.h $(call dep_test,libstb-dev)))
# zlib (tools only: the gzipped IDX files): the system's, or a carried copy in THIRD_PARTY
ZLIB      := $(if $(wildcard $(THIRD_PARTY)/libz.a),$(THIRD_PARTY)/libz.a,-lz)
ZLIB_INC  := $(if $(wildcard $(THIRD_PARTY)/zlib.h),-I$(THIRD_PARTY),)

# ---- sources
CORE_DIRS := tensor autograd kernels/cpu nn models models/train
CORE_SRC  := $(foreach d,$(CORE_DIRS),$(wildcard $(d)/*.cpp))
CUDA_SRC  := $(if $(USE_CUDA),$(wildcard kernels/cuda/*.cu))
TOOL_SRC  := $(filter-out tools/main.cpp,$(wildcard tools/*.cpp))
TEST_SRC  := $(wildcard tests/*.cpp)

CORE_OBJ  := $(CORE_SRC:%.cpp=$(BUILD)/%.o) $(CUDA_SRC:%.cu=$(BUILD)/%.cu.o)
DIST_OBJ  := $(patsubst %.cpp,$(BUILD)/%.o,$(wildcard distributed/*.cpp))
TOOL_OBJ  := $(TOOL_SRC:%.cpp=$(BUILD)/%.o)
TEST_OBJ  := $(TEST_SRC:%.cpp=$(BUILD)/%.o)

LIB   := $(BUILD)/libnala.a
NALA  := $(BUILD)/nala
TESTS := $(BUILD)/nala_tests

.PHONY: all lib shared examples test test-cuda test-slow bench lab lab-check clean info
all: lib shared $(NALA) $(TESTS) bench lab examples info

info:
	@echo "nala: built $(VARIANT) in $(BUILD):" \
	  "openmp=$(if $(filter 1,$(HAVE_OMP)),yes,no)" \
	  "cuda=$(if $(USE_CUDA),yes (sm_$(CUDA_ARCH) + PTX),no)" \
	  "mpi=$(if $(USE_MPI),yes,no)" "nccl=$(if $(USE_NCCL),yes,no)"

# Objects (C++ and CUDA) depend on the flags: switching MPI, NCCL or OpenMP
# on or off, or changing NVCCFLAGS, rebuilds what they change.
FLAGS_STAMP := $(BUILD)/flags.txt
STAMP_TEXT := $(CXXFLAGS) | $(NVCCFLAGS) | $(LDLIBS) | $(DIST_CXXFLAGS) | $(DIST_LDLIBS)
$(shell mkdir -p $(BUILD) && echo '$(STAMP_TEXT)' | cmp -s - $(FLAGS_STAMP) || echo '$(STAMP_TEXT)' > $(FLAGS_STAMP))

lib: $(LIB) $(DIST_LIB)
$(LIB): $(CORE_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

# libnala_dist.a: data-parallel training (process groups, the bucketed
# all-reduce, the launcher), with MPI and NCCL when found.
DIST_LIB := $(BUILD)/libnala_dist.a
$(DIST_LIB): $(DIST_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^
$(BUILD)/distributed/%.o: distributed/%.cpp $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $(DIST_CXXFLAGS) -c $< -o $@

# libnala.so: the same engine as a shared library, for foreign-function use
# (examples/classify.py loads it with ctypes). Objects are built with -fPIC.
SHLIB := $(BUILD)/libnala.so
shared: $(SHLIB)
$(SHLIB): $(CORE_OBJ)
	$(CXX) -shared $^ -o $@ $(LDFLAGS) $(LDLIBS)

# ---- examples: a C program over include/nala/nala_c.h, linked with the
# static library and nothing but the C++ runtime, OpenMP and libm (in a
# build without CUDA, LDLIBS is just -lpthread); embed-static is
# the same program linked statically and stripped (its size is in the README).
EXAMPLES := $(BUILD)/examples/embed $(if $(USE_CUDA),,$(BUILD)/examples/embed-static)
examples: $(EXAMPLES)
$(BUILD)/examples/embed.o: examples/embed.c include/nala/nala_c.h
	@mkdir -p $(@D)
	$(CC) -std=c99 -O2 -Wall -Wextra -pedantic -I. -c $< -o $@
$(BUILD)/examples/embed: $(BUILD)/examples/embed.o $(LIB)
	$(CXX) $^ -o $@ $(LDFLAGS) $(LDLIBS) -lm
$(BUILD)/examples/embed-static: $(BUILD)/examples/embed.o $(LIB)
	$(CXX) -static -s $^ -o $@ $(LDFLAGS) $(LDLIBS) -lm

$(BUILD)/%.o: %.cpp $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $(if $(filter tools/% tests/%,$<),$(ZLIB_INC) $(if $(STB_INC),-I$(dir $(patsubst %/,%,$(dir $(STB_INC))))),) -c $< -o $@

# stb_image (third-party) shifts by out-of-range amounts and overflows int on
# some corrupt JPEGs; see tests/fuzz/fuzz.mk. Its translation unit alone is
# built with -fwrapv (signed overflow wraps: defined, in every build) and,
# under the sanitizers, without UBSan's shift and signed-overflow checks.
STB_FLAGS := -fwrapv
$(BUILD)/tools/stb_impl.o: CXXFLAGS += $(STB_FLAGS)
ifeq ($(SANITIZE),1)
$(BUILD)/tools/stb_impl.o: CXXFLAGS += -fno-sanitize=shift,signed-integer-overflow
endif

$(BUILD)/%.cu.o: %.cu $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

# wgmma (the bf16 GEMM's sm_90 kernel) needs the arch-specific target sm_90a:
# on sm_90 builds the file that uses it is compiled for sm_90a, with
# NALA_SM90A defined (elsewhere the kernel is left out and mma.sync serves).
ifeq ($(CUDA_ARCH),90)
$(BUILD)/kernels/cuda/gemm_bf16.cu.o: NVCCFLAGS := $(subst compute_90,compute_90a,$(subst sm_90,sm_90a,$(NVCCFLAGS))) -DNALA_SM90A
endif

$(NALA): $(BUILD)/tools/main.o $(TOOL_OBJ) $(DIST_LIB) $(LIB)
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS) $(DIST_LDLIBS) $(ZLIB)

$(BUILD)/tests/%.o: tests/%.cpp $(FLAGS_STAMP)
	@mkdir -p $(@D)
	@test -n "$(CATCH_INC)" || { echo "Catch2 v2 not found: apt-get install catch2 (or run tools/test.sh)"; exit 1; }
	$(CXX) $(CXXFLAGS) -I$(dir $(patsubst %/,%,$(dir $(CATCH_INC)))) $(ZLIB_INC) $(if $(STB_INC),-I$(dir $(patsubst %/,%,$(dir $(STB_INC))))) -Itools -c $< -o $@

$(TESTS): $(TEST_OBJ) $(TOOL_OBJ) $(DIST_LIB) $(LIB)
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS) $(DIST_LDLIBS) $(ZLIB)

# Passive OpenMP waiting: the tests run many small kernels, and spinning
# threads hurt when the cores are shared.
# The examples' test ([embed]) runs examples/embed and libnala.so, built here.
test: $(TESTS) $(NALA) lab examples $(SHLIB)
	OMP_WAIT_POLICY=passive $(TESTS) "~[cuda]~[slow]"
	$(lab_check)

test-cuda: $(TESTS) lab-check-cuda
	$(TESTS) "[cuda]"

# The slow tests (SIGKILL and --resume; the parameter counts of every config).
test-slow: $(TESTS) $(NALA)
	OMP_WAIT_POLICY=passive $(TESTS) "[slow]"

# ---- benchmarks. OpenBLAS, bench_gemm's yardstick, is loaded at run time
# (dlopen), never linked: without it the comparison is skipped with a note.
BENCH_SRC := $(wildcard bench/*.cpp)
BENCH_BIN := $(BENCH_SRC:bench/%.cpp=$(BUILD)/bench/%)
bench: $(BENCH_BIN)
$(BUILD)/bench/%: bench/%.cpp $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $< $(LIB) -o $@ $(LDFLAGS) $(LDLIBS) -ldl
$(BUILD)/bench/bench_scaling: bench/bench_scaling.cpp $(DIST_LIB) $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $< $(DIST_LIB) $(LIB) -o $@ $(LDFLAGS) $(LDLIBS) $(DIST_LDLIBS)

include bench/cuda.mk

# ---- the kernel lab (kernels/lab/, walkthrough in docs/kernels.md): one
# program per op, versions 1..N, each checked against its reference. The
# lab's sources are compiled only here (CORE_DIRS does not list kernels/lab):
# they never end up in libnala.a. Each program links lab.o (the harness) and
# the library, whose kernels are the programs' last versions.
LAB_SRC := $(filter-out kernels/lab/lab.cpp,$(wildcard kernels/lab/*.cpp))
LAB_BIN := $(LAB_SRC:kernels/lab/%.cpp=$(BUILD)/lab/%)
LAB_OBJ := $(LAB_SRC:%.cpp=$(BUILD)/%.o) $(BUILD)/kernels/lab/lab.o
.SECONDARY: $(LAB_OBJ)
lab: $(LAB_BIN)
$(BUILD)/lab/%: $(BUILD)/kernels/lab/%.o $(BUILD)/kernels/lab/lab.o $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# Every CPU version of every lab program, once, at its small default size,
# against its reference; fails on the first mismatch. Part of make test.
define lab_check
	@for p in $(LAB_BIN); do \
	  out=$$(OMP_WAIT_POLICY=passive $$p --check 2>&1) || { echo "$$out"; echo "lab-check: $$p failed"; exit 1; }; \
	  echo "lab-check: $$p: $$(echo "$$out" | grep -c ' ok$$') versions match their reference"; \
	done
endef
lab-check: $(LAB_BIN)
	$(lab_check)

# The CUDA lab programs (kernels/lab/<op>_cuda.cu, harness lab_cuda.cuh):
# built by make lab when CUDA is on; lab-check-cuda runs every version of
# each once at its small default size against the CPU reference (part of
# make test-cuda, needs a GPU).
LAB_CUDA_SRC := $(if $(USE_CUDA),$(filter-out kernels/lab/lab_cuda.cu,$(wildcard kernels/lab/*_cuda.cu)))
LAB_CUDA_BIN := $(LAB_CUDA_SRC:kernels/lab/%.cu=$(BUILD)/lab/%)
.SECONDARY: $(LAB_CUDA_SRC:%=$(BUILD)/%.o) $(BUILD)/kernels/lab/lab_cuda.cu.o
lab: $(LAB_CUDA_BIN)
$(BUILD)/lab/%_cuda: $(BUILD)/kernels/lab/%_cuda.cu.o $(BUILD)/kernels/lab/lab_cuda.cu.o $(BUILD)/kernels/lab/lab.o $(LIB)
	@mkdir -p $(@D)
	$(NVCC) $(filter-out -MMD -MP,$(NVCCFLAGS)) $^ -o $@ $(LDFLAGS:%=-Xcompiler %) $(LDLIBS)
.PHONY: lab-check-cuda
lab-check-cuda: $(LAB_CUDA_BIN)
ifeq ($(USE_CUDA),1)
	@for p in $(LAB_CUDA_BIN); do \
	  out=$$($$p --check 2>&1) || { echo "$$out"; echo "lab-check-cuda: $$p failed"; exit 1; }; \
	  echo "lab-check-cuda: $$p: $$(echo "$$out" | grep -c ' ok$$') versions match their reference"; \
	done
else
	@echo "lab-check-cuda: needs CUDA (nvcc was not found, or CUDA=0); build with CUDA on a machine with a GPU"; exit 1
endif

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
-include tests/fuzz/fuzz.mk

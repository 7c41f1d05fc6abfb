# tests/fuzz/fuzz.mk - libFuzzer targets (clang), included by the Makefile.
#
#   make fuzz                  build/fuzz/fuzz_<target> for every target below
#   tools/fuzz.sh [SECONDS]    run each one from its seed corpus (default 60 s each)
#
# Targets (tests/fuzz/fuzz_<target>.cpp; what each does is in fuzz_targets.h):
#   safetensors  parse_safetensors on the raw bytes
#   idx          parse_idx on two in-memory buffers, or load_idx on them as files (gzip path)
#   cifar        parse_cifar10 on one in-memory batch
#   image        decode_image_bytes, then resize and normalise
#   cli          `nala train`'s command line, the input split into argv words
#
# Every source of the library and tools/ is compiled once with coverage,
# ASan and UBSan into build/fuzz/libnala_fuzz.a; a target links only the
# objects it needs from it. Without -fopenmp (the pragmas are ignored): the
# fuzzers run one input at a time anyway, and clang's libomp is not required.
FUZZ_CXX   ?= clang++
FUZZ_BUILD := build/fuzz
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_FLAGS := -std=c++17 -O1 -g -fno-omit-frame-pointer $(FUZZ_SAN) -Wno-unknown-pragmas -I. $(ZLIB_INC) \
              $(if $(STB_INC),-I$(dir $(patsubst %/,%,$(dir $(STB_INC)))))
FUZZ_TARGETS := safetensors idx cifar image cli
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_LIB_SRC := $(CORE_SRC) $(wildcard distributed/*.cpp) $(TOOL_SRC)
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.cpp=$(FUZZ_BUILD)/obj/%.o)

.PHONY: fuzz fuzz-check-compiler
fuzz: fuzz-check-compiler $(FUZZ_BINS)
fuzz-check-compiler:
	@command -v $(FUZZ_CXX) >/dev/null || { echo "make fuzz needs clang (FUZZ_CXX=$(FUZZ_CXX)): apt-get install clang"; exit 1; }

$(FUZZ_BUILD)/obj/%.o: %.cpp
	@mkdir -p $(@D)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

# stb_image's JPEG decoder does integer arithmetic that overflows on some
# corrupt streams: its bit reader shifts by more than 31
# (stbi__grow_buffer_unsafe), and a DC coefficient summed over many blocks
# overflows int when dequantised (stbi__jpeg_decode_block, dc * dequant[0]).
# Both only garble the pixels of an image that is already corrupt. That one
# translation unit is built with -fwrapv (the Makefile's STB_FLAGS: signed
# overflow wraps, defined behaviour, in every build), and UBSan's shift and
# signed-overflow checks are off for it alone; ASan and every other UBSan
# check still cover it, and all of our own code keeps both checks.
$(FUZZ_BUILD)/obj/tools/stb_impl.o: FUZZ_FLAGS += $(STB_FLAGS) -fno-sanitize=shift,signed-integer-overflow

$(FUZZ_BUILD)/libnala_fuzz.a: $(FUZZ_LIB_OBJ)
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.cpp tests/fuzz/fuzz_targets.h $(FUZZ_BUILD)/libnala_fuzz.a
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer $< $(FUZZ_BUILD)/libnala_fuzz.a -o $@ -lpthread $(ZLIB)

# bench/cuda.mk - CUDA benchmark programs; included by the Makefile when CUDA
# is on (it uses NVCC, NVCCFLAGS, BUILD, LIB, LDFLAGS, LDLIBS from there).
ifeq ($(USE_CUDA),1)
CUDA_BENCH_BIN := $(BUILD)/bench/bench_nala_cuda
bench: $(CUDA_BENCH_BIN)
$(BUILD)/bench/bench_nala_cuda: bench/bench_nala_cuda.cu $(LIB)
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) $< $(LIB) -o $@ $(LDFLAGS:%=-Xcompiler %) $(LDLIBS)
endif

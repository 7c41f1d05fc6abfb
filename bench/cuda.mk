# bench/cuda.mk - CUDA benchmark programs; included by the Makefile when CUDA
# is on (it uses NVCC, NVCCFLAGS, BUILD, LIB, LDFLAGS, LDLIBS from there).
# Each rule is self-contained; cuBLAS is linked into bench_gemm_cuda only.
ifeq ($(USE_CUDA),1)

# bench_nala_cuda: the NaLa op forward and forward+backward at the ANCHORS shapes.
bench: $(BUILD)/bench/bench_nala_cuda
$(BUILD)/bench/bench_nala_cuda: bench/bench_nala_cuda.cu $(LIB)
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) $< $(LIB) -o $@ $(LDFLAGS:%=-Xcompiler %) $(LDLIBS)

# bench_long_seq: NaLa and softmax attention at 4K-262K tokens, time and the allocator's peak.
bench: $(BUILD)/bench/bench_long_seq
$(BUILD)/bench/bench_long_seq: bench/bench_long_seq.cu $(LIB)
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) $< $(LIB) -o $@ $(LDFLAGS:%=-Xcompiler %) $(LDLIBS)

# bench_gemm_cuda: cuda::gemm against cuBLAS sgemm (the yardstick).
bench: $(BUILD)/bench/bench_gemm_cuda
$(BUILD)/bench/bench_gemm_cuda: bench/bench_gemm_cuda.cu $(LIB)
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) $< $(LIB) -o $@ $(LDFLAGS:%=-Xcompiler %) $(LDLIBS) -lcublasLt -lcublas

endif

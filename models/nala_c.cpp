// models/nala_c.cpp - the C interface (include/nala/nala_c.h) over the C++ engine.
//
// Every entry point catches everything (nala::Error, std::bad_alloc, any
// std::exception) and turns it into a message in the caller's buffer: no
// exception crosses the C boundary, nothing aborts.
#include "include/nala/nala_c.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "autograd/autograd.h"
#include "models/model_file.h"
#include "models/nalaformer.h"
#include "models/weights.h"
#include "tensor/tensor.h"

#define NALA_VERSION_STRING "0.5.0"

struct nala_model {
  std::unique_ptr<nala::NalaFormer> net;
  nala::ModelFile info;
  std::string describe;
  std::mutex mu;  // serialises forwards on this model
};

namespace {

void set_err(char* err, size_t err_len, const std::string& msg) {
  if (!err || err_len == 0) return;
  size_t n = std::min(msg.size(), err_len - 1);
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

// Runs f, turning any exception into a message; returns whether f succeeded.
template <typename F>
bool guarded(char* err, size_t err_len, const char* where, F&& f) {
  try {
    f();
    return true;
  } catch (const std::bad_alloc&) {
    set_err(err, err_len, std::string(where) + ": out of memory");
  } catch (const std::exception& e) {
    set_err(err, err_len, std::string(where) + ": " + e.what());
  } catch (...) {
    set_err(err, err_len, std::string(where) + ": unknown error");
  }
  return false;
}

}  // namespace

extern "C" {

nala_model* nala_model_load(const char* safetensors_path, const char* config, char* err, size_t err_len) {
  nala_model* out = nullptr;
  guarded(err, err_len, "nala_model_load", [&] {
    NALA_CHECK(safetensors_path, "the weights path is NULL");
    auto m = std::make_unique<nala_model>();
    nala::LoadedModel lm = nala::load_model_file(safetensors_path, config ? config : "");
    m->net = std::move(lm.model);
    m->info = std::move(lm.file);
    m->net->eval();
    m->describe = m->net->cfg.describe();
    out = m.release();
  });
  return out;
}

int nala_model_classes(const nala_model* m) { return m ? (int)m->net->cfg.num_classes : -1; }

int nala_model_channels(const nala_model* m) { return m ? (int)m->net->cfg.in_chans : -1; }

int nala_model_image_size(const nala_model* m) { return m ? (int)m->info.height : 0; }

const char* nala_model_class_name(const nala_model* m, int k) {
  if (!m || k < 0 || k >= (int)m->info.classes.size()) return nullptr;
  return m->info.classes[k].c_str();
}

int nala_model_normalization(const nala_model* m, float* mean, float* std) {
  if (!m || !mean || !std || !m->info.has_input()) return 1;
  for (size_t c = 0; c < m->info.mean.size(); c++) mean[c] = m->info.mean[c], std[c] = m->info.std[c];
  return 0;
}

const char* nala_model_describe(const nala_model* m) { return m ? m->describe.c_str() : nullptr; }

int nala_model_forward(nala_model* m, const float* images, int n, int channels, int height, int width,
                       float* logits, char* err, size_t err_len) {
  bool ok = guarded(err, err_len, "nala_model_forward", [&] {
    NALA_CHECK(m, "the model is NULL");
    NALA_CHECK(images, "images is NULL");
    NALA_CHECK(logits, "logits is NULL");
    const nala::NalaConfig& cfg = m->net->cfg;
    NALA_CHECK(n > 0, "n must be at least 1, got ", n);
    NALA_CHECK(channels == cfg.in_chans, "the model takes ", cfg.in_chans, "-channel images, got ", channels);
    cfg.check_input_size(height, width);
    // n * channels * height * width can pass 2^63: counted in double first.
    NALA_CHECK((double)n * channels * height * width <= (double)(int64_t(1) << 40), n, " images of ", channels,
               "x", height, "x", width, " are more than 2^40 values: refusing to allocate them");
    const int64_t hw = (int64_t)height * width, total = hw * channels * n;
    // A NaN or Inf pixel would give that image NaN logits and the call would
    // still succeed: refused instead, naming where it is.
    for (int64_t i = 0; i < total; i++)
      if (!std::isfinite(images[i]))
        NALA_FAIL("images[", i, "] (image ", i / (hw * channels), ", channel ", i / hw % channels, ", row ",
                  i % hw / width, ", column ", i % width, ") is ", std::isnan(images[i]) ? "NaN" : "infinite",
                  ": the images must be finite");
    std::lock_guard<std::mutex> lock(m->mu);
    nala::NoGradGuard ng;
    // NCHW (the caller's) -> NHWC (nala's channels-last activations)
    nala::Tensor x = nala::Tensor::empty({n, height, width, channels});
    float* px = x.f32();
    for (int64_t b = 0; b < n; b++)
      for (int64_t c = 0; c < channels; c++)
        for (int64_t i = 0; i < hw; i++) px[(b * hw + i) * channels + c] = images[(b * channels + c) * hw + i];
    nala::Tensor y = m->net->forward(x);
    std::vector<float> v = y.to_vector();
    std::memcpy(logits, v.data(), v.size() * sizeof(float));
  });
  return ok ? 0 : 1;
}

void nala_model_free(nala_model* m) { delete m; }

int nala_set_threads(int threads) {
#ifdef _OPENMP
  // More threads than cores only slows OpenMP down (4096 threads on 2 cores:
  // 20x slower), so the count is capped at the cores this process may use.
  if (threads > 0) omp_set_num_threads(std::min(threads, omp_get_num_procs()));
  else if (threads == 0) omp_set_num_threads(omp_get_num_procs());
  return omp_get_max_threads();
#else
  (void)threads;
  return 1;
#endif
}

const char* nala_version(void) { return NALA_VERSION_STRING; }

}  // extern "C"

/* include/nala/nala_c.h - nala's C interface: load a NaLaFormer and classify images.
 *
 * Plain C (C89 and later, C++ too), callable from any language with a C
 * foreign-function interface (Python's ctypes: examples/classify.py). Link
 * with the static library and the C++ runtime:
 *
 *     g++ your_program.o build/release-nocuda/libnala.a -fopenmp -lpthread -lm
 *
 * or load the shared library (`make shared`: build/<variant>/libnala.so).
 *
 * Conventions
 * - Every function that can fail takes `err` and `err_len`: on failure it
 *   writes a NUL-terminated message there (cut to err_len - 1 bytes; err may
 *   be NULL when err_len is 0) and returns NULL or a non-zero int. Nothing
 *   aborts the process or throws across this boundary: out-of-memory and
 *   internal errors come back as messages too.
 * - Images are float32, n x channels x height x width (PyTorch's NCHW
 *   layout), already normalised with the model's mean and standard deviation
 *   (nala_model_normalization gives them when the file carries them).
 * - Logits are float32, n x classes, row-major.
 *
 * Threads
 * - Calls on different models may run at once from any threads.
 * - nala_model_forward on the same model may be called from several threads:
 *   the calls are serialised by a lock inside the model (run one model per
 *   thread for parallel throughput). Each call itself uses nala's OpenMP
 *   threads (nala_set_threads).
 * - The query functions (classes, channels, class names, normalisation) may
 *   run at any time, from any thread, while the model is alive.
 * - nala_model_free must not race with any other call on the same model.
 * - nala_set_threads changes a process-wide setting: call it before starting
 *   work, not while forwards run.
 */
#ifndef NALA_NALA_C_H
#define NALA_NALA_C_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nala_model nala_model;

/* config: a size name ("pico", "xt", "t", "s", "b", "l") or NULL to read it
   from the file's metadata (files written by nala carry it); input channels
   and classes come from the weights. NULL on failure, message in err. */
nala_model* nala_model_load(const char* safetensors_path, const char* config, char* err, size_t err_len);

/* Number of classes (logits per image); -1 when m is NULL. */
int nala_model_classes(const nala_model* m);

/* images: n x channels x height x width float32, already normalised
   (PyTorch's layout); logits: n x classes. 0 on success, else non-zero and a
   message in err. channels must be the model's; height and width must be
   sizes the model can take (at least its total stride). Every value must be
   finite: a NaN or Inf is refused (non-zero, naming the image, channel, row
   and column) instead of giving NaN logits. The buffer must hold
   n*channels*height*width floats: more than 2^40 is refused. */
int nala_model_forward(nala_model* m, const float* images, int n, int channels, int height, int width,
                       float* logits, char* err, size_t err_len);

void nala_model_free(nala_model* m);

/* ---- more about a model (beyond the four calls above) */

/* Input channels the model takes; -1 when m is NULL. */
int nala_model_channels(const nala_model* m);

/* The image size the model was trained at (square side in pixels), from the
   file's metadata; 0 when the file does not say. */
int nala_model_image_size(const nala_model* m);

/* Name of class k, from the file's metadata; NULL when the file has no class
   names or k is out of range. Valid while the model is alive. */
const char* nala_model_class_name(const nala_model* m, int k);

/* Copies the per-channel normalisation (channels values each) into mean and
   std. 0 when the file carries it, non-zero (and nothing copied) when not. */
int nala_model_normalization(const nala_model* m, float* mean, float* std);

/* The config the model was built with, one line (e.g. "pico dims=32,64,128
   ..."); valid while the model is alive. NULL when m is NULL. */
const char* nala_model_describe(const nala_model* m);

/* OpenMP threads for nala's CPU kernels (0 = all cores; more than the cores
   this process may use is capped at that number, negative changes nothing).
   Returns the number now in use. */
int nala_set_threads(int threads);

/* nala's version, e.g. "0.4.0". */
const char* nala_version(void);

#ifdef __cplusplus
}
#endif

#endif /* NALA_NALA_C_H */

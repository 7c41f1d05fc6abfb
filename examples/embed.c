/* examples/embed.c - classify images with nala from C: load a model, run it,
 * print the top-5 classes of each image.
 *
 *   make examples
 *   build/release-nocuda/examples/embed WEIGHTS [--config NAME] [--logits OUT.f32]
 *                                       (--raw FILE.f32 N C H W | IMAGE.pgm|IMAGE.ppm ...)
 *
 * Two ways in, as an embedding program would have them:
 * - --raw: N images of C x H x W float32 (NCHW, already normalised), as your
 *   own pipeline would hand them over;
 * - PGM/PPM files (binary P5/P6, 8-bit): a stand-in for "your image code".
 *   They are read here in a few lines, scaled to [0, 1] and normalised with
 *   the mean and standard deviation the model file carries. They must have
 *   the model's channel count and a size the model takes (no resizing here:
 *   bring your own resizer, or stb_image_resize).
 * --logits writes the raw logits (float32, n x classes) for comparison.
 *
 * Links with nothing but the C++ runtime, OpenMP and libm:
 *   g++ embed.o libnala.a -fopenmp -lpthread -lm
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "include/nala/nala_c.h"

static void die(const char* what, const char* why) {
  fprintf(stderr, "embed: %s: %s\n", what, why);
  exit(1);
}

/* Reads one binary PGM (P5) or PPM (P6) image with maxval 255 into a newly
 * allocated float array of c x h x w (planar), normalised. */
static float* read_pnm(const char* path, const nala_model* m, int* c, int* h, int* w) {
  FILE* f = fopen(path, "rb");
  char magic[3] = {0};
  int maxval = 0;
  if (!f) die(path, "cannot open");
  if (fscanf(f, "%2s %d %d %d", magic, w, h, &maxval) != 4 || (strcmp(magic, "P5") && strcmp(magic, "P6")) ||
      maxval != 255 || *w <= 0 || *h <= 0 || *w > 16384 || *h > 16384)
    die(path, "not a binary 8-bit PGM (P5) or PPM (P6) image");
  fgetc(f); /* the single whitespace before the pixels */
  *c = magic[1] == '5' ? 1 : 3;
  size_t n = (size_t)*c * *h * *w;
  unsigned char* px = malloc(n);
  float* out = malloc(n * sizeof(float));
  if (!px || !out) die(path, "out of memory");
  if (fread(px, 1, n, f) != n) die(path, "file ends before its pixels do");
  fclose(f);
  float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
  if (*c != nala_model_channels(m)) die(path, "channel count differs from the model's");
  if (nala_model_normalization(m, mean, std) != 0)
    fprintf(stderr, "embed: the model file carries no normalisation: using mean 0, std 1\n");
  for (int ch = 0; ch < *c; ch++)
    for (int i = 0; i < *h * *w; i++) /* interleaved pixels -> planar, normalised */
      out[(size_t)ch * *h * *w + i] = (px[(size_t)i * *c + ch] / 255.0f - mean[ch]) / std[ch];
  free(px);
  return out;
}

static void print_top5(const nala_model* m, const float* logits, int classes, const char* label) {
  int best[5], k = classes < 5 ? classes : 5;
  for (int j = 0; j < k; j++) {
    best[j] = -1;
    for (int i = 0; i < classes; i++) {
      int taken = 0;
      for (int t = 0; t < j; t++) taken |= best[t] == i;
      if (!taken && (best[j] < 0 || logits[i] > logits[best[j]])) best[j] = i;
    }
  }
  /* softmax probabilities of the top classes */
  double mx = logits[best[0]], sum = 0;
  for (int i = 0; i < classes; i++) sum += exp(logits[i] - mx);
  printf("%s:", label);
  for (int j = 0; j < k; j++) {
    const char* name = nala_model_class_name(m, best[j]);
    printf("  %s %.1f%%", name ? name : "?", 100.0 * exp(logits[best[j]] - mx) / sum);
    if (!name) printf(" (class %d)", best[j]);
  }
  printf("\n");
}

int main(int argc, char** argv) {
  char err[512];
  const char *weights = NULL, *config = NULL, *logits_path = NULL, *raw = NULL;
  int raw_dims[4] = {0, 0, 0, 0};
  int first_image = argc;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
    else if (!strcmp(argv[i], "--logits") && i + 1 < argc) logits_path = argv[++i];
    else if (!strcmp(argv[i], "--raw") && i + 5 < argc) {
      raw = argv[++i];
      for (int d = 0; d < 4; d++) raw_dims[d] = atoi(argv[++i]);
    } else if (!weights) weights = argv[i];
    else {
      first_image = i;
      break;
    }
  }
  if (!weights || (!raw && first_image == argc)) {
    fprintf(stderr, "usage: embed WEIGHTS [--config NAME] [--logits OUT.f32] (--raw FILE.f32 N C H W | IMAGE.pgm ...)\n");
    return 2;
  }
  nala_model* m = nala_model_load(weights, config, err, sizeof err);
  if (!m) die("load", err);
  const int K = nala_model_classes(m);
  FILE* lf = logits_path ? fopen(logits_path, "wb") : NULL;
  if (logits_path && !lf) die(logits_path, "cannot create");

  if (raw) { /* N images at once */
    const int n = raw_dims[0], c = raw_dims[1], h = raw_dims[2], w = raw_dims[3];
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0) die(raw, "N C H W must be positive");
    size_t count = (size_t)n * c * h * w;
    float* images = malloc(count * sizeof(float));
    float* logits = malloc((size_t)n * K * sizeof(float));
    FILE* f = fopen(raw, "rb");
    if (!images || !logits) die(raw, "out of memory");
    if (!f || fread(images, sizeof(float), count, f) != count) die(raw, "cannot read N*C*H*W float32 values");
    fclose(f);
    if (nala_model_forward(m, images, n, c, h, w, logits, err, sizeof err) != 0) die("forward", err);
    for (int i = 0; i < n; i++) {
      char label[32];
      snprintf(label, sizeof label, "image %d", i);
      print_top5(m, logits + (size_t)i * K, K, label);
    }
    if (lf && fwrite(logits, sizeof(float), (size_t)n * K, lf) != (size_t)n * K) die(logits_path, "write failed");
    free(images);
    free(logits);
  }
  for (int i = first_image; i < argc; i++) { /* one image file at a time */
    int c, h, w;
    float* image = read_pnm(argv[i], m, &c, &h, &w);
    float* logits = malloc((size_t)K * sizeof(float));
    if (!logits) die(argv[i], "out of memory");
    if (nala_model_forward(m, image, 1, c, h, w, logits, err, sizeof err) != 0) die(argv[i], err);
    print_top5(m, logits, K, argv[i]);
    if (lf && fwrite(logits, sizeof(float), (size_t)K, lf) != (size_t)K) die(logits_path, "write failed");
    free(image);
    free(logits);
  }
  if (lf && fclose(lf) != 0) die(logits_path, "write failed");
  nala_model_free(m);
  return 0;
}

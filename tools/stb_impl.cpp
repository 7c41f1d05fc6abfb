// tools/stb_impl.cpp - the one translation unit that compiles the stb image
// decoder, resizer and writer (Debian libstb-dev headers, <stb/...>). Every
// other file includes the headers without the *_IMPLEMENTATION macros.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"

#include <cstdlib>
#include <cstring>

// stb_image 2.27 takes its decoder state from malloc without clearing it,
// and trusts parts of it a corrupt file never filled in: a JPEG scan may
// name a Huffman table that no DHT segment defined, and stb then decodes
// with whatever the heap held there (see jpeg_scan_uses_undefined_huffman_table
// in tools/image.cpp). Every allocation stb_image makes is therefore zeroed,
// and so is the part a reallocation adds (STBI_REALLOC_SIZED: stb passes
// the exact old size at each of its call sites), so no decoder ever reads
// memory left over from an earlier allocation. An all-zero Huffman table is
// harmless: every lookup hits entry 0 of its fast table, a zero-length code
// for symbol 0, and never reaches the slow path's index arithmetic.
// STBI_REALLOC is left undefined, so a plain (unsized) reallocation would
// not compile.
static void* nala_stbi_malloc(size_t size) { return std::calloc(size ? size : 1, 1); }
static void* nala_stbi_realloc_sized(void* p, size_t old_size, size_t new_size) {
  unsigned char* q = static_cast<unsigned char*>(std::realloc(p, new_size));
  if (q && new_size > old_size) std::memset(q + old_size, 0, new_size - old_size);
  return q;
}
#define STBI_MALLOC(size) nala_stbi_malloc(size)
#define STBI_REALLOC_SIZED(p, old_size, new_size) nala_stbi_realloc_sized(p, old_size, new_size)
#define STBI_FREE(p) std::free(p)

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "stb/stb_image.h"
#include "stb/stb_image_resize.h"
#include "stb/stb_image_write.h"

#pragma GCC diagnostic pop

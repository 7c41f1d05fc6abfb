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

// stb_image 2.27 takes its decoder state from malloc without clearing it,
// and trusts parts of it a corrupt file never filled in: a JPEG scan may
// name a Huffman table that no DHT segment defined, and stb then decodes
// with whatever the heap held there (see jpeg_scan_uses_undefined_huffman_table
// in tools/image.cpp). Every block stb_image allocates is therefore zeroed,
// so no decoder ever reads memory left over from an earlier allocation. An
// all-zero Huffman table is harmless: every lookup hits entry 0 of its fast
// table, a zero-length code for symbol 0, and never reaches the slow path's
// index arithmetic. The two buffers stb grows with realloc (PNG's IDAT data
// and zlib's output) are read only where stb has written, so their new tails
// are left as they are: zeroing them made the image fuzzer's memory grow to
// its limit.
static void* nala_stbi_malloc(size_t size) { return std::calloc(size ? size : 1, 1); }
#define STBI_MALLOC(size) nala_stbi_malloc(size)
#define STBI_REALLOC(p, size) std::realloc(p, size)
#define STBI_FREE(p) std::free(p)

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "stb/stb_image.h"
#include "stb/stb_image_resize.h"
#include "stb/stb_image_write.h"

#pragma GCC diagnostic pop

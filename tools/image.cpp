// tools/image.cpp - image decoding, resizing and normalisation on top of stb.
#include "tools/image.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "nn/files.h"
#include "stb/stb_image.h"
#include "stb/stb_image_resize.h"
#include "stb/stb_image_write.h"

namespace nala {

namespace {

// stb_image 2.27 (Debian's libstb-dev 0.0~git20220908) builds a JPEG
// Huffman table without checking that its code counts add up to at most
// 256, and then writes up to 4080 bytes past the table, inside its decoder
// struct (found by tests/fuzz/fuzz_image under UBSan; ASan cannot see an
// overflow within one allocation, and the struct ends with function
// pointers). stb 2.28 refuses such a table. Until the system copy has that
// fix, every DHT segment stb could read is checked here first, emulating
// stb's reads (zeros past the end of the buffer).
//
// Before the first scan, stb walks segment by segment (junk skipped up to an
// 0xFF, fill bytes skipped, lengths followed), and so does this. After it,
// stb may pick up a marker after any 0xFF in the scan data, so every FF C4
// there is checked; in a valid file 0xFF inside scan data is always
// followed by 00 or a restart marker, so no valid file is refused.
//
// read_dht reads one DHT segment the way stb does (i: just after its C4
// byte): true when a table declares more than 256 codes; the tables it
// defines are marked in `defined` ([class: 0 DC, 1 AC][table]) when given.
// Past the end of the buffer stb reads empty tables: harmless, and not
// counted as defined.
bool read_dht(const uint8_t* p, size_t n, size_t i, bool (*defined)[4] = nullptr) {
  auto at = [&](size_t k) -> unsigned { return k < n ? p[k] : 0u; };
  long L = (long)(at(i) << 8 | at(i + 1)) - 2;
  i += 2;
  while (L > 0 && i < n) {
    const unsigned q = at(i++);
    if ((q >> 4) > 1 || (q & 15) > 3) return false;  // stb stops: "bad DHT header"
    if (defined) defined[q >> 4][q & 15] = true;
    unsigned codes = 0;
    for (int k = 0; k < 16; k++) codes += at(i++);
    if (codes > 256) return true;
    i += codes;
    L -= 17 + (long)codes;
  }
  return false;
}

bool jpeg_has_oversized_huffman_table(const uint8_t* p, size_t n) {
  auto at = [&](size_t i) -> unsigned { return i < n ? p[i] : 0u; };
  if (n < 2 || p[0] != 0xFF || p[1] != 0xD8) return false;
  size_t i = 2;
  for (;;) {  // segments before the first scan
    while (i < n && p[i] != 0xFF) i++;
    while (i < n && p[i] == 0xFF) i++;
    if (i >= n) return false;
    const unsigned m = p[i++];
    if (m == 0xC4 && read_dht(p, n, i)) return true;
    if (m == 0xDA) break;
    const bool has_length = m == 0xC0 || m == 0xC1 || m == 0xC2 || m == 0xC4 || m == 0xDB || m == 0xDC ||
                            m == 0xDD || (m >= 0xE0 && m <= 0xEF) || m == 0xFE;
    if (!has_length) return false;  // EOI, or a marker stb refuses
    i += at(i) << 8 | at(i + 1);
  }
  for (; i + 1 < n; i++)
    if (p[i] == 0xFF && p[i + 1] == 0xC4 && read_dht(p, n, i + 2)) return true;
  return false;
}

// stb_image 2.27 keeps its four DC and four AC Huffman tables in a decoder
// struct it takes from malloc without clearing, and never checks that a table
// a scan names was defined by a DHT segment. Such a scan decodes with
// whatever the heap held there: stbi__jpeg_huff_decode then computes a symbol
// index from a stale maxcode[]/delta[] pair and reads h->values[c] and
// h->size[c] far outside the table (found by tests/fuzz/fuzz_image, only
// after earlier inputs had left tables on the heap; stb 2.28 bounds the
// index). A table built from a DHT segment cannot do this: its codes of each
// length are consecutive, so the index stays within the codes counted, and
// more than 256 are refused above. Two guards: tools/stb_impl.cpp zeroes
// every allocation stb makes (an all-zero table is harmless), and a scan that
// uses a table no DHT segment defined before it is refused here, with a
// message, before stb runs.
//
// What a scan uses is what stb's decoder reads: a baseline scan the DC and
// AC tables of each of its components; a progressive scan the DC table for a
// first DC scan (Ss = 0, Ah = 0), none for a DC refinement, the AC table for
// an AC scan (Ss > 0). Segments are walked as stb walks them (as above);
// after a scan, the entropy-coded data ends at the first 0xFF followed by a
// byte that is not 0x00, fill (0xFF) or a restart marker, which is where stb
// takes its next marker in a valid file, so a valid file, progressive ones
// with their tables between scans included, is never refused. Up to the
// first scan the walk is stb's exactly, for any file stb gets that far
// with; after it, on a corrupt file, stb may end its entropy decoding
// elsewhere, and for those scans the zeroed allocations are the guarantee.
bool jpeg_scan_uses_undefined_huffman_table(const uint8_t* p, size_t n) {
  auto at = [&](size_t i) -> unsigned { return i < n ? p[i] : 0u; };
  bool defined[2][4] = {};  // [class: 0 DC, 1 AC][table]
  bool progressive = false, have_frame = false;
  if (n < 2 || p[0] != 0xFF || p[1] != 0xD8) return false;
  size_t i = 2;
  for (;;) {
    while (i < n && p[i] != 0xFF) i++;
    while (i < n && p[i] == 0xFF) i++;
    if (i >= n) return false;
    const unsigned m = p[i++];
    const size_t len = at(i) << 8 | at(i + 1);
    if (m == 0xC4) {  // DHT: the tables stb builds
      read_dht(p, n, i, defined);
    } else if (m == 0xC0 || m == 0xC1 || m == 0xC2) {
      if (have_frame) return false;  // stb refuses a second frame
      have_frame = true, progressive = m == 0xC2;
    } else if (m == 0xDA) {  // SOS
      const unsigned ns = at(i + 2);
      if (!have_frame || ns < 1 || ns > 4 || len != 6 + 2 * ns) return false;  // stb refuses these
      const unsigned ss = at(i + 3 + 2 * ns), ah = at(i + 5 + 2 * ns) >> 4;
      const bool dc = !progressive || (ss == 0 && ah == 0), ac = !progressive || ss != 0;
      for (unsigned c = 0; c < ns; c++) {
        const unsigned q = at(i + 4 + 2 * c);
        if ((q >> 4) > 3 || (q & 15) > 3) return false;  // stb: "bad DC huff" / "bad AC huff"
        if ((dc && !defined[0][q >> 4]) || (ac && !defined[1][q & 15])) return true;
      }
      for (i += len; i + 1 < n; i++) {  // skip the entropy-coded data
        if (p[i] != 0xFF) continue;
        size_t j = i + 1;
        while (j < n && p[j] == 0xFF) j++;
        if (j < n && p[j] != 0 && !(p[j] >= 0xD0 && p[j] <= 0xD7)) break;
        i = j;
      }
      continue;
    } else if (m == 0xD9) {
      return false;  // EOI
    } else if (!(m == 0xDB || m == 0xDC || m == 0xDD || (m >= 0xE0 && m <= 0xEF) || m == 0xFE)) {
      return false;  // a marker stb refuses
    }
    i += len;
  }
}

// The formats the datasets document; stb's other decoders (GIF, PSD, PIC,
// TGA, HDR, PNM) are never reached.
const char* image_format(const uint8_t* p, size_t n) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (n >= 8 && std::memcmp(p, png_sig, 8) == 0) return "PNG";
  if (n >= 2 && p[0] == 0xFF && p[1] == 0xD8) return "JPEG";
  if (n >= 2 && p[0] == 'B' && p[1] == 'M') return "BMP";
  return nullptr;
}

// stb reads zeros past the end of a BMP's pixel rows, so a header of a few
// dozen bytes can stand for millions of (black) pixels: a truncated file
// loads silently, and a tiny one costs seconds and megabytes (found by
// tests/fuzz/fuzz_image: 1048581 x 28 pixels from 60 bytes). A BMP must hold
// the rows its header declares (palette not counted, so never too strict).
void check_bmp_size(const uint8_t* p, size_t n, const std::string& name) {
  auto u16 = [&](size_t i) -> uint32_t { return i + 1 < n ? (uint32_t)p[i] | (uint32_t)p[i + 1] << 8 : 0u; };
  auto u32 = [&](size_t i) -> uint32_t { return u16(i) | u16(i + 2) << 16; };
  const uint32_t hsz = u32(14);
  int64_t w, h;
  uint32_t bpp;
  if (hsz == 12) {
    w = u16(18), h = u16(20), bpp = u16(24);
  } else {
    w = (int32_t)u32(18), h = std::llabs((int64_t)(int32_t)u32(22)), bpp = u16(28);
  }
  if (w <= 0 || h <= 0 || bpp == 0 || bpp > 32 || hsz > 124) return;  // stb refuses these itself
  const uint64_t need = 14 + hsz + ((uint64_t)w * bpp + 31) / 32 * 4 * (uint64_t)h;
  NALA_CHECK(n >= need, "image ", name, ": cannot decode: truncated BMP (", w, "x", h, " pixels of ", bpp,
             " bits need ", need, " bytes, the file has ", n, ")");
}

// stb's PNG reader copies a zero-length first IDAT chunk with
// memcpy(NULL, p, 0): nothing is copied, but it is undefined behaviour, and
// the sanitizer build stops on it (found by tests/fuzz/fuzz_image). Such
// chunks are legal and carry nothing, so they are dropped before stb reads
// the file; `out` stays empty when there is none.
void drop_empty_idat(const uint8_t* p, size_t n, std::vector<uint8_t>& out) {
  auto be32 = [&](size_t i) {
    return (uint64_t)p[i] << 24 | (uint64_t)p[i + 1] << 16 | (uint64_t)p[i + 2] << 8 | p[i + 3];
  };
  // stb copies as soon as it has read a chunk's length and type, before
  // its CRC: a zero-length IDAT at the end of a truncated file, with fewer
  // than 4 bytes of CRC, is dropped too (with whatever follows it).
  std::vector<size_t> empty;
  for (size_t pos = 8; pos + 8 <= n;) {
    const uint64_t len = be32(pos);
    if (len == 0 && std::memcmp(p + pos + 4, "IDAT", 4) == 0) empty.push_back(pos);
    if (pos + 12 > n || len > n - pos - 12) break;
    pos += 12 + (size_t)len;
  }
  if (empty.empty()) return;
  size_t from = 0;
  for (size_t at : empty) {
    out.insert(out.end(), p + from, p + at);
    from = std::min(at + 12, n);
  }
  out.insert(out.end(), p + from, p + n);
}

// stb_image_write's output callback: appends to a std::string.
void append_bytes(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), (size_t)size);
}
}  // namespace

Image decode_image(const std::string& path, int channels) {
  NALA_CHECK(channels == 1 || channels == 3, "image ", path, ": channels must be 1 or 3, got ", channels);
  // A regular file of at most kMaxImageFileBytes, checked before a byte is
  // read (a FIFO does not block, a huge file is not read into memory).
  const std::string bytes = read_file(path, "image", kMaxImageFileBytes);
  return decode_image_bytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), channels, path);
}

Image decode_image_bytes(const uint8_t* data, size_t size, int channels, const std::string& name) {
  NALA_CHECK(channels == 1 || channels == 3, "image ", name, ": channels must be 1 or 3, got ", channels);
  NALA_CHECK(size > 0, "image ", name, ": empty file");
  NALA_CHECK(size <= (size_t)INT32_MAX, "image ", name, ": file of ", size, " bytes is too large");
  const int len = (int)size;
  const char* format = image_format(data, size);
  NALA_CHECK(format, "image ", name, ": cannot decode: not a PNG, JPEG or BMP file");
  NALA_CHECK(std::strcmp(format, "JPEG") != 0 || !jpeg_has_oversized_huffman_table(data, size), "image ", name,
             ": cannot decode: corrupt JPEG (a Huffman table with more than 256 codes)");
  NALA_CHECK(std::strcmp(format, "JPEG") != 0 || !jpeg_scan_uses_undefined_huffman_table(data, size), "image ",
             name, ": cannot decode: corrupt JPEG (a scan uses a Huffman table that no DHT segment defined)");
  if (std::strcmp(format, "BMP") == 0) check_bmp_size(data, size, name);
  std::vector<uint8_t> cleaned;
  if (std::strcmp(format, "PNG") == 0) drop_empty_idat(data, size, cleaned);
  if (!cleaned.empty()) return decode_image_bytes(cleaned.data(), cleaned.size(), channels, name);
  Image img;
  int w = 0, h = 0, n = 0;
  // The header's size first: a few bytes can claim a huge image, and stb
  // would allocate (and for some formats fill) all of it.
  NALA_CHECK(stbi_info_from_memory(data, len, &w, &h, &n), "image ", name, ": cannot decode: ",
             stbi_failure_reason());
  NALA_CHECK(w > 0 && h > 0 && (int64_t)w * h <= kMaxImagePixels, "image ", name, ": ", w, "x", h,
             " pixels is more than the limit of ", kMaxImagePixels, " (corrupt file?)");
  img.c = channels;
  if (stbi_is_16_bit_from_memory(data, len)) {
    // Our own rounding to 8 bits (stb would truncate with >> 8).
    stbi_us* p = stbi_load_16_from_memory(data, len, &w, &h, &n, channels);
    NALA_CHECK(p, "image ", name, ": cannot decode: ", stbi_failure_reason());
    img.h = h, img.w = w;
    img.pixels.resize((size_t)w * h * channels);
    for (size_t k = 0; k < img.pixels.size(); k++) img.pixels[k] = (uint8_t)((p[k] * 255u + 32767u) / 65535u);
    stbi_image_free(p);
    return img;
  }
  stbi_uc* p = stbi_load_from_memory(data, len, &w, &h, &n, channels);
  NALA_CHECK(p, "image ", name, ": cannot decode: ", stbi_failure_reason());
  img.h = h, img.w = w;
  img.pixels.assign(p, p + (size_t)w * h * channels);
  stbi_image_free(p);
  return img;
}

Image resize_image(const Image& img, int h, int w) {
  NALA_CHECK(h > 0 && w > 0, "resize_image: bad target size ", h, "x", w);
  if (img.h == h && img.w == w) return img;
  Image out;
  out.h = h, out.w = w, out.c = img.c;
  out.pixels.resize((size_t)h * w * img.c);
  int ok = stbir_resize_uint8(img.pixels.data(), img.w, img.h, 0, out.pixels.data(), w, h, 0, img.c);
  NALA_CHECK(ok, "resize_image: stb_image_resize failed for ", img.w, "x", img.h, " -> ", w, "x", h);
  return out;
}

Image load_image_u8(const std::string& path, int channels, int size) {
  return resize_image(decode_image(path, channels), size, size);
}

void normalise_image(const uint8_t* src, int64_t h, int64_t w, int64_t c, const std::vector<float>& mean,
                     const std::vector<float>& std, float* out) {
  NALA_CHECK((int64_t)mean.size() == c && (int64_t)std.size() == c, "normalise_image: need ", c,
             " mean/std values, got ", mean.size(), "/", std.size());
  // A table per channel: 256 values each, so the pixel loop is one lookup.
  std::vector<float> lut(256 * c);
  for (int64_t ch = 0; ch < c; ch++)
    for (int v = 0; v < 256; v++) lut[ch * 256 + v] = (v / 255.0f - mean[ch]) / std[ch];
  for (int64_t p = 0; p < h * w; p++)
    for (int64_t ch = 0; ch < c; ch++) out[p * c + ch] = lut[ch * 256 + src[p * c + ch]];
}

Tensor load_image(const std::string& path, int size, int channels, const std::vector<float>& mean,
                  const std::vector<float>& std) {
  Image img = load_image_u8(path, channels, size);
  Tensor t = Tensor::empty({1, size, size, channels});
  normalise_image(img.pixels.data(), size, size, channels, mean, std, t.f32());
  return t;
}

void write_png(const std::string& path, const Image& img) {
  NALA_CHECK((img.c == 1 || img.c == 3 || img.c == 4) && img.pixels.size() == (size_t)img.h * img.w * img.c,
             "write_png ", path, ": bad image ", img.w, "x", img.h, "x", img.c);
  // Encoded in memory, then written through nn/files.h: never into a FIFO,
  // a device or through a symlink, and atomically.
  check_output_path(path, "PNG image");
  std::string png;
  int ok = stbi_write_png_to_func(append_bytes, &png, img.w, img.h, img.c, img.pixels.data(), img.w * img.c);
  NALA_CHECK(ok && !png.empty(), "write_png ", path, ": PNG encoding failed (", img.w, "x", img.h, "x", img.c, ")");
  write_file_atomic(path, png, "PNG image");
}

std::vector<float> imagenet_mean(int channels) {
  return channels == 1 ? std::vector<float>{0.449f} : std::vector<float>{0.485f, 0.456f, 0.406f};
}
std::vector<float> imagenet_std(int channels) {
  return channels == 1 ? std::vector<float>{0.226f} : std::vector<float>{0.229f, 0.224f, 0.225f};
}

}  // namespace nala

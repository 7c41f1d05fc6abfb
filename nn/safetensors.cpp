// nn/safetensors.cpp - the safetensors reader (with its own small JSON parser
// for exactly the subset the format uses: objects, arrays, strings with
// escapes, integers) and the writer. Files are opened and written through
// nn/files.h: a weights path that is not a regular file (a FIFO, a device, a
// directory) is refused before a byte is read, and a save goes to
// "<path>.tmp.<pid>", renamed over the target only when complete and only
// when the target is absent or a regular file. See nn/safetensors.h.
#include "nn/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>

#include "nn/files.h"

namespace nala {

namespace {

constexpr uint64_t kMaxHeader = 100000000;  // the reference implementation's limit
constexpr int kMaxDepth = 16;

bool little_endian_host() {
  uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

// ---------------------------------------------------------------- JSON subset

struct JVal {
  enum Kind { Str, Int, Arr, Obj } kind = Int;
  std::string s;
  int64_t i = 0;
  std::vector<JVal> arr;
  std::vector<std::pair<std::string, JVal>> obj;
};

// Length of the valid UTF-8 sequence starting at t[p], or 0 when invalid
// (overlong forms, surrogates and code points past U+10FFFF are invalid).
size_t utf8_seq(const std::string& t, size_t p) {
  auto b = [&](size_t k) -> unsigned { return p + k < t.size() ? (unsigned char)t[p + k] : 0x100u; };
  unsigned c = b(0);
  auto cont = [&](size_t k) { return (b(k) & 0xC0u) == 0x80u; };
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && b(1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(1) >= 0xA0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && b(1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(1) >= 0x90) return 0;  // past U+10FFFF
    return 4;
  }
  return 0;
}

bool valid_utf8(const std::string& s) {
  for (size_t p = 0; p < s.size();) {
    size_t n = utf8_seq(s, p);
    if (!n) return false;
    p += n;
  }
  return true;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += (char)cp;
  } else if (cp < 0x800) {
    out += (char)(0xC0 | (cp >> 6));
    out += (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += (char)(0xE0 | (cp >> 12));
    out += (char)(0x80 | ((cp >> 6) & 0x3F));
    out += (char)(0x80 | (cp & 0x3F));
  } else {
    out += (char)(0xF0 | (cp >> 18));
    out += (char)(0x80 | ((cp >> 12) & 0x3F));
    out += (char)(0x80 | ((cp >> 6) & 0x3F));
    out += (char)(0x80 | (cp & 0x3F));
  }
}

class JsonParser {
 public:
  JsonParser(const std::string& text, const std::string& file) : t_(text), file_(file) {}

  // The whole text must be one object, optionally followed by whitespace.
  JVal parse_document() {
    ws();
    if (p_ >= t_.size() || t_[p_] != '{') fail("the header must be a JSON object starting with '{'");
    JVal v = value(0);
    ws();
    if (p_ != t_.size()) fail("trailing garbage after the JSON object");
    return v;
  }

 private:
  const std::string& t_;
  const std::string& file_;
  size_t p_ = 0;

  [[noreturn]] void fail(const std::string& what) {
    NALA_FAIL("safetensors: ", file_, ": bad JSON header at byte ", p_, ": ", what);
  }
  void ws() {
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\t' || t_[p_] == '\n' || t_[p_] == '\r')) p_++;
  }
  char peek() { return p_ < t_.size() ? t_[p_] : '\0'; }
  void expect(char c) {
    if (p_ >= t_.size()) fail(std::string("unexpected end, expected '") + c + "'");
    if (t_[p_] != c) fail(std::string("expected '") + c + "'");
    p_++;
  }

  JVal value(int depth) {
    if (depth > kMaxDepth) fail("nested too deeply");
    ws();
    if (p_ >= t_.size()) fail("unexpected end of the header");
    char c = t_[p_];
    JVal v;
    if (c == '{') {
      v.kind = JVal::Obj;
      p_++;
      std::set<std::string> seen;
      ws();
      if (peek() == '}') {
        p_++;
        return v;
      }
      for (;;) {
        ws();
        if (peek() != '"') fail("expected a string key");
        size_t at = p_;
        std::string key = string();
        if (!seen.insert(key).second) {
          p_ = at;
          fail("duplicate key \"" + key + "\"");
        }
        ws();
        expect(':');
        JVal item = value(depth + 1);
        v.obj.emplace_back(std::move(key), std::move(item));
        ws();
        if (peek() == ',') {
          p_++;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = JVal::Arr;
      p_++;
      ws();
      if (peek() == ']') {
        p_++;
        return v;
      }
      for (;;) {
        v.arr.push_back(value(depth + 1));
        ws();
        if (peek() == ',') {
          p_++;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = JVal::Str;
      v.s = string();
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = JVal::Int;
      v.i = integer();
      return v;
    }
    fail(std::string("unsupported JSON value starting with '") + c + "' (only objects, arrays, strings, integers)");
  }

  int64_t integer() {
    bool neg = peek() == '-';
    if (neg) p_++;
    if (!(peek() >= '0' && peek() <= '9')) fail("expected digits");
    uint64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      unsigned d = (unsigned)(t_[p_] - '0');
      if (v > ((uint64_t)INT64_MAX - d) / 10) fail("integer too large");
      v = v * 10 + d;
      p_++;
    }
    if (peek() == '.' || peek() == 'e' || peek() == 'E') fail("numbers must be integers");
    return neg ? -(int64_t)v : (int64_t)v;
  }

  uint32_t hex4() {
    if (p_ + 4 > t_.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
      char h = t_[p_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= (uint32_t)(h - '0');
      else if (h >= 'a' && h <= 'f') v |= (uint32_t)(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= (uint32_t)(h - 'A' + 10);
      else fail("bad hex digit in \\u escape");
    }
    return v;
  }

  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (p_ >= t_.size()) fail("unterminated string");
      unsigned char c = (unsigned char)t_[p_];
      if (c == '"') {
        p_++;
        return out;
      }
      if (c < 0x20) fail("control character in a string");
      if (c >= 0x80) {
        size_t n = utf8_seq(t_, p_);
        if (!n) fail("invalid UTF-8 in a string (after \"" + out + "\")");
        out.append(t_, p_, n);
        p_ += n;
        continue;
      }
      p_++;
      if (c != '\\') {
        out += (char)c;
        continue;
      }
      if (p_ >= t_.size()) fail("unterminated escape");
      char e = t_[p_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // high surrogate: a low one must follow
            if (p_ + 2 > t_.size() || t_[p_] != '\\' || t_[p_ + 1] != 'u') fail("lone high surrogate in \\u escape");
            p_ += 2;
            uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("lone low surrogate in \\u escape");
          }
          append_utf8(out, cp);
          break;
        }
        default: fail(std::string("unknown escape \\") + e);
      }
    }
  }
};

// ---------------------------------------------------------------- dtypes

enum class Kind { Float, Int, Unsupported };
struct DTypeInfo {
  const char* name;
  int size;
  Kind kind;
};
const DTypeInfo kDTypes[] = {
    {"F32", 4, Kind::Float},  {"F16", 2, Kind::Float},         {"BF16", 2, Kind::Float},
    {"F64", 8, Kind::Float},  {"I64", 8, Kind::Int},           {"I32", 4, Kind::Int},
    {"I16", 2, Kind::Int},    {"I8", 1, Kind::Int},            {"U8", 1, Kind::Int},
    {"BOOL", 1, Kind::Int},   {"U16", 2, Kind::Unsupported},   {"U32", 4, Kind::Unsupported},
    {"U64", 8, Kind::Unsupported}, {"F8_E4M3", 1, Kind::Unsupported}, {"F8_E5M2", 1, Kind::Unsupported},
};

const DTypeInfo* find_dtype(const std::string& s) {
  for (const auto& d : kDTypes)
    if (s == d.name) return &d;
  return nullptr;
}

const char* file_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::I64: return "I64";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
  }
  return "?";
}

float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise the mantissa
      exp = 127 - 15 + 1;
      while (!(man & 0x400u)) man <<= 1, exp--;
      bits = sign | (exp << 23) | ((man & 0x3FFu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Convert n little-endian values of file dtype d (bytes in src) into dst.
void convert(const DTypeInfo& d, const unsigned char* src, int64_t n, const Tensor& dst) {
  std::string name = d.name;
  if (name == "F32" || name == "I64") {
    if (n) std::memcpy(dst.raw(), src, (size_t)n * d.size);
    return;
  }
  if (d.kind == Kind::Float) {
    float* o = dst.f32();
    for (int64_t k = 0; k < n; k++) {
      const unsigned char* b = src + k * d.size;
      if (name == "F16") {
        uint16_t h;
        std::memcpy(&h, b, 2);
        o[k] = half_to_float(h);
      } else if (name == "BF16") {
        uint16_t h;
        std::memcpy(&h, b, 2);
        uint32_t bits = (uint32_t)h << 16;
        std::memcpy(&o[k], &bits, 4);
      } else {
        double v;
        std::memcpy(&v, b, 8);
        o[k] = (float)v;
      }
    }
    return;
  }
  int64_t* o = dst.i64();
  for (int64_t k = 0; k < n; k++) {
    const unsigned char* b = src + k * d.size;
    if (name == "I32") {
      int32_t v;
      std::memcpy(&v, b, 4);
      o[k] = v;
    } else if (name == "I16") {
      int16_t v;
      std::memcpy(&v, b, 2);
      o[k] = v;
    } else if (name == "I8") {
      o[k] = (int8_t)b[0];
    } else {  // U8, BOOL
      o[k] = b[0];
    }
  }
}

// ---------------------------------------------------------------- header

struct Entry {
  std::string name;
  const DTypeInfo* dtype;
  Shape shape;
  int64_t numel;
  uint64_t begin, end;
};

std::string offsets_str(const Entry& e) { return "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]"; }

// Parse and validate the JSON header against a data section of data_size bytes.
std::vector<Entry> parse_header(const std::string& header, uint64_t data_size, const std::string& file,
                                std::map<std::string, std::string>& metadata) {
  JVal doc = JsonParser(header, file).parse_document();
  std::vector<Entry> entries;
  for (auto& kv : doc.obj) {
    const std::string& key = kv.first;
    const JVal& v = kv.second;
    if (key == "__metadata__") {
      NALA_CHECK(v.kind == JVal::Obj, "safetensors: ", file, ": \"__metadata__\" must be an object of strings");
      for (auto& m : v.obj) {
        NALA_CHECK(m.second.kind == JVal::Str, "safetensors: ", file, ": metadata value for \"", m.first,
                   "\" is not a string");
        metadata[m.first] = m.second.s;
      }
      continue;
    }
    std::string where = "safetensors: " + file + ": tensor \"" + key + "\": ";
    NALA_CHECK(!key.empty(), "safetensors: ", file, ": empty tensor name");
    NALA_CHECK(v.kind == JVal::Obj, where, "entry is not an object");
    const JVal *dt = nullptr, *sh = nullptr, *off = nullptr;
    for (auto& f : v.obj) {
      if (f.first == "dtype") dt = &f.second;
      else if (f.first == "shape") sh = &f.second;
      else if (f.first == "data_offsets") off = &f.second;
      else NALA_FAIL(where, "unknown field \"", f.first, "\"");
    }
    NALA_CHECK(dt && sh && off, where, "missing field \"", !dt ? "dtype" : !sh ? "shape" : "data_offsets", "\"");
    NALA_CHECK(dt->kind == JVal::Str, where, "dtype is not a string");
    Entry e;
    e.name = key;
    e.dtype = find_dtype(dt->s);
    NALA_CHECK(e.dtype, where, "unknown dtype \"", dt->s, "\"");
    NALA_CHECK(e.dtype->kind != Kind::Unsupported, where, "unsupported dtype ", dt->s,
               " (nala reads F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL)");
    NALA_CHECK(sh->kind == JVal::Arr, where, "shape is not an array");
    NALA_CHECK(sh->arr.size() <= 16, where, "shape has ", sh->arr.size(), " dimensions (absurd)");
    uint64_t numel = 1;
    for (auto& d : sh->arr) {
      NALA_CHECK(d.kind == JVal::Int && d.i >= 0, where, "shape entries must be non-negative integers");
      e.shape.push_back(d.i);
    }
    bool overflow = false;
    for (int64_t d : e.shape) {
      if (d != 0 && numel > (uint64_t)INT64_MAX / 8 / (uint64_t)d) overflow = true;
      else numel *= (uint64_t)d;
    }
    // A zero anywhere makes the product zero even when other sizes are huge.
    if (std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end()) overflow = false, numel = 0;
    NALA_CHECK(!overflow, where, "shape ", shape_str(e.shape), " has too many elements (overflow)");
    e.numel = (int64_t)numel;
    NALA_CHECK(off->kind == JVal::Arr && off->arr.size() == 2 && off->arr[0].kind == JVal::Int &&
                   off->arr[1].kind == JVal::Int && off->arr[0].i >= 0 && off->arr[1].i >= 0,
               where, "data_offsets must be two non-negative integers [begin, end]");
    e.begin = (uint64_t)off->arr[0].i;
    e.end = (uint64_t)off->arr[1].i;
    NALA_CHECK(e.end >= e.begin, where, "data_offsets ", offsets_str(e), ": end before begin");
    NALA_CHECK(e.end <= data_size, where, "data_offsets ", offsets_str(e), " run past the end of the data (",
               data_size, " bytes)");
    uint64_t need = numel * (uint64_t)e.dtype->size;
    NALA_CHECK(e.end - e.begin == need, where, "data_offsets ", offsets_str(e), " hold ", e.end - e.begin,
               " bytes but ", e.dtype->name, " ", shape_str(e.shape), " needs ", need, " bytes");
    entries.push_back(std::move(e));
  }
  // The byte ranges must tile the data section: no overlap, no gap, no tail.
  std::vector<const Entry*> order;
  for (auto& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : order) {
    NALA_CHECK(e->begin >= pos, "safetensors: ", file, ": tensors \"", prev ? prev->name : "", "\" ",
               prev ? offsets_str(*prev) : "", " and \"", e->name, "\" ", offsets_str(*e), " overlap");
    NALA_CHECK(e->begin == pos, "safetensors: ", file, ": gap of ", e->begin - pos, " unused bytes before tensor \"",
               e->name, "\" ", offsets_str(*e));
    pos = e->end;
    if (e->end > e->begin || !prev) prev = e;
  }
  NALA_CHECK(pos == data_size, "safetensors: ", file, ": ", data_size - pos,
             " bytes of trailing data after the last tensor");
  return entries;
}

uint64_t read_le64(const unsigned char* b) {
  uint64_t v = 0;
  for (int k = 7; k >= 0; k--) v = (v << 8) | b[k];
  return v;
}

// Check the 8-byte length against the file size; returns N.
uint64_t check_header_len(uint64_t n, uint64_t file_size, const std::string& file) {
  NALA_CHECK(n <= kMaxHeader, "safetensors: ", file, ": header length ", n, " is absurdly large (limit ",
             kMaxHeader, " bytes; not a safetensors file?)");
  NALA_CHECK(n <= file_size - 8, "safetensors: ", file, ": header length ", n,
             " runs past the end of the file (", file_size, " bytes)");
  NALA_CHECK(n >= 2, "safetensors: ", file, ": header length ", n, " is too small for a JSON object");
  return n;
}

Tensor make_tensor(const Entry& e) {
  return Tensor::empty(e.shape, e.dtype->kind == Kind::Float ? DType::F32 : DType::I64);
}

}  // namespace

// ---------------------------------------------------------------- reading

SafeTensors parse_safetensors(const std::string& bytes, const std::string& name) {
  NALA_CHECK(little_endian_host(), "safetensors: big-endian hosts are not supported");
  NALA_CHECK(bytes.size() >= 8, "safetensors: ", name, ": file is ", bytes.size(),
             " bytes, too short for the 8-byte header length");
  uint64_t n = check_header_len(read_le64((const unsigned char*)bytes.data()), bytes.size(), name);
  SafeTensors st;
  auto entries = parse_header(bytes.substr(8, n), bytes.size() - 8 - n, name, st.metadata);
  const unsigned char* data = (const unsigned char*)bytes.data() + 8 + n;
  for (auto& e : entries) {
    Tensor t = make_tensor(e);
    convert(*e.dtype, data + e.begin, e.numel, t);
    st.tensors[e.name] = t;
  }
  return st;
}

SafeTensors load_safetensors(const std::string& path) {
  NALA_CHECK(little_endian_host(), "safetensors: big-endian hosts are not supported");
  InputFile f(path, "safetensors file");  // a regular file, or an error naming what it is
  uint64_t size = (uint64_t)f.size();
  NALA_CHECK(size >= 8, "safetensors: ", path, ": file is ", size, " bytes, too short for the 8-byte header length");
  unsigned char lenb[8];
  f.read(lenb, 8);
  uint64_t n = check_header_len(read_le64(lenb), size, path);
  std::string header(n, '\0');
  f.read(&header[0], n);
  SafeTensors st;
  auto entries = parse_header(header, size - 8 - n, path, st.metadata);
  // Read the tensors in file order, straight into their storage when no conversion is needed.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  std::vector<unsigned char> buf;
  for (auto& e : entries) {
    Tensor t = make_tensor(e);
    uint64_t nb = e.end - e.begin;
    if (nb) {
      f.seek((int64_t)(8 + n + e.begin));
      bool direct = (t.dtype() == DType::F32 && std::strcmp(e.dtype->name, "F32") == 0) ||
                    (t.dtype() == DType::I64 && std::strcmp(e.dtype->name, "I64") == 0);
      unsigned char* dst = direct ? (unsigned char*)t.raw() : (buf.resize(nb), buf.data());
      f.read(dst, nb);  // a short read (the file shrank meanwhile) is an error naming the file
      if (!direct) convert(*e.dtype, buf.data(), e.numel, t);
    }
    st.tensors[e.name] = t;
  }
  return st;
}

// ---------------------------------------------------------------- writing

namespace {

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"') o += "\\\"";
    else if (c == '\\') o += "\\\\";
    else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else {
      o += (char)c;
    }
  }
  return o + "\"";
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  NALA_CHECK(little_endian_host(), "safetensors: big-endian hosts are not supported");
  for (auto& nt : tensors)
    if (nt.second.defined() && nt.second.device() != Device::CPU) {  // bring device tensors to the host first
      std::vector<std::pair<std::string, Tensor>> host;
      for (auto& [n, t] : tensors) host.push_back({n, t.defined() ? t.to(Device::CPU) : t});
      return save_safetensors(path, host, metadata);
    }
  // Validate everything before touching the disk.
  std::vector<size_t> order(tensors.size());
  std::set<std::string> names;
  for (size_t k = 0; k < tensors.size(); k++) {
    const std::string& name = tensors[k].first;
    const Tensor& t = tensors[k].second;
    order[k] = k;
    NALA_CHECK(!name.empty(), "safetensors: ", path, ": tensor ", k, " has an empty name");
    NALA_CHECK(name != "__metadata__", "safetensors: ", path, ": \"__metadata__\" is not a valid tensor name");
    NALA_CHECK(valid_utf8(name), "safetensors: ", path, ": tensor name \"", name, "\" is not valid UTF-8");
    NALA_CHECK(names.insert(name).second, "safetensors: ", path, ": duplicate tensor name \"", name, "\"");
    NALA_CHECK(t.defined(), "safetensors: ", path, ": tensor \"", name, "\" is undefined");
  }
  for (auto& m : metadata)
    NALA_CHECK(valid_utf8(m.first) && valid_utf8(m.second), "safetensors: ", path, ": metadata \"", m.first,
               "\" is not valid UTF-8");
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tensors[a].first < tensors[b].first; });

  std::string h = "{";
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool first = true;
    for (auto& m : metadata) {
      if (!first) h += ",";
      first = false;
      h += json_string(m.first) + ":" + json_string(m.second);
    }
    h += "}";
  }
  uint64_t pos = 0;
  for (size_t k : order) {
    const Tensor& t = tensors[k].second;
    uint64_t nb = (uint64_t)t.numel() * dtype_size(t.dtype());
    if (h.size() > 1) h += ",";
    h += json_string(tensors[k].first) + ":{\"dtype\":\"" + file_dtype_name(t.dtype()) + "\",\"shape\":[";
    for (size_t d = 0; d < t.shape().size(); d++) h += (d ? "," : "") + std::to_string(t.shape()[d]);
    h += "],\"data_offsets\":[" + std::to_string(pos) + "," + std::to_string(pos + nb) + "]}";
    pos += nb;
  }
  h += "}";
  while ((8 + h.size()) % 8) h += ' ';

  // Refuses a target that is not a regular file (/dev/null, a FIFO, a
  // symlink) before anything is written; the temp file is removed on failure.
  AtomicWriter w(path, "safetensors file");
  unsigned char lenb[8];
  for (int k = 0; k < 8; k++) lenb[k] = (unsigned char)((uint64_t)h.size() >> (8 * k));
  w.write(lenb, 8);
  w.write(h.data(), h.size());
  for (size_t k : order) {
    Tensor c = view::contiguous(tensors[k].second);
    w.write(c.raw(), (size_t)c.numel() * dtype_size(c.dtype()));
  }
  w.commit();
}

}  // namespace nala

// tensor/error.h - errors that say where and what.
//
// NALA_CHECK(cond, msg...) throws nala::Error with file:line and the message
// built from the remaining arguments (streamed). Library code throws; the
// command-line programs catch at main() and exit non-zero. Throwing (rather
// than exit()) lets an embedding program recover and lets tests assert on it.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace nala {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void stream_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void stream_all(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  stream_all(os, rest...);
}
template <typename... Args>
[[noreturn]] void fail(const char* file, int line, const Args&... args) {
  std::ostringstream os;
  stream_all(os, args...);
  os << " (" << file << ":" << line << ")";
  throw Error(os.str());
}
}  // namespace detail

}  // namespace nala

#define NALA_FAIL(...) ::nala::detail::fail(__FILE__, __LINE__, __VA_ARGS__)
#define NALA_CHECK(cond, ...)                      \
  do {                                             \
    if (!(cond)) NALA_FAIL(__VA_ARGS__);           \
  } while (0)

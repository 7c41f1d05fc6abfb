// nn/files.cpp - checked reading and atomic, non-replacing writing (see files.h).
#include "nn/files.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "tensor/error.h"

namespace nala {

namespace {

std::string reason() { return std::strerror(errno); }

// What kind of thing a stat says it is, for errors.
const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISLNK(m)) return "a symbolic link";
  return "a special file";
}

std::string human_bytes(int64_t b) {
  char buf[64];
  if (b >= (1LL << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (double)(1LL << 30));
  else if (b >= (1LL << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", b / (double)(1LL << 20));
  else std::snprintf(buf, sizeof buf, "%lld bytes", (long long)b);
  return buf;
}

void fsync_dir(const std::string& dir) {  // makes a rename durable; failing here loses nothing
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_all(int fd, const void* p, size_t n, const std::string& path, const std::string& what) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    NALA_CHECK(w > 0, "writing ", what, " ", path, " failed: ", w < 0 ? reason() : std::string("no progress"));
    c += w, n -= (size_t)w;
  }
}

}  // namespace

std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

// ---------------------------------------------------------------- reading

InputFile::InputFile(const std::string& path, const std::string& what, int64_t max_bytes)
    : path_(path), what_(what) {
  NALA_CHECK(!path.empty(), "no ", what, " file given (empty path)");
  // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a
  // writer; O_NOCTTY: a terminal given by mistake does not become ours.
  fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  NALA_CHECK(fd_ >= 0, "cannot open ", what, " ", path, ": ", reason());
  struct stat sb;
  if (::fstat(fd_, &sb) != 0) {
    std::string r = reason();
    ::close(fd_);
    NALA_FAIL("cannot stat ", what, " ", path, ": ", r);
  }
  if (!S_ISREG(sb.st_mode)) {
    ::close(fd_);
    NALA_FAIL(what, " ", path, " is ", kind_of(sb.st_mode), ", not a regular file");
  }
  size_ = (int64_t)sb.st_size;
  if (size_ > max_bytes) {
    ::close(fd_);
    NALA_FAIL(what, " ", path, " is ", human_bytes(size_), "; the limit for this kind of file is ",
              human_bytes(max_bytes), " (refused without reading it)");
  }
  int flags = ::fcntl(fd_, F_GETFL);
  if (flags >= 0) ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void InputFile::read(void* dst, size_t n) {
  char* c = static_cast<char*>(dst);
  size_t want = n;
  while (n > 0) {
    ssize_t r = ::read(fd_, c, n);
    if (r < 0 && errno == EINTR) continue;
    NALA_CHECK(r >= 0, "reading ", what_, " ", path_, " failed: ", reason());
    NALA_CHECK(r > 0, what_, " ", path_, ": short read (", want - n, " of ", want,
               " bytes; the file ended or changed while reading)");
    c += r, n -= (size_t)r;
  }
}

void InputFile::seek(int64_t offset) {
  NALA_CHECK(::lseek(fd_, (off_t)offset, SEEK_SET) == (off_t)offset, "seek in ", what_, " ", path_, " failed: ",
             reason());
}

std::string InputFile::read_all() {
  std::string bytes((size_t)size_, '\0');
  seek(0);
  if (size_ > 0) read(&bytes[0], bytes.size());
  return bytes;
}

std::string read_file(const std::string& path, const std::string& what, int64_t max_bytes) {
  InputFile f(path, what, max_bytes);
  return f.read_all();
}

bool read_system_file(const std::string& path, std::string* text, int64_t max_bytes) {
  text->clear();
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat sb;
  bool ok = ::fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode);
  char buf[4096];
  while (ok) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      ok = r == 0;
      break;
    }
    text->append(buf, (size_t)r);
    ok = (int64_t)text->size() <= max_bytes;
  }
  ::close(fd);
  if (!ok) text->clear();
  return ok;
}

// ---------------------------------------------------------------- writing

void check_output_path(const std::string& path, const std::string& what) {
  NALA_CHECK(!path.empty(), "no ", what, " path given (empty path)");
  NALA_CHECK(path.back() != '/', what, " path ", path, " names a folder, not a file");
  struct stat sb;
  if (::lstat(path.c_str(), &sb) == 0) {
    NALA_CHECK(S_ISREG(sb.st_mode), "refusing to write ", what, " to ", path, ": it is ", kind_of(sb.st_mode),
               ", and nala replaces only regular files");
  } else {
    NALA_CHECK(errno == ENOENT, "cannot write ", what, " to ", path, ": ", reason());
  }
  const std::string dir = parent_dir(path);
  struct stat db;
  NALA_CHECK(::stat(dir.c_str(), &db) == 0, "cannot create ", what, " ", path, ": folder ", dir, ": ", reason());
  NALA_CHECK(S_ISDIR(db.st_mode), "cannot create ", what, " ", path, ": ", dir, " is not a folder");
}

namespace {

// "<path>.tmp.<pid>"; when that name would be longer than a file name may
// be, the target's name is shortened (at a UTF-8 boundary) before ".tmp.".
std::string temp_name(const std::string& path) {
  const std::string suffix = ".tmp." + std::to_string((long)::getpid());
  const size_t slash = path.find_last_of('/');
  const size_t base = slash == std::string::npos ? 0 : slash + 1;
  size_t keep = path.size() - base;
  if (keep + suffix.size() > NAME_MAX) {
    keep = NAME_MAX - suffix.size();
    while (keep > 0 && ((unsigned char)path[base + keep] & 0xC0) == 0x80) keep--;
  }
  return path.substr(0, base + keep) + suffix;
}

}  // namespace

AtomicWriter::AtomicWriter(const std::string& path, const std::string& what) : path_(path), what_(what) {
  check_output_path(path, what);
  tmp_ = temp_name(path);
  // O_EXCL | O_NOFOLLOW: never write through something already at the temp name.
  const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  fd_ = ::open(tmp_.c_str(), flags, 0644);
  if (fd_ < 0 && errno == EEXIST) {
    // The name holds this process's id, so a regular file there was left by
    // an earlier nala with the same id that died while saving (a restarted
    // container runs as the same pid each time): it is removed and the name
    // taken. Anything else there (a symlink, a FIFO) is refused.
    struct stat sb;
    if (::lstat(tmp_.c_str(), &sb) == 0 && S_ISREG(sb.st_mode) && ::unlink(tmp_.c_str()) == 0)
      fd_ = ::open(tmp_.c_str(), flags, 0644);
    else
      errno = EEXIST;
  }
  NALA_CHECK(fd_ >= 0, "cannot create ", tmp_, " (writing ", what, " ", path, "): ", reason());
  // A replaced file keeps its permission bits (a private 0600 file stays private).
  struct stat sb;
  if (::lstat(path.c_str(), &sb) == 0 && S_ISREG(sb.st_mode)) ::fchmod(fd_, sb.st_mode & 07777);
}

AtomicWriter::~AtomicWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!done_) ::unlink(tmp_.c_str());
}

void AtomicWriter::write(const void* p, size_t n) { write_all(fd_, p, n, tmp_, what_); }

void AtomicWriter::commit() {
  NALA_CHECK(!done_, "AtomicWriter: ", path_, " committed twice");
  NALA_CHECK(::fsync(fd_) == 0, "fsync of ", tmp_, " (writing ", what_, " ", path_, ") failed: ", reason());
  int fd = fd_;
  fd_ = -1;
  NALA_CHECK(::close(fd) == 0, "closing ", tmp_, " (writing ", what_, " ", path_, ") failed: ", reason());
  // The target may have appeared, or changed kind, while we wrote: check again
  // right before the rename.
  check_output_path(path_, what_);
  NALA_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, "cannot rename ", tmp_, " to ", path_, ": ", reason());
  done_ = true;
  fsync_dir(parent_dir(path_));
}

void write_file_atomic(const std::string& path, const std::string& bytes, const std::string& what) {
  AtomicWriter w(path, what);
  w.write(bytes.data(), bytes.size());
  w.commit();
}

void append_file(const std::string& path, const std::string& text, const std::string& what) {
  check_output_path(path, what);
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
  NALA_CHECK(fd >= 0, "cannot open ", what, " ", path, " for appending: ", reason());
  struct stat sb;
  if (::fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    ::close(fd);
    NALA_FAIL("refusing to append ", what, " to ", path, ": not a regular file");
  }
  try {
    write_all(fd, text.data(), text.size(), path, what);
  } catch (...) {
    ::close(fd);
    throw;
  }
  bool ok = ::fsync(fd) == 0;
  std::string r = ok ? "" : reason();
  ::close(fd);
  NALA_CHECK(ok, "fsync of ", what, " ", path, " failed: ", r);
}

// ---------------------------------------------------------------- folders

void make_dirs(const std::string& dir, const std::string& what) {
  NALA_CHECK(!dir.empty(), "no ", what, " folder given (empty path)");
  std::string cur;
  size_t pos = 0;
  while (pos <= dir.size()) {
    size_t next = dir.find('/', pos);
    if (next == std::string::npos) next = dir.size();
    cur = dir.substr(0, next);
    pos = next + 1;
    if (cur.empty() || cur == "." || cur == "..") continue;
    if (::mkdir(cur.c_str(), 0755) == 0) continue;
    const int err = errno;
    struct stat sb;
    if (err == EEXIST && ::stat(cur.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode)) continue;
    if (err == EEXIST) NALA_FAIL("cannot create ", what, " folder ", dir, ": ", cur, " exists and is not a folder");
    NALA_FAIL("cannot create ", what, " folder ", dir, " (at ", cur, "): ", std::strerror(err));
  }
}

void check_output_dir(const std::string& dir, const std::string& what) {
  make_dirs(dir, what);
  // A probe name nobody else uses: a leftover of a killed process with the
  // same id (EEXIST) is stepped over, never removed.
  for (int k = 0;; k++) {
    const std::string probe =
        dir + "/.nala-write-test." + std::to_string((long)::getpid()) + (k ? "." + std::to_string(k) : "");
    int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST && k < 100) continue;
    NALA_CHECK(fd >= 0, "cannot write ", what, " into ", dir, ": ", reason());
    ::close(fd);
    ::unlink(probe.c_str());
    return;
  }
}

}  // namespace nala

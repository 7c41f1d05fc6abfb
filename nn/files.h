// nn/files.h - the one place where nala checks the files it reads and the
// paths it writes. Every file the library and the nala program open goes
// through here, so the rules below hold everywhere:
//
// Reading (InputFile, read_file): the path is opened without blocking
// (O_NONBLOCK: a FIFO or a device does not hang the open), the open
// descriptor is checked with fstat (no gap between the check and the use),
// and anything that is not a regular file is refused (directory, FIFO,
// device, socket), as is a file larger than the caller's limit, before a
// byte is read.
//
// Writing (AtomicWriter, write_file_atomic, append_file): an existing target
// must be a regular file; a symlink, FIFO, device or directory at the path is
// refused and nothing is replaced (as root, `--output /dev/null` must not
// turn /dev/null into a regular file). New bytes go to "<path>.tmp.<pid>",
// created exclusively and never through a link (a regular file left at that
// name by a dead process with the same id is removed first; anything else
// there is refused). They are flushed and fsync'ed, the target is checked
// again, and the temporary file is renamed over it, keeping an existing
// target's permission bits; the directory is fsync'ed after. A failure at
// any point removes the temporary file and leaves the target as it was.
//
// Folders: make_dirs is `mkdir -p` without a shell; check_output_dir also
// proves that a file can be created there (a read-only file system or a
// missing permission is found before any work starts).
//
// Kernel pseudo-files (/proc, /sys, cgroup limits) report a size of 0 or 4096
// whatever they hold, so the size rule cannot apply to them: read_system_file
// reads one up to its end with a small cap, after the same regular-file check.
//
// Every error names the path, what the file was for, and errno's reason.
// Part of the core library (C++ standard library and POSIX only).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace nala {

constexpr int64_t kNoSizeLimit = INT64_MAX;

// A checked, open regular file for reading. `what` says what it is for
// ("weights", "image", "checkpoint") and appears in errors.
class InputFile {
 public:
  InputFile(const std::string& path, const std::string& what, int64_t max_bytes = kNoSizeLimit);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  int64_t size() const { return size_; }  // as fstat saw it when opened
  const std::string& path() const { return path_; }
  // The checked descriptor, still owned by this object (for a library that
  // reads from a descriptor, e.g. zlib's gzdopen on a dup() of it).
  int fd() const { return fd_; }
  // Reads exactly n bytes at the current position, or throws naming the file.
  void read(void* dst, size_t n);
  void seek(int64_t offset);  // from the start
  std::string read_all();     // the whole file (from the start)

 private:
  std::string path_, what_;
  int fd_ = -1;
  int64_t size_ = 0;
};

// The whole of a checked regular file.
std::string read_file(const std::string& path, const std::string& what, int64_t max_bytes = kNoSizeLimit);

// A kernel pseudo-file (/proc, /sys, a cgroup limit): the text up to its end,
// at most max_bytes. False when it is absent, not a regular file, unreadable or
// longer than max_bytes: these files are optional information, never input.
bool read_system_file(const std::string& path, std::string* text, int64_t max_bytes = 1 << 16);

// Throws unless `path` may be written: absent, or an existing regular file
// (not a symlink, FIFO, device or directory), in an existing directory.
void check_output_path(const std::string& path, const std::string& what);

// Writes a file atomically under the rules above:
//   AtomicWriter w(path, "weights"); w.write(p, n); ...; w.commit();
// Without commit() (an exception, an early return) the target is untouched.
class AtomicWriter {
 public:
  AtomicWriter(const std::string& path, const std::string& what);
  ~AtomicWriter();
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;
  void write(const void* p, size_t n);
  void commit();
  const std::string& temp_path() const { return tmp_; }

 private:
  std::string path_, what_, tmp_;
  int fd_ = -1;
  bool done_ = false;
};

void write_file_atomic(const std::string& path, const std::string& bytes, const std::string& what);

// Appends text to a regular file (created when absent), checks the write and
// fsyncs it. Same target rule as above.
void append_file(const std::string& path, const std::string& text, const std::string& what);

// mkdir -p without a shell. Each missing component is created with mode 0755;
// an existing component that is not a directory is an error naming it.
void make_dirs(const std::string& dir, const std::string& what);

// make_dirs, then creates and removes a probe file in `dir`: throws before
// any work when the folder cannot hold nala's outputs.
void check_output_dir(const std::string& dir, const std::string& what);

// True when both paths exist and name the same file (after symlinks; a hard
// link counts): an output that would replace one of the inputs.
bool same_file(const std::string& a, const std::string& b);

// The folder part of a path ("." for a bare name).
std::string parent_dir(const std::string& path);

}  // namespace nala

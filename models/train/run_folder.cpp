// models/train/run_folder.cpp - see run_folder.h.
#include "models/train/run_folder.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "nn/files.h"
#include "tensor/error.h"

namespace nala {

namespace {

bool exists_lstat(const std::string& path, struct stat* sb) { return ::lstat(path.c_str(), sb) == 0; }

std::string join_names(const std::vector<std::string>& v) {
  std::string r;
  for (auto& s : v) r += (r.empty() ? "" : ", ") + s;
  return r;
}

// The pid written in a lock file, or "" when it cannot be read.
std::string lock_holder(int fd) {
  char buf[32] = {0};
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return "";
  std::string s(buf, (size_t)n);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.find_first_not_of("0123456789") == std::string::npos ? s : "";
}

// The folders of `dir` (itself and those above it) that do not exist yet,
// outermost first.
std::vector<std::string> missing_folders(const std::string& dir) {
  std::vector<std::string> missing;
  struct stat sb;
  for (size_t pos = 0; pos <= dir.size(); pos++) {
    if (pos < dir.size() && dir[pos] != '/') continue;
    const std::string cur = dir.substr(0, pos);
    if (!cur.empty() && cur != "." && cur != ".." && !exists_lstat(cur, &sb)) missing.push_back(cur);
  }
  return missing;
}

}  // namespace

std::string make_new_run_folder(const std::string& parent, const std::string& stem,
                                std::vector<std::string>* made) {
  for (auto& m : missing_folders(parent)) made->push_back(m);
  make_dirs(parent, "training output");
  char stamp[32];
  std::time_t now = std::time(nullptr);
  struct tm tm_now;
  localtime_r(&now, &tm_now);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm_now);
  const std::string base = parent + "/" + stem + "-" + stamp;
  for (int n = 1; n <= 1000; n++) {
    const std::string dir = n == 1 ? base : base + "-" + std::to_string(n);
    if (::mkdir(dir.c_str(), 0755) == 0) {  // ours alone: mkdir is atomic
      made->push_back(dir);
      return dir;
    }
    NALA_CHECK(errno == EEXIST, "cannot create the training output folder ", dir, ": ", std::strerror(errno));
  }
  NALA_FAIL("cannot find a free name for the training output folder: ", base, " to ", base, "-1000 all exist");
}

std::vector<std::string> run_files_in(const std::string& dir) {
  std::vector<std::string> found;
  struct stat sb;
  for (const char* f : {kCheckpointFile, kBestFile, kBestValFile, kMetricsFile})
    if (exists_lstat(dir + "/" + f, &sb)) found.push_back(f);
  return found;
}

RunFolder::RunFolder(const std::string& dir, Mode mode, const std::vector<std::string>& made)
    : dir_(dir), lock_path_(dir + "/" + kLockFile), mode_(mode), made_(made) {
  struct stat sb;
  if (mode == RESUME) {  // continue a run: the folder and its checkpoint must be there
    NALA_CHECK(::stat(dir.c_str(), &sb) == 0, "--resume ", dir, ": ", std::strerror(errno));
    NALA_CHECK(S_ISDIR(sb.st_mode), "--resume ", dir, ": not a folder");
    NALA_CHECK(exists_lstat(dir + "/" + kCheckpointFile, &sb), "--resume ", dir, ": the folder holds no ",
               kCheckpointFile, ", so there is no run to continue");
  }
  for (auto& m : missing_folders(dir)) made_.push_back(m);
  // Makes the folder when absent and proves a file can be created in it
  // (an existing regular file, a read-only file system, a missing permission).
  try {
    check_output_dir(dir, "training output");
    lock_and_check();
  } catch (...) {
    release();
    throw;
  }
}

void RunFolder::lock_and_check() {
  const std::string& dir = dir_;

  // The lock. The file's inode is checked against the path after flock: a
  // run that was ending may have unlinked the file we opened (see ~RunFolder).
  for (int attempt = 0; attempt < 20 && lock_fd_ < 0; attempt++) {
    int fd = ::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
    NALA_CHECK(fd >= 0, "cannot open the lock file ", lock_path_, ": ", std::strerror(errno));
    struct stat fs_open, fs_path;
    if (::fstat(fd, &fs_open) != 0 || !S_ISREG(fs_open.st_mode)) {
      ::close(fd);
      NALA_FAIL("the lock file ", lock_path_, " is not a regular file");
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      const std::string pid = lock_holder(fd);
      ::close(fd);
      NALA_CHECK(err != EWOULDBLOCK, dir, " is being written by another nala train",
                 pid.empty() ? std::string() : " (pid " + pid + ")", ", which holds ", lock_path_,
                 "; wait for it to end, or train into another folder");
      NALA_FAIL("cannot lock ", lock_path_, ": ", std::strerror(err));
    }
    if (::stat(lock_path_.c_str(), &fs_path) != 0 || fs_path.st_ino != fs_open.st_ino ||
        fs_path.st_dev != fs_open.st_dev) {
      ::close(fd);  // we locked a file that was just removed: try again
      continue;
    }
    lock_fd_ = fd;
  }
  NALA_CHECK(lock_fd_ >= 0, "cannot lock ", lock_path_, ": the file keeps being replaced");
  const std::string pid = std::to_string((long)::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) != (ssize_t)pid.size())
    warning_ = "cannot write the pid into " + lock_path_ + ": " + std::strerror(errno);

  if (mode_ == NEW) {
    const std::vector<std::string> earlier = run_files_in(dir);
    if (!earlier.empty())
      NALA_FAIL(dir, " holds an earlier run (", join_names(earlier), "), and nala never replaces a run: leave out ",
                "--out for a new folder, continue that run with --resume ", dir, ", or replace it with --overwrite");
  }
}

std::vector<std::string> RunFolder::remove_earlier_run() {
  if (mode_ != OVERWRITE) return {};
  const std::vector<std::string> earlier = run_files_in(dir_);
  struct stat sb;
  for (auto& f : earlier) {  // all checked before any is removed
    const std::string p = dir_ + "/" + f;
    NALA_CHECK(exists_lstat(p, &sb) && S_ISREG(sb.st_mode), "--overwrite: ", p,
               " is not a regular file; nala removes only the files of an earlier run");
  }
  for (auto& f : earlier) {
    const std::string p = dir_ + "/" + f;
    NALA_CHECK(::unlink(p.c_str()) == 0, "--overwrite: cannot remove ", p, ": ", std::strerror(errno));
  }
  return earlier;
}

RunFolder::~RunFolder() { release(); }

void RunFolder::release() {
  if (lock_fd_ >= 0) {
    // Unlinked while still held: a process that opened the old file before
    // this sees, after its flock, that the path names another inode (above).
    ::unlink(lock_path_.c_str());
    ::close(lock_fd_);
    lock_fd_ = -1;
  }
  if (finished_) return;
  for (size_t i = made_.size(); i-- > 0;) ::rmdir(made_[i].c_str());  // fails, harmlessly, unless empty
  made_.clear();
}

// ---------------------------------------------------------------- what the folder holds

std::vector<std::string> remove_stale_temp_files(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> removed;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    size_t at = name.rfind(".tmp.");
    if (at == std::string::npos || at + 5 >= name.size()) continue;
    std::string pid = name.substr(at + 5);
    if (pid.find_first_not_of("0123456789") != std::string::npos || pid.size() > 9) continue;
    if (::kill((pid_t)std::stol(pid), 0) == 0 || errno != ESRCH) continue;  // still running (or not ours to judge)
    if (fs::remove(e.path(), ec)) removed.push_back(e.path().string());
  }
  return removed;
}

}  // namespace nala

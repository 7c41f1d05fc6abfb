// models/train/run_folder.h - the output folder of a training run (`nala
// train`) and its rule:
//
//   * Without --out, every run gets a new folder, runs/<model>-<data>-
//     <YYYYmmdd-HHMMSS>, with "-2", "-3", ... when that name is taken. The
//     folder is made with one mkdir (atomic), so two runs never share it.
//   * An explicit --out that holds a run (checkpoint.safetensors,
//     best.safetensors, best_val.safetensors or metrics.csv) is refused, and nothing in it is
//     touched, unless --resume continues that run or --overwrite replaces it
//     (the earlier run's files are removed when the new run starts).
//   * The folder is checked before any work (a file can be created in it) and
//     locked for the whole run: flock(2) on ".nala-train.lock", which holds
//     the writer's pid. A second `nala train` into the same folder is refused
//     while the first runs; the kernel drops the lock when the process ends,
//     even by SIGKILL, so a killed run never leaves the folder locked.
//   * A run that fails before writing anything removes the folders it made.
// Data-parallel runs: rank 0 alone opens (and writes) the folder.
// Nothing here prints: what was removed is returned, for the caller to say.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nala {

constexpr const char* kCheckpointFile = "checkpoint.safetensors";
constexpr const char* kBestFile = "best.safetensors";
constexpr const char* kMetricsFile = "metrics.csv";
constexpr const char* kBestValFile = "best_val.safetensors";  // with a validation set (--val)
constexpr const char* kLockFile = ".nala-train.lock";

// Makes (and so reserves) a new folder <parent>/<stem>-<YYYYmmdd-HHMMSS>[-N]
// and returns its path; appends the folders it made to *made.
std::string make_new_run_folder(const std::string& parent, const std::string& stem,
                                std::vector<std::string>* made);

// The run files (checkpoint, best weights, metrics) present in `dir`.
std::vector<std::string> run_files_in(const std::string& dir);

// Temporary files ("<name>.tmp.<pid>", nn/files.h) left in `dir` by a save
// that was killed: removed once that process is gone. Returns their paths.
std::vector<std::string> remove_stale_temp_files(const std::string& dir);

class RunFolder {
 public:
  enum Mode { NEW, OVERWRITE, RESUME };
  // Applies the rule above to `dir` and takes its lock; throws (leaving
  // everything in `dir` as it was) when the run may not write there.
  // `made`: the folders this process already made for the run
  // (make_new_run_folder); those of `dir` made here are added.
  RunFolder(const std::string& dir, Mode mode, const std::vector<std::string>& made = {});
  ~RunFolder();  // unlocks; after a failure (no finish()), removes the folders it made that are empty
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

  // --overwrite: removes the earlier run's files and returns their names.
  // Called once the new run is ready to write, so that a run refused on its
  // data keeps the old one.
  std::vector<std::string> remove_earlier_run();
  void finish() { finished_ = true; }  // the run ended without an error
  const std::string& dir() const { return dir_; }
  // Why the pid could not be written into the lock file ("" when it was):
  // harmless, worth a warning.
  const std::string& warning() const { return warning_; }

 private:
  void lock_and_check();
  void release();
  std::string dir_, lock_path_, warning_;
  Mode mode_;
  std::vector<std::string> made_;
  bool finished_ = false;
  int lock_fd_ = -1;
};

}  // namespace nala

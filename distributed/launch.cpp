// distributed/launch.cpp - one process per GPU of this machine, without MPI (`nala
// train --gpus N`, bench_scaling --gpus N). The processes are this program
// run again with the given arguments and NALA_RANK, NALA_WORLD_SIZE, NALA_LOCAL_RANK and
// NALA_RENDEZVOUS (a fresh directory where rank 0 publishes NCCL's id) in
// their environment. When one process fails, the others get SIGTERM (SIGKILL 10 s later); the
// exit code is the first failure's.
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "distributed/distributed.h"

namespace nala {

int launch_local_group(int n, const std::vector<std::string>& args_in) {
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  NALA_CHECK(len > 0, "launch: cannot find this program's path (/proc/self/exe): ", std::strerror(errno));
  NALA_CHECK(len < (ssize_t)sizeof self - 1, "launch: this program's path is longer than ", sizeof self - 2,
             " bytes");
  self[len] = '\0';
  char dir[] = "/tmp/nala_rendezvous_XXXXXX";
  NALA_CHECK(mkdtemp(dir), "launch: cannot create a rendezvous directory in /tmp: ", std::strerror(errno));
  std::vector<std::string> words = args_in;
  std::vector<char*> args;
  for (auto& w : words) args.push_back(&w[0]);
  args.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);

  std::vector<pid_t> pids;
  for (int r = 0; r < n; r++) {
    // SIGTERM is blocked across fork: until execv the child is a copy of this
    // process with its signal handlers, so it first returns SIGTERM to the
    // default action; a SIGTERM sent meanwhile is delivered after that.
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, &old);
    const pid_t pid = fork();
    if (pid != 0) pthread_sigmask(SIG_SETMASK, &old, nullptr);
    NALA_CHECK(pid >= 0, "launch: fork failed for rank ", r, ": ", std::strerror(errno));
    if (pid == 0) {
      signal(SIGTERM, SIG_DFL);
      sigprocmask(SIG_SETMASK, &old, nullptr);
      const std::string rs = std::to_string(r), ns = std::to_string(n);
      setenv("NALA_RANK", rs.c_str(), 1);
      setenv("NALA_LOCAL_RANK", rs.c_str(), 1);
      setenv("NALA_WORLD_SIZE", ns.c_str(), 1);
      setenv("NALA_RENDEZVOUS", dir, 1);
      execv(self, args.data());
      std::fprintf(stderr, "nala: cannot start rank %d (%s): %s\n", r, self, std::strerror(errno));
      std::_Exit(127);
    }
    pids.push_back(pid);
  }
  // Wait for every rank. After the first failure the others get SIGTERM, and
  // SIGKILL after a grace period: a rank may be stuck (in a collective, or in
  // a signal handler that cannot finish) and must not hold the launch forever.
  const auto grace = std::chrono::seconds(10);
  std::chrono::steady_clock::time_point kill_at{};
  bool terminating = false, killed = false;
  int result = 0, running = n;
  while (running > 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, terminating ? WNOHANG : 0);
    if (pid < 0) break;
    if (pid == 0) {  // terminating: nothing ended yet
      if (!killed && std::chrono::steady_clock::now() >= kill_at) {
        for (pid_t p : pids)
          if (p > 0) kill(p, SIGKILL);
        killed = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    int rank = -1;
    for (int r = 0; r < n; r++)
      if (pids[r] == pid) rank = r, pids[r] = 0;
    if (rank < 0) continue;
    running--;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0 && result == 0) {
      result = code;
      std::fprintf(stderr, "nala: rank %d %s %d; stopping the other ranks\n", rank,
                   WIFEXITED(status) ? "exited with" : "was killed by signal", WIFEXITED(status) ? code : WTERMSIG(status));
      for (pid_t p : pids)
        if (p > 0) kill(p, SIGTERM);
      terminating = true;
      kill_at = std::chrono::steady_clock::now() + grace;
    }
  }
  std::remove((std::string(dir) + "/nccl_id").c_str());
  rmdir(dir);
  return result;
}

}  // namespace nala

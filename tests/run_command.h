// tests/run_command.h - running a nala subcommand (cmd_train, cmd_eval, ...)
// inside the test process, the way tools/main.cpp runs it: stdout and stderr
// go to a temporary file, a UsageError is exit code 2, any other exception 1,
// and the output ends with the message main() would print.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch2/catch.hpp"
#include "tools/cli.h"

namespace nala {
namespace test {

struct CmdResult {
  int code = 0;
  std::string out;  // stdout and stderr, then the error message main() would print
};

inline CmdResult run_cmd(int (*cmd)(int, char**), std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(&a[0]);
  argv.push_back(nullptr);
  char tmpl[] = "/tmp/nala_cmd_out_XXXXXX";
  int fd = mkstemp(tmpl);
  REQUIRE(fd >= 0);
  std::fflush(stdout), std::fflush(stderr);
  int saved_out = dup(1), saved_err = dup(2);
  dup2(fd, 1), dup2(fd, 2);
  CmdResult r;
  std::string error;
  try {
    r.code = cmd((int)args.size(), argv.data());
  } catch (const UsageError& e) {
    r.code = 2, error = e.what();
  } catch (const std::exception& e) {
    r.code = 1, error = e.what();
  }
  std::fflush(stdout), std::fflush(stderr);
  dup2(saved_out, 1), dup2(saved_err, 2);
  close(saved_out), close(saved_err), close(fd);
  std::ifstream f(tmpl, std::ios::binary);
  r.out = std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>()) + error;
  std::remove(tmpl);
  return r;
}

}  // namespace test
}  // namespace nala

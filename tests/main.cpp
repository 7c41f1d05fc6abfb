// tests/main.cpp - the Catch2 test runner. Tags: [cuda] needs a GPU (make
// test-cuda), [slow] is left out of make test.
//
// `nala_tests --launched-child` is one rank of the launcher test
// (tests/test_distributed.cpp), started by launch_local_group: it runs outside
// Catch, whose signal handlers would report the SIGTERM that stops it as a
// test failure, so it ends quietly whenever the signal comes.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstring>

namespace nala {
namespace test {
int launched_child_main();
}
}  // namespace nala

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--launched-child") == 0) return nala::test::launched_child_main();
  return Catch::Session().run(argc, argv);
}

// tests/main.cpp - the Catch2 test runner. Tags: [cuda] needs a GPU (make
// test-cuda), [slow] is left out of make test.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

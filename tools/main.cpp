// tools/main.cpp - the nala command line. Subcommands arrive with the model
// and training code; for now it reports what this build contains.
#include <cstdio>
#include <cstring>

#include "autograd/op_table.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "ops") == 0) {
    for (int i = 0; i < nala::op_count(); i++) std::printf("%s\n", nala::op_name((nala::OpId)i));
    return 0;
  }
  std::fprintf(stderr, "usage: nala ops\n");
  return 2;
}

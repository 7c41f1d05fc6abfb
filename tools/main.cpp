// tools/main.cpp - the nala command line: train, eval, predict, info,
// forward, grad, sample, plot, analyze. Usage errors exit with 2 before any work
// starts; other errors print "nala: error: ..." and exit with 1.
#include <cstdio>
#include <cstring>
#include <string>

#include "autograd/op_table.h"
#include "tools/common.h"

namespace {
const char* kUsage =
    "usage: nala COMMAND [options]   (nala COMMAND --help for its options)\n"
    "  train     train NaLaFormer on a dataset\n"
    "  eval      top-1, top-5, per-class accuracy and the confusion matrix of weights\n"
    "  predict   the top-5 classes of image files\n"
    "  info      every layer's output shape, parameters and FLOPs\n"
    "  forward   eval-mode logits of an input file (safetensors)\n"
    "  grad      train-mode loss and parameter gradients of an input file\n"
    "  sample    write dataset images as PNG files\n"
    "  plot      a training run's loss, accuracy and learning-rate curves as SVG files\n"
    "  analyze   query norm against attention entropy per layer (CSV, scatter plots, correlations)\n"
    "  ops       list the differentiable ops\n";
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string cmd = argv[1];
  using Fn = int (*)(int, char**);
  struct { const char* name; Fn fn; } table[] = {
      {"train", nala::cmd_train},     {"eval", nala::cmd_eval},       {"predict", nala::cmd_predict},
      {"info", nala::cmd_info},       {"forward", nala::cmd_forward}, {"grad", nala::cmd_grad},
      {"sample", nala::cmd_sample},   {"plot", nala::cmd_plot},
      {"analyze", nala::cmd_analyze},
  };
  if (cmd == "ops") {
    for (int i = 0; i < nala::op_count(); i++) std::printf("%s\n", nala::op_name((nala::OpId)i));
    return 0;
  }
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  for (auto& c : table) {
    if (cmd != c.name) continue;
    try {
      return c.fn(argc - 2, argv + 2);
    } catch (const nala::UsageError& e) {
      if (!*e.what()) {  // --help
        std::fputs(nala::ArgParser::last_usage().c_str(), stdout);
        return 0;
      }
      std::fprintf(stderr, "nala %s: %s\n\n%s", c.name, e.what(), nala::ArgParser::last_usage().c_str());
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "nala: error: %s\n", e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "nala: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}

// tools/cli.h - a small command-line parser for the nala subcommands.
//
// Options are declared with a destination, a help line and (for numbers) an
// allowed range; parse() fills them or throws UsageError, which main() turns
// into the usage text and exit code 2 before any work starts. Accepted forms:
// "--name value", "--name=value", boolean "--flag", positional arguments.
// A value that starts with "--" is taken only in the "--name=value" form:
// "--out --hflip" is a usage error, not an output folder named "--hflip".
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace nala {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An option's comma-separated list ("0,1", "a,b,c"), item by item; empty
// items are kept ("a,,b" is three), so a caller can refuse them by name.
std::vector<std::string> split_list(const std::string& s);

class ArgParser {
 public:
  ArgParser(std::string command, std::string summary);
  void add_int(const std::string& name, int64_t* dst, const std::string& help, int64_t lo, int64_t hi);
  void add_float(const std::string& name, float* dst, const std::string& help, double lo, double hi);
  void add_string(const std::string& name, std::string* dst, const std::string& help);
  void add_choice(const std::string& name, std::string* dst, const std::string& help,
                  const std::vector<std::string>& choices);
  void add_flag(const std::string& name, bool* dst, const std::string& help);
  // Positional arguments; at least `min_count` are required.
  void add_positional(std::vector<std::string>* dst, const std::string& metavar, size_t min_count);
  void parse(int argc, char** argv);  // argv[0] is the first argument after the subcommand
  bool given(const std::string& name) const;  // was --name on the command line?
  std::string usage() const;

  enum Kind { INT, FLOAT, STRING, CHOICE, FLAG };
  struct Opt {
    std::string name, help;
    Kind kind = FLAG;
    void* dst = nullptr;
    double lo = 0, hi = 0;
    std::vector<std::string> choices;
    bool given = false;
  };
  // The usage text of the parser that parsed last (for main's error path).
  static const std::string& last_usage();

 private:
  Opt* find(const std::string& name);
  void set(Opt& o, const std::string& value);
  std::string command_, summary_, metavar_;
  std::vector<Opt> opts_;
  std::vector<std::string>* positional_ = nullptr;
  size_t min_positional_ = 0;
};

}  // namespace nala
